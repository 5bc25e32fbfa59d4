package rotate

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certagent/certagent/rotate/pki"
)

// TestRepairJournalOfOldBinary repairs journals as the binary before the
// storage codecs wrote them: testdata/journal-v1-*.json are that binary's
// journals of one transaction over a pair, a kubeconfig and a combined
// file, stopped at "staged" and at "committing" (only the random part of
// the staged names made fixed). They must read and write back byte for
// byte, and Repair must finish or undo them as it did.
func TestRepairJournalOfOldBinary(t *testing.T) {
	for _, tc := range []struct {
		name, fixture string
		state         string // replaces the fixture's state when set
		renameFirst   bool   // the crash came after the first rename
		action        string
		renewed       bool
	}{
		{name: "staging", fixture: "journal-v1-staging.json", action: "discarded staged files"},
		{name: "committing", fixture: "journal-v1-committing.json", action: "rolled forward", renewed: true},
		{name: "committing, one file renamed", fixture: "journal-v1-committing.json", renameFirst: true, action: "rolled forward", renewed: true},
		{name: "rolling back, one file renamed", fixture: "journal-v1-committing.json", state: stateRollingBack, renameFirst: true, action: "rolled back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fixture, err := os.ReadFile(filepath.Join("testdata", tc.fixture))
			if err != nil {
				t.Fatal(err)
			}
			var j journal
			if err := json.Unmarshal(fixture, &j); err != nil {
				t.Fatal(err)
			}
			if again, _ := json.MarshalIndent(&j, "", "  "); !bytes.Equal(again, bytes.TrimSpace(fixture)) {
				t.Fatalf("the journal format changed:\n%s\nwant\n%s", again, fixture)
			}
			root, ca, dir := node(t)
			old := stageAsOldBinary(t, root, dir, ca, j)
			if tc.state != "" {
				j.State = tc.state
			}
			for i := range j.Entries {
				for k := range j.Entries[i].Files {
					j.Entries[i].Files[k].UID, j.Entries[i].Files[k].GID = os.Geteuid(), os.Getegid()
				}
			}
			if tc.renameFirst {
				if err := root.Rename(j.Entries[0].Files[0].Staged, j.Entries[0].Files[0].Path); err != nil {
					t.Fatal(err)
				}
			}
			txDir := path.Join(DefaultBackupDir, BackupPrefix+"20261128T120000.000000000Z")
			data, _ := json.MarshalIndent(&j, "", "  ")
			os.WriteFile(root.HostPath(path.Join(txDir, journalName)), data, 0o600)

			reports := Repair(root, DefaultBackupDir)
			if len(reports) != 1 || reports[0].Err != nil || reports[0].Action != tc.action {
				t.Fatalf("repair: %+v, want %q", reports, tc.action)
			}
			for _, e := range j.Entries {
				tg := (codecs[e.Storage]).fromJournal(Target{Name: e.Name, Storage: e.Storage, User: e.User}, pathsOf(e))
				cur, err := load(root, tg)
				if err != nil || !pki.KeyMatches(cur.cert, cur.key) || !pki.SignedBy(cur.cert, ca.Cert) {
					t.Fatalf("%s after repair: %v", e.Name, err)
				}
				if renewed := serialHex(cur.cert) != old[e.Name]; renewed != tc.renewed {
					t.Errorf("%s: renewed %v, want %v", e.Name, renewed, tc.renewed)
				}
			}
			if n := Interrupted(root, DefaultBackupDir); len(n) != 0 {
				t.Errorf("still interrupted: %v", n)
			}
			assertNoStaged(t, dir)
		})
	}
}

func pathsOf(e journalEntry) []string {
	var out []string
	for _, f := range e.Files {
		out = append(out, f.Path)
	}
	return out
}

// stageAsOldBinary puts on disk what the journal j says its transaction
// had written: a combined file to renew, the new files under the staged
// names, and the backups. It returns the serials before.
func stageAsOldBinary(t *testing.T, root *pki.Root, dir string, ca *LocalCA, j journal) map[string]string {
	t.Helper()
	crt, _ := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/apiserver-kubelet-client.crt"))
	key, _ := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/apiserver-kubelet-client.key"))
	os.WriteFile(filepath.Join(dir, "etc/kubernetes/pki/combined.pem"), append(crt, key...), 0o600)
	txDir := path.Join(DefaultBackupDir, BackupPrefix+"20261128T120000.000000000Z")
	old := map[string]string{}
	for _, e := range j.Entries {
		tg := codecs[e.Storage].fromJournal(Target{Name: e.Name, Storage: e.Storage, User: e.User}, pathsOf(e))
		cur, err := load(root, tg)
		if err != nil {
			t.Fatal(err)
		}
		old[e.Name] = serialHex(cur.cert)
		k, _ := NewKey(cur.cert.PublicKey, "")
		cert, err := ca.Reissue(cur.cert, k.Public(), now, 0)
		if err != nil {
			t.Fatal(err)
		}
		files, err := render(tg, cur, certsOf(cert), k)
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range e.Files {
			if files[i].path != f.Path || !strings.HasPrefix(path.Base(f.Staged), "."+path.Base(f.Path)) {
				t.Fatalf("fixture and codec disagree: %s %s", files[i].path, f.Staged)
			}
			write(t, root, f.Staged, files[i].data, f.Mode)
			write(t, root, path.Join(txDir, f.Backup), cur.files[f.Path].Data, 0o600)
		}
	}
	return old
}

func write(t *testing.T, root *pki.Root, nodePath string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(root.HostPath(path.Dir(nodePath)), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(root.HostPath(nodePath), data, mode); err != nil {
		t.Fatal(fmt.Errorf("%s: %w", nodePath, err))
	}
}

func certsOf(c ...*x509.Certificate) []*x509.Certificate { return c }
