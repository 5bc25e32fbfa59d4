package pki

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
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

// opens watches dir with inotify and reports which names in it were
// opened (IN_OPEN) since the last call. Opening a FIFO or a device is an
// event like any other, so this proves a file was never opened.
type opens struct{ fd int }

func watchOpens(t *testing.T, dir string) *opens {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Skipf("inotify: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	return &opens{fd}
}

// drain returns the names opened so far. Events are queued when the open
// happens, so after the call returns they are all there: no waiting.
func (o *opens) drain(t *testing.T) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(o.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			got[strings.TrimRight(string(name), "\x00")] = true
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// TestNonRegularFilesNeverOpened: a FIFO, a device, a socket or a
// directory where a certificate was expected is refused from its lstat,
// before any open (opening a device can act on it: rewind a tape, hang
// up a line), whether reached by path, through a symlink or from a
// directory listing.
func TestNonRegularFilesNeverOpened(t *testing.T) {
	r, dir := mustRoot(t)
	write(t, dir, "good.crt", "hello")
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.crt"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir.crt"), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(dir, "sock.crt"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	link(t, dir, "/fifo.crt", "link-to-fifo.crt")
	cases := []struct{ path, want string }{
		{"/fifo.crt", "not a regular file"},
		{"/adir.crt", "is a directory"},
		{"/sock.crt", "not a regular file"},
		{"/link-to-fifo.crt", "not a regular file"},
	}
	if os.Geteuid() == 0 {
		// /dev/null's numbers: harmless even if opened, and opening it
		// is visible to inotify like any device.
		if err := unix.Mknod(filepath.Join(dir, "dev.crt"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct{ path, want string }{"/dev.crt", "not a regular file"})
	}
	o := watchOpens(t, dir)
	if f, err := r.ReadFile("/good.crt"); err != nil || string(f.Data) != "hello" {
		t.Fatalf("good.crt: %v %v", f, err)
	}
	if !o.drain(t)["good.crt"] {
		t.Fatal("inotify saw no open of good.crt: the detector does not work here")
	}
	for _, tc := range cases {
		for _, how := range []string{"ReadFile", "ReadResolvedFile"} {
			t.Run(how+tc.path, func(t *testing.T) {
				var err error
				if how == "ReadFile" {
					_, err = r.ReadFile(tc.path)
				} else {
					resolved, rerr := r.Resolve(tc.path)
					if rerr != nil {
						t.Fatal(rerr)
					}
					_, err = r.ReadResolvedFile(resolved)
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error = %v, want %q", err, tc.want)
				}
				for name := range o.drain(t) {
					t.Errorf("%s was opened", name)
				}
			})
		}
	}
}

// TestFileSwappedBeforeOpen: a file replaced between the type check and
// the open (a rename of a FIFO over it) is refused, not read.
func TestFileSwappedBeforeOpen(t *testing.T) {
	r, dir := mustRoot(t)
	write(t, dir, "a.crt", "first")
	write(t, dir, "b.crt", "second")
	beforeOpen = func(host string) {
		if filepath.Base(host) == "a.crt" {
			os.Rename(filepath.Join(dir, "b.crt"), host)
		}
	}
	defer func() { beforeOpen = nil }()
	// Either the file that was checked is read (it is reopened through the
	// reference taken at the check) or the read is refused; never the file
	// swapped in.
	f, err := r.ReadFile("/a.crt")
	if err == nil && string(f.Data) != "first" {
		t.Fatalf("ReadFile read %q, the file swapped in after the check", f.Data)
	}
	if err != nil && !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("ReadFile = %v, want the checked file or a refusal", err)
	}
}

// TestFIFOSwappedBeforeOpen: a FIFO swapped in after the type check is
// never opened (inotify on the FIFO itself would see the open) and
// nothing hangs.
func TestFIFOSwappedBeforeOpen(t *testing.T) {
	r, dir := mustRoot(t)
	write(t, dir, "a.crt", "first")
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	o := watchOpens(t, fifo)
	beforeOpen = func(host string) { os.Rename(fifo, host) }
	defer func() { beforeOpen = nil }()
	f, err := r.ReadFile("/a.crt")
	if err == nil && string(f.Data) != "first" {
		t.Fatalf("read %q, not the checked file", f.Data)
	}
	if got := o.drain(t); len(got) != 0 {
		t.Fatalf("the FIFO swapped in was opened: %v", got)
	}
}
