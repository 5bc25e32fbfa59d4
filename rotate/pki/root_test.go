package pki

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func mustRoot(t *testing.T) (*Root, string) {
	t.Helper()
	dir := t.TempDir()
	r, err := NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r, dir
}

func write(t *testing.T, dir, p, data string) {
	t.Helper()
	full := filepath.Join(dir, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func link(t *testing.T, dir, target, p string) {
	t.Helper()
	full := filepath.Join(dir, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, full); err != nil {
		t.Fatal(err)
	}
}

func TestResolve(t *testing.T) {
	r, dir := mustRoot(t)
	write(t, dir, "var/lib/kubelet/pki/kubelet-client-2026.pem", "x")
	// The kubelet writes absolute targets: they must land inside the root.
	link(t, dir, "/var/lib/kubelet/pki/kubelet-client-2026.pem", "var/lib/kubelet/pki/kubelet-client-current.pem")
	link(t, dir, "kubelet-client-current.pem", "var/lib/kubelet/pki/rel.pem")
	link(t, dir, "../../../../../../var/lib/kubelet/pki/kubelet-client-2026.pem", "var/lib/kubelet/pki/climb.pem")
	link(t, dir, "/var/lib/kubelet", "kubelet-dir")
	link(t, dir, "loop-b", "loop-a")
	link(t, dir, "loop-a", "loop-b")
	link(t, dir, "/nowhere/file", "dangling")
	// A link that would escape on the host resolves inside the root.
	link(t, dir, "/etc/passwd", "escape")
	write(t, dir, "etc/passwd", "inside")

	tests := []struct {
		name, in, want string
		err            error
	}{
		{"plain", "/var/lib/kubelet/pki/kubelet-client-2026.pem", "/var/lib/kubelet/pki/kubelet-client-2026.pem", nil},
		{"absolute target", "/var/lib/kubelet/pki/kubelet-client-current.pem", "/var/lib/kubelet/pki/kubelet-client-2026.pem", nil},
		{"chain of links", "/var/lib/kubelet/pki/rel.pem", "/var/lib/kubelet/pki/kubelet-client-2026.pem", nil},
		{"dot-dot clamps at root", "/var/lib/kubelet/pki/climb.pem", "/var/lib/kubelet/pki/kubelet-client-2026.pem", nil},
		{"linked directory", "/kubelet-dir/pki/kubelet-client-current.pem", "/var/lib/kubelet/pki/kubelet-client-2026.pem", nil},
		{"escape stays inside", "/escape", "/etc/passwd", nil},
		{"loop", "/loop-a", "", ErrSymlinkLoop},
		{"dangling", "/dangling", "", fs.ErrNotExist},
		{"missing", "/no/such/file", "", fs.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Resolve(tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Resolve(%s) error = %v, want %v", tc.in, err, tc.err)
				}
				if strings.Contains(err.Error(), dir) {
					t.Errorf("error leaks the host path: %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Resolve(%s) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
	f, err := r.ReadFile("/escape")
	if err != nil || string(f.Data) != "inside" {
		t.Fatalf("ReadFile(/escape) = %v, %v; want the file inside the root", f, err)
	}
}

func TestReadFileRefusals(t *testing.T) {
	r, dir := mustRoot(t)
	r.MaxFileSize = 1024
	write(t, dir, "small.crt", "hello")
	if err := os.MkdirAll(filepath.Join(dir, "adir.crt"), 0o755); err != nil {
		t.Fatal(err)
	}
	big, err := os.Create(filepath.Join(dir, "big.crt"))
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: 100 MB that costs nothing on disk; must not be read.
	if err := big.Truncate(100 << 20); err != nil {
		t.Fatal(err)
	}
	big.Close()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.crt"), 0o644); err != nil {
		t.Fatal(err)
	}

	if f, err := r.ReadFile("/small.crt"); err != nil || string(f.Data) != "hello" || f.Mode != 0o644 {
		t.Fatalf("small: %+v %v", f, err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/adir.crt", "is a directory"},
		{"/big.crt", "over the 1024-byte limit"},
		{"/fifo.crt", "not a regular file"},
	} {
		_, err := r.ReadFile(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ReadFile(%s) = %v, want error containing %q", tc.path, err, tc.want)
		}
	}
}

func TestNodePath(t *testing.T) {
	r, dir := mustRoot(t)
	if p, ok := r.NodePath(filepath.Join(dir, "etc/kubernetes")); !ok || p != "/etc/kubernetes" {
		t.Fatalf("NodePath = %q %v", p, ok)
	}
	if _, ok := r.NodePath("/elsewhere"); ok {
		t.Fatal("NodePath accepted a path outside the root")
	}
	if r.HostPath("/../../x") != filepath.Join(dir, "x") {
		t.Fatalf("HostPath escaped: %s", r.HostPath("/../../x"))
	}
}
