package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConcurrentRenewsSerialise: a second renewal waits for the first
// (held for two seconds inside its transaction), then runs; with a short
// --lock-timeout it gives up with a clear error instead.
func TestConcurrentRenewsSerialise(t *testing.T) {
	root := sandbox(t)
	first := exec.Command(certagentBin, "renew", "--root", root, "--all", "--force")
	first.Env = append(os.Environ(), "CERTAGENT_TEST_PAUSE_AT=backed-up")
	var firstOut bytes.Buffer
	first.Stdout = &firstOut
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the first holds the lock now

	impatient := run(t, certagentBin, "renew", "--root", root, "--all", "--force", "--lock-timeout", "200ms")
	// Exit 5, the lock timeout's own code; the wait was announced once, with the holder.
	if impatient.code != 5 || !strings.Contains(impatient.stderr, "another renewal is in progress") || !strings.Contains(impatient.stderr, "held by pid") ||
		strings.Count(impatient.stderr, "waiting up to 200ms for ") != 1 || !strings.Contains(impatient.stderr, fmt.Sprintf("certagent.lock, held by pid %d", first.Process.Pid)) {
		t.Errorf("short timeout: exit %d\n%s%s", impatient.code, impatient.stdout, impatient.stderr)
	}
	start := time.Now()
	second := run(t, certagentBin, "renew", "--root", root, "--all", "--force")
	waited := time.Since(start)
	if err := first.Wait(); err != nil {
		t.Fatalf("first renew: %v\n%s", err, firstOut.String())
	}
	if second.code != 0 || waited < time.Second {
		t.Errorf("second renew: exit %d after %s (should wait for the first)\n%s", second.code, waited, second.stdout)
	}
	consistent(t, root)
}

// TestRunningKubeadmIsRespected: while a kubeadm process works on the same
// root, renew waits; one working on another root is ignored.
func TestRunningKubeadmIsRespected(t *testing.T) {
	root := sandbox(t)
	// A stand-in named kubeadm that sleeps with kubeadm's --rootfs flag.
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte("package main\nimport \"time\"\nfunc main() { time.Sleep(3 * time.Second) }\n"), 0o644)
	fake := filepath.Join(dir, "kubeadm")
	if out, err := exec.Command("go", "build", "-o", fake, src).CombinedOutput(); err != nil {
		t.Fatalf("build stand-in: %v %s", err, out)
	}
	other := exec.Command(fake, "certs", "renew", "all", "--rootfs", t.TempDir())
	other.Start()
	defer other.Wait()
	if r := run(t, certagentBin, "renew", "--root", root, "--all", "--lock-timeout", "300ms"); r.code != 0 {
		t.Errorf("kubeadm on another root blocked renew: %s%s", r.stdout, r.stderr)
	}
	same := exec.Command(fake, "certs", "renew", "all", "--rootfs="+root)
	same.Start()
	defer same.Wait()
	time.Sleep(100 * time.Millisecond)
	r := run(t, certagentBin, "renew", "--root", root, "--all", "--lock-timeout", "300ms")
	if r.code != 5 || !strings.Contains(r.stderr, "kubeadm (pid") || strings.Count(r.stderr, "waiting up to 300ms for kubeadm (pid") != 1 {
		t.Errorf("kubeadm on the same root: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
