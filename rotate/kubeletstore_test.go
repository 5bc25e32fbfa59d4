package rotate

import (
	"crypto"
	"crypto/x509"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
)

const storeDir = "/var/lib/kubelet/pki"

// clientStore is the pkitest node's kubelet client store.
func clientStore(root *pki.Root) KubeletStore {
	return KubeletStore{Root: root, Dir: storeDir, Prefix: "kubelet-client"}
}

// newClientPair re-issues the store's current certificate from the CA.
func newClientPair(t *testing.T, root *pki.Root, ca *LocalCA, at time.Time) ([]*x509.Certificate, crypto.Signer) {
	t.Helper()
	cur, err := load(root, Target{Storage: StorageKubeletStore, CertPath: clientStore(root).Current()})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := NewKey(cur.cert.PublicKey, "")
	cert, err := ca.Reissue(cur.cert, key.Public(), at, 0)
	if err != nil {
		t.Fatal(err)
	}
	return []*x509.Certificate{cert}, key
}

// storeSerial checks what the client-go store and the kubelet rely on:
// -current.pem is a link to a file directly in the store's directory, and
// that file is complete, its key matches and it chains to the CA. It
// returns the link's target and the certificate's serial.
func storeSerial(t *testing.T, root *pki.Root, ca *LocalCA) (string, string) {
	t.Helper()
	s := clientStore(root)
	d, err := root.OpenDir(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := d.Lstat(path.Base(s.Current()))
	d.Close()
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("%s is not a link: %v", s.Current(), err)
	}
	target := s.Target()
	if path.Dir(target) != storeDir {
		t.Fatalf("%s points out of the store: %q", s.Current(), target)
	}
	f, err := root.ReadFile(s.Current())
	if err != nil {
		t.Fatalf("%s -> %s: %v", s.Current(), target, err)
	}
	b, err := pki.ParseBundle(f.Data)
	if err != nil || b.Key == nil || !pki.KeyMatches(b.Certs[0], b.Key) || !pki.SignedBy(b.Certs[0], ca.Cert) || f.Mode != 0o600 {
		t.Fatalf("%s -> %s: not a complete matching pair (mode %04o): %v", s.Current(), target, f.Mode, err)
	}
	return target, serialHex(b.Certs[0])
}

func TestKubeletStoreUpdateIsJournaled(t *testing.T) {
	root, ca, dir := node(t)
	oldTarget, oldSerial := storeSerial(t, root, ca)
	oldData, _ := os.ReadFile(root.HostPath(oldTarget))
	certs, key := newClientPair(t, root, ca, now)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	file, _, err := clientStore(root).Update(certs, key, roots, now)
	if err != nil {
		t.Fatal(err)
	}
	target, serial := storeSerial(t, root, ca)
	if target != file || file != storeDir+"/kubelet-client-2026-11-28-12-00-00.pem" || serial != serialHex(certs[0]) || serial == oldSerial {
		t.Errorf("current -> %s (%s), Update wrote %s", target, serial, file)
	}
	if data, _ := os.ReadFile(root.HostPath(oldTarget)); string(data) != string(oldData) {
		t.Error("the old file changed")
	}
	// The journal of the swap: done, the new file with nothing to back
	// up, then the link, backed up as the link it was.
	txs := backupDirs(root, DefaultBackupDir)
	if len(txs) != 1 {
		t.Fatalf("transactions %v", txs)
	}
	j, err := loadJournal(root, txs[0])
	if err != nil || j.State != stateDone || len(j.Entries) != 1 || j.Entries[0].Storage != StorageKubeletStore {
		t.Fatalf("journal %+v %v", j, err)
	}
	fs := j.Entries[0].Files
	if len(fs) != 2 || fs[0].Path != file || fs[0].Backup != "" || fs[1].Path != clientStore(root).Current() || fs[1].Staged != storeDir+"/kubelet-client-updated.pem" {
		t.Fatalf("journal files %+v", fs)
	}
	if got, isLink, err := readLink(root, path.Join(txs[0], fs[1].Backup)); !isLink || got != oldTarget {
		t.Errorf("backup of the link: %q %v %v", got, isLink, err)
	}
	// Restore (the agent's rollback after a failed restart) puts the old
	// link back and removes the new file.
	if err := Restore(root, txs[0], j.Entries[0].Name); err != nil {
		t.Fatal(err)
	}
	if target, serial := storeSerial(t, root, ca); target != oldTarget || serial != oldSerial {
		t.Errorf("after Restore: %s %s", target, serial)
	}
	if _, err := os.Lstat(root.HostPath(file)); !os.IsNotExist(err) {
		t.Errorf("the new file stays after Restore: %v", err)
	}
	assertNoStaged(t, dir)
	assertNoUpdatedLink(t, root)
}

