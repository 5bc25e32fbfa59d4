package integration

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// escapeDir returns a fresh absolute path that does not exist on the host
// yet, removed after the test. A link inside a root points at it: the node
// would find the target inside the root; a write that leaves the root lands
// on the host at this path.
func escapeDir(t *testing.T) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	d := "/tmp/certagent-escape-" + hex.EncodeToString(b[:])
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// relocate moves root's node directory from to root's node directory to
// (inside the root) and leaves an absolute link at from. The same
// directories are made on the host side, empty, to catch escaping writes.
func relocate(t *testing.T, root, from, to string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(filepath.Join(root, to)), 0o755))
	if _, err := os.Stat(filepath.Join(root, from)); err == nil {
		must(t, os.Rename(filepath.Join(root, from), filepath.Join(root, to)))
	} else {
		must(t, os.MkdirAll(filepath.Join(root, to), 0o700))
	}
	must(t, os.Symlink(to, filepath.Join(root, from)))
	must(t, os.MkdirAll(to, 0o755)) // the host side
}

// hostFiles lists everything below a host directory that is not a
// directory.
func hostFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestWritesStayInRoot: with a directory of the node's PKI replaced by an
// absolute link (which inside the root means a place inside the root),
// check sees every certificate and renew writes keys, certificates,
// backups, journals and the lock inside the root, none on the host.
func TestWritesStayInRoot(t *testing.T) {
	tests := []struct {
		name  string
		from  string // node directory replaced by a link
		setup func(t *testing.T, root string)
		args  []string
		// renewed lists node files inside the root that must change.
		renewed []string
	}{
		{
			name: "pki directory", from: "/etc/kubernetes/pki",
			args:    []string{"--all", "--force"},
			renewed: []string{"apiserver.key", "apiserver.crt", "etcd/server.key", "front-proxy-client.key"},
		},
		{
			name: "etcd directory", from: "/etc/kubernetes/pki/etcd",
			args:    []string{"etcd-server", "etcd-peer"},
			renewed: []string{"server.key", "peer.crt"},
		},
		{
			name: "backup directory", from: "/etc/kubernetes/tmp",
			args: []string{"apiserver"},
		},
		{
			name: "kubeconfig's client-key directory", from: "/etc/kubernetes/creds",
			setup:   splitAdminConf,
			args:    []string{"admin.conf"},
			renewed: []string{"admin.crt", "admin.key"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := sandbox(t)
			if tc.setup != nil {
				tc.setup(t, root)
			}
			to := filepath.Join(escapeDir(t), filepath.Base(tc.from))
			relocate(t, root, tc.from, to)
			before := map[string][]byte{}
			for _, f := range tc.renewed {
				before[f], _ = os.ReadFile(filepath.Join(root, to, f))
				if before[f] == nil {
					t.Fatalf("setup: %s missing inside the root", f)
				}
			}

			// check sees the same inventory as without the link.
			c := run(t, certagentBin, "check", "--root", root, "-o", "json")
			var inv struct {
				Certificates []struct{ Name string } `json:"certificates"`
				Authorities  []struct{ Name string } `json:"authorities"`
			}
			if err := json.Unmarshal([]byte(c.stdout), &inv); err != nil {
				t.Fatalf("check -o json: %v\n%s%s", err, c.stdout, c.stderr)
			}
			names := map[string]bool{}
			for _, x := range append(inv.Certificates, inv.Authorities...) {
				names[x.Name] = true
			}
			for _, n := range []string{"ca", "etcd-ca", "front-proxy-ca", "apiserver", "etcd-server", "etcd-peer", "front-proxy-client", "admin.conf"} {
				if !names[n] {
					t.Errorf("check lost %s behind the link: %v", n, names)
				}
			}

			r := run(t, certagentBin, append([]string{"renew", "--root", root}, tc.args...)...)
			if r.code != 0 {
				t.Errorf("renew: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			if got := hostFiles(t, to); len(got) != 0 {
				t.Errorf("renew wrote outside the root: %v", got)
			}
			for f, old := range before {
				if now, _ := os.ReadFile(filepath.Join(root, to, f)); string(now) == string(old) {
					t.Errorf("%s inside the root was not renewed", f)
				}
			}
			consistent(t, root)
		})
	}
}

// splitAdminConf makes admin.conf refer to its client certificate and key
// in /etc/kubernetes/creds instead of embedding them.
func splitAdminConf(t *testing.T, root string) {
	t.Helper()
	p := filepath.Join(root, "etc/kubernetes/admin.conf")
	cfg, err := clientcmd.LoadFromFile(p)
	must(t, err)
	creds := filepath.Join(root, "etc/kubernetes/creds")
	must(t, os.MkdirAll(creds, 0o700))
	for _, ai := range cfg.AuthInfos {
		must(t, os.WriteFile(filepath.Join(creds, "admin.crt"), ai.ClientCertificateData, 0o644))
		must(t, os.WriteFile(filepath.Join(creds, "admin.key"), ai.ClientKeyData, 0o600))
		ai.ClientCertificateData, ai.ClientKeyData = nil, nil
		ai.ClientCertificate, ai.ClientKey = "/etc/kubernetes/creds/admin.crt", "/etc/kubernetes/creds/admin.key"
	}
	must(t, clientcmd.WriteToFile(*cfg, p))
}

// TestLockFileLinkRefused: a link planted as the lock file (the backup
// directory is writable by whoever planted it) is refused, never opened:
// its target keeps its content.
func TestLockFileLinkRefused(t *testing.T) {
	root := sandbox(t)
	victim := filepath.Join(t.TempDir(), "victim")
	must(t, os.WriteFile(victim, []byte("precious\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(root, "etc/kubernetes/tmp"), 0o700))
	must(t, os.Symlink(victim, filepath.Join(root, "etc/kubernetes/tmp/certagent.lock")))
	r := run(t, certagentBin, "renew", "--root", root, "apiserver")
	if r.code == 0 {
		t.Errorf("renew took a linked lock file: exit 0\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout+r.stderr, "certagent.lock") {
		t.Errorf("the error does not name the lock file:\n%s%s", r.stdout, r.stderr)
	}
	if data, _ := os.ReadFile(victim); string(data) != "precious\n" {
		t.Errorf("the link's target was changed: %q", data)
	}
}

// TestInterruptedRepairedAtStart: a renewal killed between two renames
// leaves a mismatched pair. check reports the interrupted transaction, and
// the daemon repairs it before its first scan is published, although
// nothing is due.
func TestInterruptedRepairedAtStart(t *testing.T) {
	root := sandbox(t)
	cmd := exec.Command(certagentBin, "renew", "--root", root, "apiserver")
	cmd.Env = append(os.Environ(), "CERTAGENT_TEST_CRASH_AT=renamed-one")
	if err := cmd.Run(); err == nil {
		t.Fatal("renew was not killed")
	}
	c := run(t, certagentBin, "check", "--root", root)
	if !strings.Contains(c.stdout, "interrupted renewal transaction") || c.code == 0 {
		t.Errorf("check does not report the interrupted transaction (exit %d):\n%s", c.code, c.stdout)
	}
	d := startDaemon(t, certagentBin, root, nil)
	if !strings.Contains(d.log(), "interrupted renewal repaired") {
		t.Errorf("the daemon did not repair at start:\n%s", d.log())
	}
	s := run(t, certagentBin, "status", "--root", root, "-o", "json")
	if strings.Contains(s.stdout, "interrupted renewal transaction") {
		t.Errorf("status still shows the transaction after the repair:\n%s", s.stdout)
	}
	consistent(t, root)
}
