package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestListenRemovesOnlyStaleSockets: the socket path may hold a stale
// socket from a crash, which is replaced. Anything else there (a regular
// file, a directory, a symlink, a FIFO) is an error naming the path, and
// stays exactly as it was: certagent runs as root, and --socket must not
// become a way to delete any file.
func TestListenRemovesOnlyStaleSockets(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, p string)
		want  string // "" means listen succeeds
	}{
		{name: "nothing there"},
		{name: "stale socket", setup: func(t *testing.T, p string) {
			ln, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			ln.(*net.UnixListener).SetUnlinkOnClose(false)
			ln.Close()
		}},
		{name: "live socket", want: "another certagent is running", setup: func(t *testing.T, p string) {
			ln, err := net.Listen("unix", p)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
		}},
		{name: "regular file", want: "not a socket", setup: func(t *testing.T, p string) {
			if err := os.WriteFile(p, []byte("precious data\n"), 0o640); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "empty directory", want: "not a socket", setup: func(t *testing.T, p string) {
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "symlink to a file", want: "not a socket", setup: func(t *testing.T, p string) {
			target := p + ".target"
			if err := os.WriteFile(target, []byte("target\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "fifo", want: "not a socket", setup: func(t *testing.T, p string) {
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "certagent.sock")
			if tc.setup != nil {
				tc.setup(t, p)
			}
			before := snapshot(t, p)
			ln, _, err := listen(p, "certagent-no-such-group")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				ln.Close()
				return
			}
			if err == nil {
				ln.Close()
				t.Fatalf("listen replaced the %s at the socket path", tc.name)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("error = %v, want %q naming %s", err, tc.want, p)
			}
			if after := snapshot(t, p); after != before {
				t.Errorf("the %s changed: %q, was %q", tc.name, after, before)
			}
		})
	}
}

// snapshot describes what is at p: type, inode and, for a regular file
// (or what a link leads to), its bytes.
func snapshot(t *testing.T, p string) string {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		return "missing"
	}
	s := fmt.Sprintf("%s inode %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Ino)
	if fi.Mode().Type()&os.ModeNamedPipe != 0 {
		return s // reading would block
	}
	if data, err := os.ReadFile(p); err == nil {
		s += " " + string(data)
	}
	return s
}

// TestShutdownRemovesOnlyOwnSocket: on shutdown the agent removes the
// socket it made, not a file that took its place meanwhile.
func TestShutdownRemovesOnlyOwnSocket(t *testing.T) {
	for _, replaced := range []bool{false, true} {
		p := filepath.Join(t.TempDir(), "certagent.sock")
		ln, _, err := listen(p, "certagent-no-such-group")
		if err != nil {
			t.Fatal(err)
		}
		ours, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if replaced {
			os.Remove(p)
			if err := os.WriteFile(p, []byte("someone else's\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		ln.Close()
		removeSocket(p, ours)
		data, err := os.ReadFile(p)
		switch {
		case !replaced && !os.IsNotExist(err):
			t.Errorf("own socket left behind: %v", err)
		case replaced && string(data) != "someone else's\n":
			t.Errorf("the file that replaced the socket was removed or changed: %q %v", data, err)
		}
	}
}
