package watch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/utils/clock"
)

func expectSignal(t *testing.T, w *Watcher, what string) {
	t.Helper()
	select {
	case <-w.C:
	case <-time.After(5 * time.Second):
		t.Fatalf("no signal after %s (watching %v)", what, w.Watched())
	}
}

func expectQuiet(t *testing.T, w *Watcher) {
	t.Helper()
	select {
	case <-w.C:
		t.Fatal("unexpected signal")
	case <-time.After(150 * time.Millisecond):
	}
}

func TestWatcher(t *testing.T) {
	root := t.TempDir()
	pki := filepath.Join(root, "etc/kubernetes/pki")
	kubelet := filepath.Join(root, "var/lib/kubelet/pki")
	os.MkdirAll(pki, 0o755)
	w, err := New(clock.RealClock{}, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Set([]string{pki, kubelet}) // the kubelet directory does not exist yet
	expectQuiet(t, w)

	// A file replaced by rename (a new inode).
	os.WriteFile(filepath.Join(pki, ".apiserver.crt.tmp"), []byte("new"), 0o644)
	os.Rename(filepath.Join(pki, ".apiserver.crt.tmp"), filepath.Join(pki, "apiserver.crt"))
	expectSignal(t, w, "rename over a file")

	// A burst is one signal.
	for i := 0; i < 20; i++ {
		os.WriteFile(filepath.Join(pki, "burst.crt"), []byte{byte(i)}, 0o644)
	}
	expectSignal(t, w, "a burst of writes")
	expectQuiet(t, w)

	// A directory created late, then a symlink swap inside it.
	os.MkdirAll(kubelet, 0o755)
	expectSignal(t, w, "the kubelet directory appearing")
	waitWatched(t, w, kubelet)
	os.WriteFile(filepath.Join(kubelet, "kubelet-client-1.pem"), []byte("1"), 0o600)
	os.Symlink(filepath.Join(kubelet, "kubelet-client-1.pem"), filepath.Join(kubelet, "kubelet-client-current.pem"))
	expectSignal(t, w, "a file in the late directory")
	os.WriteFile(filepath.Join(kubelet, "kubelet-client-2.pem"), []byte("2"), 0o600)
	os.Symlink(filepath.Join(kubelet, "kubelet-client-2.pem"), filepath.Join(kubelet, "kubelet-client-updated.pem"))
	time.Sleep(50 * time.Millisecond)
	<-drain(w)
	os.Rename(filepath.Join(kubelet, "kubelet-client-updated.pem"), filepath.Join(kubelet, "kubelet-client-current.pem"))
	expectSignal(t, w, "the kubelet's symlink swap")

	// The PKI directory deleted and re-created.
	os.RemoveAll(pki)
	expectSignal(t, w, "the PKI directory removed")
	os.MkdirAll(pki, 0o755)
	expectSignal(t, w, "the PKI directory re-created")
	waitWatched(t, w, pki)
	time.Sleep(50 * time.Millisecond)
	<-drain(w)
	os.WriteFile(filepath.Join(pki, "ca.crt"), []byte("x"), 0o644)
	expectSignal(t, w, "a file in the re-created directory")
	if len(w.Errors()) != 0 {
		t.Errorf("watch errors: %v", w.Errors())
	}
}

// drain empties a pending signal and returns a closed channel.
func drain(w *Watcher) <-chan struct{} {
	select {
	case <-w.C:
	default:
	}
	c := make(chan struct{})
	close(c)
	return c
}

// waitWatched waits until dir has a watch of its own. (Files created
// before that are covered by the signal of the directory's creation.)
func waitWatched(t *testing.T, w *Watcher, dir string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		for _, d := range w.Watched() {
			if d == dir {
				return
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("%s never watched: %v", dir, w.Watched())
}
