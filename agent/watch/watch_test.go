package watch

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

const debounce = time.Second

// harness drives a Watcher with a fake clock. The debounce timer fires only
// when the test steps the clock, and the test knows every earlier event has
// been handled once the loop reports a sentinel file it created: inotify
// delivers the events of one watcher in order. Nothing waits for a quiet
// period, so the outcome does not depend on how fast the machine is.
type harness struct {
	t        *testing.T
	w        *Watcher
	clk      *clocktesting.FakeClock
	sentinel string // a directory that is always watched

	mu   sync.Mutex
	seen map[string]bool
	kick chan struct{}
	n    int
}

func newHarness(t *testing.T, root string) *harness {
	h := &harness{t: t, clk: clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		sentinel: filepath.Join(root, "sentinel"), seen: map[string]bool{}, kick: make(chan struct{}, 1)}
	if err := os.MkdirAll(h.sentinel, 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := newWatcher(h.clk, debounce, func(ev fsnotify.Event) {
		h.mu.Lock()
		h.seen[ev.Name] = true
		h.mu.Unlock()
		select {
		case h.kick <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	h.w = w
	return h
}

// set watches dirs plus the sentinel directory.
func (h *harness) set(dirs ...string) { h.w.Set(append(dirs, h.sentinel)) }

// settle returns once the loop has handled every event caused before it.
func (h *harness) settle() {
	h.t.Helper()
	h.n++
	name := filepath.Join(h.sentinel, fmt.Sprintf("s%d", h.n))
	// A symlink's creation is one event (a written file is several, and a
	// late one would arm the timer again).
	if err := os.Symlink("nowhere", name); err != nil {
		h.t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		h.mu.Lock()
		ok := h.seen[name]
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-h.kick:
		case <-deadline:
			h.t.Fatalf("the watcher never reported %s (watching %v)", name, h.w.Watched())
		}
	}
}

// expectOne settles, lets the debounce period pass and expects exactly one
// signal for everything since the last check.
func (h *harness) expectOne(what string) {
	h.t.Helper()
	h.settle()
	if !h.clk.HasWaiters() {
		h.t.Fatalf("%s: no debounce timer armed", what)
	}
	h.clk.Step(debounce)
	select {
	case <-h.w.C:
	case <-time.After(30 * time.Second):
		h.t.Fatalf("no signal after %s (watching %v)", what, h.w.Watched())
	}
	h.expectQuiet(what)
}

// expectQuiet checks that no signal is pending and none is armed.
func (h *harness) expectQuiet(what string) {
	h.t.Helper()
	if h.clk.HasWaiters() {
		h.t.Fatalf("%s: a debounce timer is armed, so a second signal would follow", what)
	}
	select {
	case <-h.w.C:
		h.t.Fatalf("%s: an extra signal", what)
	default:
	}
}

// expectWatched checks that dir has a watch of its own.
func (h *harness) expectWatched(dir string) {
	h.t.Helper()
	for _, d := range h.w.Watched() {
		if d == dir {
			return
		}
	}
	h.t.Fatalf("%s not watched: %v", dir, h.w.Watched())
}

func TestWatcher(t *testing.T) {
	root := t.TempDir()
	pki := filepath.Join(root, "etc/kubernetes/pki")
	kubelet := filepath.Join(root, "var/lib/kubelet/pki")
	must(t, os.MkdirAll(pki, 0o755))
	h := newHarness(t, root)
	h.set(pki, kubelet) // the kubelet directory does not exist yet
	h.expectWatched(pki)
	h.expectWatched(root) // the nearest existing ancestor of the kubelet directory

	// Watching alone is no change: the only event is the sentinel's own.
	h.expectOne("the sentinel")

	// A file replaced by rename (a new inode).
	must(t, os.WriteFile(filepath.Join(pki, ".apiserver.crt.tmp"), []byte("new"), 0o644))
	must(t, os.Rename(filepath.Join(pki, ".apiserver.crt.tmp"), filepath.Join(pki, "apiserver.crt")))
	h.expectOne("rename over a file")

	// A burst is one signal.
	for i := 0; i < 20; i++ {
		must(t, os.WriteFile(filepath.Join(pki, "burst.crt"), []byte{byte(i)}, 0o644))
	}
	h.expectOne("a burst of writes")

	// A directory created late: the watch moves down into it.
	must(t, os.MkdirAll(kubelet, 0o755))
	h.expectOne("the kubelet directory appearing")
	h.expectWatched(kubelet)

	// The kubelet's symlink swap inside it.
	must(t, os.WriteFile(filepath.Join(kubelet, "kubelet-client-1.pem"), []byte("1"), 0o600))
	must(t, os.Symlink(filepath.Join(kubelet, "kubelet-client-1.pem"), filepath.Join(kubelet, "kubelet-client-current.pem")))
	h.expectOne("a file in the late directory")
	must(t, os.WriteFile(filepath.Join(kubelet, "kubelet-client-2.pem"), []byte("2"), 0o600))
	must(t, os.Symlink(filepath.Join(kubelet, "kubelet-client-2.pem"), filepath.Join(kubelet, "kubelet-client-updated.pem")))
	h.expectOne("the new file and its symlink")
	must(t, os.Rename(filepath.Join(kubelet, "kubelet-client-updated.pem"), filepath.Join(kubelet, "kubelet-client-current.pem")))
	h.expectOne("the kubelet's symlink swap")

	// The PKI directory deleted: the watch moves up to its parent.
	must(t, os.RemoveAll(pki))
	h.expectOne("the PKI directory removed")
	h.expectWatched(filepath.Dir(pki))
	// Re-created: the watch moves back down.
	must(t, os.MkdirAll(pki, 0o755))
	h.expectOne("the PKI directory re-created")
	h.expectWatched(pki)
	must(t, os.WriteFile(filepath.Join(pki, "ca.crt"), []byte("x"), 0o644))
	h.expectOne("a file in the re-created directory")

	if len(h.w.Errors()) != 0 {
		t.Errorf("watch errors: %v", h.w.Errors())
	}
}

// TestWatcherDebounceWaits checks that the signal waits for the debounce
// period: an event does not signal before the clock has moved far enough.
func TestWatcherDebounceWaits(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "pki")
	must(t, os.MkdirAll(dir, 0o755))
	h := newHarness(t, root)
	h.set(dir)
	must(t, os.WriteFile(filepath.Join(dir, "a.crt"), []byte("a"), 0o644))
	h.settle()
	h.clk.Step(debounce - time.Millisecond)
	select {
	case <-h.w.C:
		t.Fatal("signalled before the debounce period ended")
	default:
	}
	h.clk.Step(time.Millisecond)
	select {
	case <-h.w.C:
	case <-time.After(30 * time.Second):
		t.Fatal("no signal after the debounce period")
	}
}

// TestWatcherRealClock runs the watcher as the agent does, on the real
// clock: a change is signalled. It asserts only that a signal comes, never
// that none does, so the machine's speed cannot decide it.
func TestWatcherRealClock(t *testing.T) {
	dir := t.TempDir()
	w, err := New(clock.RealClock{}, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Set([]string{dir})
	must(t, os.WriteFile(filepath.Join(dir, "a.crt"), []byte("a"), 0o644))
	select {
	case <-w.C:
	case <-time.After(30 * time.Second):
		t.Fatal("no signal on the real clock")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWatcherTake: the watcher says which paths changed, and whether
// their directory's listing did; changes before a full scan began are
// dropped; a watched directory that appears is a change of everything.
func TestWatcherTake(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "pki")
	late := filepath.Join(root, "late")
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "a.crt"), []byte("a"), 0o644))
	h := newHarness(t, root)
	h.set(dir, late)
	h.settle()
	h.w.Take(time.Time{}) // the watches just added, and the sentinel

	f, err := os.OpenFile(filepath.Join(dir, "a.crt"), os.O_WRONLY, 0)
	must(t, err)
	f.Write([]byte("b"))
	f.Close()
	must(t, os.WriteFile(filepath.Join(dir, "b.crt"), []byte("b"), 0o644))
	h.settle()
	c := h.w.Take(time.Time{})
	if c.All || c.Paths[filepath.Join(dir, "a.crt")] || !c.Paths[filepath.Join(dir, "b.crt")] {
		t.Errorf("a written in place, b created: %+v", c)
	}
	if _, ok := c.Paths[filepath.Join(dir, "a.crt")]; !ok || !c.Watched[dir] {
		t.Errorf("a.crt not reported, or %s not watched: %+v", dir, c)
	}
	if c = h.w.Take(time.Time{}); !c.Empty() {
		t.Errorf("taken twice: %+v", c)
	}

	must(t, os.WriteFile(filepath.Join(dir, "c.crt"), []byte("c"), 0o644))
	h.settle()
	h.clk.Step(time.Second)
	if c = h.w.Take(h.clk.Now()); !c.Empty() {
		t.Errorf("a change before the full scan began is in it: %+v", c)
	}

	must(t, os.MkdirAll(late, 0o755))
	h.settle()
	h.expectWatched(late)
	if c = h.w.Take(time.Time{}); !c.All {
		t.Errorf("a watched directory appeared: %+v", c)
	}

	// maxPending changed paths (the settling sentinel is one) are named;
	// one more is a full scan.
	for i := range maxPending - 1 {
		must(t, os.Symlink("nowhere", filepath.Join(dir, fmt.Sprintf("n%04d", i))))
	}
	h.settle()
	if c = h.w.Take(time.Time{}); c.All || len(c.Paths) != maxPending {
		t.Errorf("%d paths changed: all %v, %d paths named", maxPending, c.All, len(c.Paths))
	}
	for i := range maxPending - 1 {
		must(t, os.Remove(filepath.Join(dir, fmt.Sprintf("n%04d", i))))
	}
	must(t, os.WriteFile(filepath.Join(dir, "d.crt"), []byte("d"), 0o644))
	h.settle()
	if c = h.w.Take(time.Time{}); !c.All {
		t.Errorf("%d paths changed: not a full scan (%d paths named)", maxPending+1, len(c.Paths))
	}
}