func assertNoUpdatedLink(t *testing.T, root *pki.Root) {
	t.Helper()
	if _, err := os.Lstat(root.HostPath(storeDir + "/kubelet-client-updated.pem")); !os.IsNotExist(err) {
		t.Errorf("kubelet-client-updated.pem left behind: %v", err)
	}
}

// TestKubeletStoreCrashAtEveryStep stops Update at every step of its
// transaction, as a crash would. At each, before any repair, -current.pem
// already points at a complete, matching file (the old or the new); after
// Repair, it does too, the journal is finished, and nothing staged is
// left. A crash before the commit keeps the old pair, one after it the
// new.
func TestKubeletStoreCrashAtEveryStep(t *testing.T) {
	for _, tc := range []struct {
		step    string
		nth     int // which occurrence of the step
		renewed bool
	}{
		{"staged", 1, false},
		{"backed-up", 1, false},
		{"committing", 1, true},
		{"renamed-one", 1, true}, // the new file renamed, the link not yet
		{"renamed-one", 2, true},
		{"renamed", 1, true},
		{"synced", 1, true},
		{"verified", 1, true},
	} {
		t.Run(tc.step+"#"+string(rune('0'+tc.nth)), func(t *testing.T) {
			root, ca, dir := node(t)
			oldTarget, oldSerial := storeSerial(t, root, ca)
			certs, key := newClientPair(t, root, ca, now)
			s := clientStore(root)
			s.Hooks = &crashAt{step: tc.step, nth: tc.nth}
			func() {
				defer func() { recover() }()
				s.Update(certs, key, nil, now)
				t.Fatal("Update was not stopped")
			}()
			if target, serial := storeSerial(t, root, ca); serial != oldSerial && serial != serialHex(certs[0]) || target == "" {
				t.Fatalf("after the crash: %s %s", target, serial)
			}
			if len(Interrupted(root, DefaultBackupDir)) != 1 {
				t.Fatal("the interrupted swap is not seen")
			}
			reports := Repair(root, DefaultBackupDir)
			if len(reports) != 1 || reports[0].Err != nil {
				t.Fatalf("repair: %+v", reports)
			}
			target, serial := storeSerial(t, root, ca)
			if want := map[bool]string{false: oldSerial, true: serialHex(certs[0])}[tc.renewed]; serial != want {
				t.Errorf("serial %s after repair, want %s (renewed %v)", serial, want, tc.renewed)
			}
			if !tc.renewed && target != oldTarget {
				t.Errorf("current -> %s, want %s", target, oldTarget)
			}
			if len(Interrupted(root, DefaultBackupDir)) != 0 {
				t.Error("still interrupted after repair")
			}
			if !tc.renewed {
				if m, _ := filepath.Glob(root.HostPath(storeDir + "/kubelet-client-2026-11-28-12-00-00*")); len(m) != 0 {
					t.Errorf("staged file left: %v", m)
				}
			}
			assertNoStaged(t, dir)
			assertNoUpdatedLink(t, root)
		})
	}
}

// crashAt panics at the nth time a step is reached.
type crashAt struct {
	step string
	nth  int
	seen int
}

