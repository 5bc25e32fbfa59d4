package integration

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestUnreadableFileAsUnprivilegedUser: a mode-000 certificate is a clear
// per-file problem and the others are still reported. Root reads any file,
// so when the tests run as root the binary runs as nobody.
func TestUnreadableFileAsUnprivilegedUser(t *testing.T) {
	root := t.TempDir()
	ca, err := pkitest.NewCA("kubernetes", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	pki := filepath.Join(root, "etc/kubernetes/pki")
	if err := os.MkdirAll(pki, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ca.crt", "readable.crt", "locked.crt"} {
		if err := os.WriteFile(filepath.Join(pki, name), pkitest.CertPEM(ca.Cert), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(pki, "locked.crt"), 0); err != nil {
		t.Fatal(err)
	}
	openUp(pki)
	args := []string{"check", "--root", root, "-o", "json"}
	var r result
	if os.Geteuid() == 0 {
		r = runAs(t, 65534, 65534, certagentBin, args...)
	} else {
		r = run(t, certagentBin, args...)
	}
	if r.code != 2 {
		t.Fatalf("exit %d, want 2\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, `"path": "/etc/kubernetes/pki/locked.crt"`) || !strings.Contains(r.stdout, "permission denied") {
		t.Errorf("no clear problem for the unreadable file:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, `"name": "/etc/kubernetes/pki/readable.crt"`) {
		t.Errorf("the readable certificate is missing:\n%s", r.stdout)
	}
}

// runAs runs a world-executable copy of bin as uid:gid, so that the test
// works wherever the checkout lives (a clone under /root, say).
func runAs(t testing.TB, uid, gid uint32, bin string, args ...string) result {
	t.Helper()
	dir, err := os.MkdirTemp("", "certagent-public-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, filepath.Base(bin))
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return runWith(t, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}, bin, args...)
}

// openUp makes dir and its ancestors inside the temp directory searchable
// and readable by everyone, for tests that run clients as other users.
func openUp(dir string) {
	for p := dir; strings.HasPrefix(p, os.TempDir()+"/"); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
}
