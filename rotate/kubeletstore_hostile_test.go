package rotate

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/certagent/certagent/rotate/pki"
)

// TestKubeletStoreHostile: what is planted in or around the store never
// redirects a write: links at the staged and the new file's names, a
// -current.pem that leads out of the root, a store directory that is a
// link to a host path. The victims keep their bytes, every write lands in
// the store, and -current.pem ends at the new, matching file.
func TestKubeletStoreHostile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, root *pki.Root, victim string)
	}{
		{"-updated.pem links to a victim", func(t *testing.T, root *pki.Root, victim string) {
			must(t, os.Symlink(victim, root.HostPath(storeDir+"/kubelet-client-updated.pem")))
		}},
		{"the new file's name links to a victim", func(t *testing.T, root *pki.Root, victim string) {
			must(t, os.Symlink(victim, root.HostPath(storeDir+"/kubelet-client-2026-11-28-12-00-00.pem")))
		}},
		{"-current.pem leads out of the root", func(t *testing.T, root *pki.Root, victim string) {
			cur := root.HostPath(clientStore(root).Current())
			must(t, os.Remove(cur))
			must(t, os.Symlink("../../../../../../../../.."+victim, cur))
		}},
		{"the store directory links to a host path", func(t *testing.T, root *pki.Root, victim string) {
			// Inside the root, the absolute link means <root>/<host path>.
			to := path.Dir(victim)
			must(t, os.MkdirAll(root.HostPath(path.Dir(to)), 0o755))
			must(t, os.Rename(root.HostPath(storeDir), root.HostPath(to)))
			must(t, os.Symlink(to, root.HostPath(storeDir)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, ca, _ := node(t)
			outside := t.TempDir()
			victim := filepath.Join(outside, "victim.pem")
			must(t, os.WriteFile(victim, []byte("not yours\n"), 0o600))
			certs, key := newClientPair(t, root, ca, now)
			tc.plant(t, root, victim)
			file, _, err := clientStore(root).Update(certs, key, nil, now)
			if err != nil {
				t.Fatal(err)
			}
			if data, _ := os.ReadFile(victim); !bytes.Equal(data, []byte("not yours\n")) {
				t.Errorf("the victim outside the root was written: %q", data)
			}
			if m, _ := filepath.Glob(filepath.Join(outside, "*")); len(m) != 1 {
				t.Errorf("files appeared outside the root: %v", m)
			}
			if path.Dir(file) != storeDir {
				t.Errorf("new file %s", file)
			}
			if target, serial := storeSerial(t, root, ca); target != file || serial != serialHex(certs[0]) {
				t.Errorf("current -> %s (%s), want %s", target, serial, file)
			}
			assertNoUpdatedLink(t, root)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