func (c *crashAt) Step(name string) {
	if name == c.step {
		if c.seen++; c.seen == c.nth {
			panic("crash at " + name)
		}
	}
}

// TestKubeletStoreRollBack: a swap that fails after the renames (the new
// file is changed under it), and one a crash left while rolling back,
// both end with the old link and the new file gone.
func TestKubeletStoreRollBack(t *testing.T) {
	t.Run("read back fails", func(t *testing.T) {
		root, ca, dir := node(t)
		oldTarget, oldSerial := storeSerial(t, root, ca)
		certs, key := newClientPair(t, root, ca, now)
		s := clientStore(root)
		var file string
		s.Hooks = hookFunc(func(step string) {
			if step == "renamed" {
				file = s.Target()
				os.Chmod(root.HostPath(file), 0o644)
			}
		})
		if _, _, err := s.Update(certs, key, nil, now); err == nil || !strings.Contains(err.Error(), "mode 0644") {
			t.Fatalf("Update: %v", err)
		}
		if target, serial := storeSerial(t, root, ca); target != oldTarget || serial != oldSerial {
			t.Errorf("after the rollback: %s %s", target, serial)
		}
		if _, err := os.Lstat(root.HostPath(file)); file == "" || !os.IsNotExist(err) {
			t.Errorf("new file %q stays: %v", file, err)
		}
		assertNoStaged(t, dir)
	})
	t.Run("crash while rolling back", func(t *testing.T) {
		root, ca, dir := node(t)
		oldTarget, oldSerial := storeSerial(t, root, ca)
		certs, key := newClientPair(t, root, ca, now)
		s := clientStore(root)
		s.Hooks = &crashAt{step: "renamed", nth: 1}
		func() {
			defer func() { recover() }()
			s.Update(certs, key, nil, now)
		}()
		tx := Interrupted(root, DefaultBackupDir)
		if len(tx) != 1 {
			t.Fatalf("interrupted %v", tx)
		}
		j, err := loadJournal(root, tx[0])
		if err != nil {
			t.Fatal(err)
		}
		j.save(stateRollingBack)
		if r := Repair(root, DefaultBackupDir); len(r) != 1 || r[0].Err != nil || r[0].Action != "rolled back" {
			t.Fatalf("repair: %+v", r)
		}
		if target, serial := storeSerial(t, root, ca); target != oldTarget || serial != oldSerial {
			t.Errorf("after the rollback: %s %s", target, serial)
		}
		if m, _ := filepath.Glob(root.HostPath(storeDir + "/kubelet-client-2026-11-28-12-00-00*")); len(m) != 0 {
			t.Errorf("new file stays: %v", m)
		}
		assertNoStaged(t, dir)
	})
}

// TestRepairLeavesLiveTransactionAlone: the daemon's CSR renewals commit
// without the renewal lock, so a `certagent renew` may run Repair while a
// swap is between two steps. Repair must take it for what it is, a live
// transaction and not a crash: leave it alone, and let it complete.
func TestRepairLeavesLiveTransactionAlone(t *testing.T) {
	for _, step := range []string{"staged", "backed-up", "committing", "renamed-one", "renamed"} {
		t.Run(step, func(t *testing.T) {
			root, ca, _ := node(t)
			certs, key := newClientPair(t, root, ca, now)
			s := clientStore(root)
			var reports []RepairReport
			s.Hooks = hookFunc(func(name string) {
				if name == step {
					reports = append(reports, Repair(root, DefaultBackupDir)...)
				}
			})
			file, _, err := s.Update(certs, key, nil, now)
			if err != nil || len(reports) != 0 {
				t.Fatalf("Update: %v; Repair during it: %+v", err, reports)
			}
			if target, serial := storeSerial(t, root, ca); target != file || serial != serialHex(certs[0]) {
				t.Errorf("current -> %s (%s), want %s", target, serial, file)
			}
			if n := Interrupted(root, DefaultBackupDir); len(n) != 0 {
				t.Errorf("interrupted: %v", n)
			}
		})
	}
}
