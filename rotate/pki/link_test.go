package pki

import (
	"os"
	"path/filepath"
	"testing"
)

// TestStageLinkNeverFollows: behind a linked directory (see hostile), a
// link staged under a name that holds a link to a victim, and a link
// written over a regular file, replace what is there and write nothing
// through it or outside the root.
func TestStageLinkNeverFollows(t *testing.T) {
	r, rootDir, outside := hostile(t)
	inside := filepath.Join(rootDir, outside)
	victim := filepath.Join(t.TempDir(), "victim")
	must(t, os.WriteFile(victim, []byte("mine"), 0o600))
	must(t, os.Symlink(victim, filepath.Join(inside, "x-updated.pem")))
	must(t, os.WriteFile(filepath.Join(inside, "x-current.pem"), []byte("old"), 0o600))

	p, err := r.StageLink("/etc/kubernetes/pki/x-current.pem", "x-updated.pem", "/etc/kubernetes/pki/x-1.pem")
	must(t, err)
	must(t, p.Commit())
	must(t, p.Sync())
	p.Cleanup()
	if got, err := os.Readlink(filepath.Join(inside, "x-current.pem")); err != nil || got != "/etc/kubernetes/pki/x-1.pem" {
		t.Errorf("x-current.pem -> %q, %v", got, err)
	}
	must(t, r.WriteLink("/etc/kubernetes/pki/x-current.pem", "x-0.pem"))
	if got, err := os.Readlink(filepath.Join(inside, "x-current.pem")); err != nil || got != "x-0.pem" {
		t.Errorf("x-current.pem -> %q, %v", got, err)
	}
	if data, _ := os.ReadFile(victim); string(data) != "mine" {
		t.Errorf("victim written: %q", data)
	}
	if got := entries(t, outside); len(got) != 0 {
		t.Errorf("written outside the root: %v", got)
	}
	if got := entries(t, inside); len(got) != 1 {
		t.Errorf("left in the directory: %v, want x-current.pem only", got)
	}
}

// TestTryLock: a second lock on a locked directory is refused, in the
// same process too, until the first is released.
func TestTryLock(t *testing.T) {
	r, err := NewRoot(t.TempDir())
	must(t, err)
	d1, err := r.MkdirAll("/tx", 0o700)
	must(t, err)
	defer d1.Close()
	d2, err := r.OpenDir("/tx")
	must(t, err)
	defer d2.Close()
	unlock, ok, err := d1.TryLock()
	if err != nil || !ok {
		t.Fatalf("first lock: %v %v", ok, err)
	}
	if _, ok, err := d2.TryLock(); ok || err != nil {
		t.Fatalf("second lock taken while the first is held: %v %v", ok, err)
	}
	unlock()
	unlock2, ok, err := d2.TryLock()
	if err != nil || !ok {
		t.Fatalf("lock after release: %v %v", ok, err)
	}
	unlock2()
}
