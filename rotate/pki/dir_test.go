package pki

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostile makes a root whose /etc/kubernetes/pki is an absolute link to
// /srv/pki (inside the root) and an empty host directory at the same
// absolute path outside it, to catch writes that escape.
func hostile(t *testing.T) (root *Root, rootDir, outside string) {
	t.Helper()
	rootDir = t.TempDir()
	outside = t.TempDir() // stands for the host's own /srv/pki
	inside := filepath.Join(rootDir, outside)
	must(t, os.MkdirAll(inside, 0o755))
	must(t, os.MkdirAll(filepath.Join(rootDir, "etc/kubernetes"), 0o755))
	must(t, os.Symlink(outside, filepath.Join(rootDir, "etc/kubernetes/pki")))
	r, err := NewRoot(rootDir)
	must(t, err)
	return r, rootDir, outside
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestWritesFollowLinksInsideTheRoot(t *testing.T) {
	r, rootDir, outside := hostile(t)
	must(t, r.WriteFile("/etc/kubernetes/pki/apiserver.key", []byte("key"), 0o600, os.Geteuid(), os.Getegid()))
	if got := entries(t, outside); len(got) != 0 {
		t.Fatalf("written outside the root: %v", got)
	}
	data, err := os.ReadFile(filepath.Join(rootDir, outside, "apiserver.key"))
	if err != nil || string(data) != "key" {
		t.Fatalf("not written inside the root: %q %v", data, err)
	}
	fi, _ := os.Stat(filepath.Join(rootDir, outside, "apiserver.key"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	d, err := r.MkdirAll("/etc/kubernetes/pki/etcd/new", 0o700)
	must(t, err)
	d.Close()
	if got := entries(t, outside); len(got) != 0 {
		t.Fatalf("MkdirAll made directories outside the root: %v", got)
	}
	must(t, r.Remove("/etc/kubernetes/pki/apiserver.key"))
	if _, err := os.Stat(filepath.Join(rootDir, outside, "apiserver.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("remove: %v", err)
	}
}

// TestHeldDirectoryIgnoresSwaps: once a directory is open, replacing its
// path with a link to the host does not move the writes.
func TestHeldDirectoryIgnoresSwaps(t *testing.T) {
	rootDir := t.TempDir()
	victim := t.TempDir()
	pki := filepath.Join(rootDir, "etc/kubernetes/pki")
	must(t, os.MkdirAll(pki, 0o755))
	r, err := NewRoot(rootDir)
	must(t, err)
	d, err := r.OpenDir("/etc/kubernetes/pki")
	must(t, err)
	defer d.Close()
	// The attacker swaps the directory for a link to the host.
	must(t, os.Rename(pki, pki+".old"))
	must(t, os.Symlink(victim, pki))
	p, err := d.Stage("ca.key", []byte("x"), 0o600, os.Geteuid(), os.Getegid())
	must(t, err)
	must(t, p.Commit())
	must(t, p.Sync())
	p.Cleanup()
	if got := entries(t, victim); len(got) != 0 {
		t.Fatalf("the swap redirected the write: %v", got)
	}
	if _, err := os.Stat(filepath.Join(pki+".old", "ca.key")); err != nil {
		t.Fatalf("not in the directory that was opened: %v", err)
	}
}

func TestEntryNamesAreSingleComponents(t *testing.T) {
	r, err := NewRoot(t.TempDir())
	must(t, err)
	d, err := r.OpenDir("/")
	must(t, err)
	defer d.Close()
	for _, name := range []string{"", ".", "..", "../x", "a/b", "/etc/passwd"} {
		if _, err := d.Stage(name, nil, 0o600, os.Geteuid(), os.Getegid()); err == nil {
			t.Errorf("Stage(%q) accepted", name)
		}
		if err := d.Remove(name); err == nil {
			t.Errorf("Remove(%q) accepted", name)
		}
	}
}

func TestOpenFileRefusesLinks(t *testing.T) {
	rootDir := t.TempDir()
	target := filepath.Join(t.TempDir(), "target")
	must(t, os.WriteFile(target, []byte("keep"), 0o644))
	must(t, os.Symlink(target, filepath.Join(rootDir, "certagent.lock")))
	r, err := NewRoot(rootDir)
	must(t, err)
	d, err := r.OpenDir("/")
	must(t, err)
	defer d.Close()
	if f, err := d.OpenFile("certagent.lock", os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600); err == nil {
		f.Close()
		t.Fatal("opened through a link")
	}
	if data, _ := os.ReadFile(target); string(data) != "keep" {
		t.Errorf("target changed: %q", data)
	}
}

func TestWriters(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to other users")
	}
	tests := []struct {
		name  string
		setup func(dir, file string)
		want  string // "" for nobody else
	}{
		{"root only", func(dir, file string) {}, ""},
		{"file owned by a user", func(dir, file string) { os.Chown(file, 4242, 0) }, "owned and writable by uid 4242"},
		{"file owned by a user, read-only", func(dir, file string) { os.Chown(file, 4242, 0); os.Chmod(file, 0o444) }, ""},
		{"group-writable file", func(dir, file string) { os.Chown(file, 0, 4242); os.Chmod(file, 0o664) }, "writable by group 4242"},
		{"world-writable file", func(dir, file string) { os.Chmod(file, 0o666) }, "writable by everyone"},
		{"directory owned by a user", func(dir, file string) { os.Chown(dir, 4242, 4242) }, "owned and writable by uid 4242"},
		{"sticky world-writable directory", func(dir, file string) { os.Chmod(dir, 0o1777) }, "writable by everyone"},
		{"parent of the directory", func(dir, file string) { os.Chmod(filepath.Dir(dir), 0o777) }, "writable by everyone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rootDir := t.TempDir()
			dir := filepath.Join(rootDir, "srv/creds")
			must(t, os.MkdirAll(dir, 0o755))
			file := filepath.Join(dir, "a.crt")
			must(t, os.WriteFile(file, []byte("x"), 0o644))
			tc.setup(dir, file)
			r, err := NewRoot(rootDir)
			must(t, err)
			got := r.Writers("/srv/creds/a.crt", nil)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("Writers = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestReadAfterSwapStaysInRoot: a directory resolved, then swapped for an
// absolute link to the host, is not read through: the kernel resolves the
// read inside the root.
func TestReadAfterSwapStaysInRoot(t *testing.T) {
	rootDir := t.TempDir()
	host := t.TempDir()
	must(t, os.WriteFile(filepath.Join(host, "ca.crt"), []byte("host secret"), 0o644))
	pki := filepath.Join(rootDir, "etc/kubernetes/pki")
	must(t, os.MkdirAll(pki, 0o755))
	must(t, os.WriteFile(filepath.Join(pki, "ca.crt"), []byte("node"), 0o644))
	r, err := NewRoot(rootDir)
	must(t, err)
	resolved, err := r.Resolve("/etc/kubernetes/pki/ca.crt")
	must(t, err)
	must(t, os.Rename(pki, pki+".old"))
	must(t, os.Symlink(host, pki))
	f, err := r.ReadResolvedFile(resolved)
	if err == nil && string(f.Data) == "host secret" {
		t.Fatal("read a host file through a swapped directory")
	}
}
