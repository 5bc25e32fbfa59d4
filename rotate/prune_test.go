package rotate

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
)

// hookFunc turns a function into Hooks.
type hookFunc func(step string)

func (f hookFunc) Step(step string) { f(step) }

// TestPruneKeepsCompletedBackups: one renewal completes, then failed
// attempts, each in its own backup directory, are pruned with keep=1. The
// completed backup must survive every one of them and still restore the
// files it holds: failed attempts hold nothing to restore.
func TestPruneKeepsCompletedBackups(t *testing.T) {
	const attempts = 5
	crt, key := "/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/pki/apiserver.key"
	for _, tc := range []struct {
		name string
		// state is the journal the failed attempt leaves ("" for none).
		state string
		// fail makes one failed attempt at time at, in its own directory.
		fail func(t *testing.T, root *pki.Root, ca *LocalCA, at time.Time)
	}{
		{"issued for another key", stateAborted, func(t *testing.T, root *pki.Root, ca *LocalCA, at time.Time) {
			tg := Target{Name: "apiserver", Storage: StoragePair, CertPath: crt, KeyPath: key, CA: ca}
			cur, err := load(root, tg)
			if err != nil {
				t.Fatal(err)
			}
			k1, _ := NewKey(cur.cert.PublicKey, "")
			k2, _ := NewKey(cur.cert.PublicKey, "")
			cert, err := ca.Reissue(cur.cert, k1.Public(), at, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Install(context.Background(), Options{Root: root, Now: at, KeepBackups: 1}, tg, []*x509.Certificate{cert}, k2); err == nil {
				t.Fatal("a certificate for another key was installed")
			}
		}},
		{"crash while staging, repaired", stateAborted, func(t *testing.T, root *pki.Root, ca *LocalCA, at time.Time) {
			func() {
				defer func() { recover() }()
				renewAt(root, ca, at, panicAt("staged"))
			}()
			if r := Repair(root, DefaultBackupDir); len(r) != 1 || r[0].Err != nil {
				t.Fatalf("repair: %+v", r)
			}
			Prune(root, DefaultBackupDir, 1)
		}},
		{"rename failed", stateRolledBack, func(t *testing.T, root *pki.Root, ca *LocalCA, at time.Time) {
			steal := hookFunc(func(step string) {
				if step == "committing" { // the staged files vanish before the rename
					m, _ := filepath.Glob(root.HostPath("/etc/kubernetes/pki/.apiserver.*"))
					for _, f := range m {
						os.Remove(f)
					}
				}
			})
			if _, err := renewAt(root, ca, at, steal); err == nil {
				t.Fatal("renewal went through without its staged files")
			}
		}},
		{"changed after the rename, all rolled back", stateDone, func(t *testing.T, root *pki.Root, ca *LocalCA, at time.Time) {
			loosen := hookFunc(func(step string) {
				if step == "renamed" {
					os.Chmod(root.HostPath(key), 0o644)
				}
			})
			if res, _ := renewAt(root, ca, at, loosen); res[0].Err == nil {
				t.Fatal("renewal went through with a loose key")
			}
		}},
		{"crash before the journal", "", func(t *testing.T, root *pki.Root, ca *LocalCA, at time.Time) {
			os.MkdirAll(root.HostPath(filepath.Join(DefaultBackupDir, BackupPrefix+at.UTC().Format("20060102T150405.000000000Z"))), 0o700)
			Prune(root, DefaultBackupDir, 1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Alone, the failed attempt leaves the shape it stands for.
			root, ca, _ := node(t)
			tc.fail(t, root, ca, now)
			if dirs := backupDirs(root, DefaultBackupDir); len(dirs) != 1 || journalState(root, dirs[0]) != tc.state {
				t.Fatalf("a failed attempt left %v, want one with journal %q", dirs, tc.state)
			}

			root, ca, _ = node(t)
			before := map[string][]byte{}
			for _, p := range []string{crt, key} {
				f, err := root.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				before[p] = f.Data
			}
			res, err := renewAt(root, ca, now, nil)
			if err != nil || res[0].Err != nil {
				t.Fatalf("the first renewal: %v %+v", err, res)
			}
			completed := res[0].Backup
			for i := 1; i <= attempts; i++ {
				tc.fail(t, root, ca, now.Add(time.Duration(i)*time.Minute))
			}
			dirs := backupDirs(root, DefaultBackupDir)
			if len(dirs) != 1 || dirs[0] != completed {
				t.Fatalf("backups left: %v, want only the completed %s", dirs, completed)
			}
			if err := Restore(root, completed, "apiserver"); err != nil {
				t.Fatalf("restore: %v", err)
			}
			for p, data := range before {
				if f, err := root.ReadFile(p); err != nil || !bytes.Equal(f.Data, data) {
					t.Errorf("%s not restored: %v", p, err)
				}
			}
		})
	}
}

// journalState is a backup directory's journal state, "" without one.
func journalState(root *pki.Root, dir string) string {
	j, err := loadJournal(root, dir)
	if err != nil {
		return ""
	}
	return j.State
}

// TestPruneOrder: completed backups take the room first, newest first;
// failed attempts fill only what is left, newest first.
func TestPruneOrder(t *testing.T) {
	done := journalEntry{Name: "a"}
	for _, tc := range []struct {
		name string
		dirs []*journal // nil: no journal; oldest first
		keep int
		want []int // indexes of the directories that stay
	}{
		{"room left for failures", []*journal{{State: stateDone, Entries: []journalEntry{done}}, nil, {State: stateAborted}, nil, {State: stateRolledBack}}, 3, []int{0, 3, 4}},
		{"completed push out failures", []*journal{{State: stateAborted}, {State: stateDone, Entries: []journalEntry{done}}, {State: stateDone, Entries: []journalEntry{done}}, nil}, 2, []int{1, 2}},
		{"newest completed kept", []*journal{{State: stateDone, Entries: []journalEntry{done}}, {State: stateDone, Entries: []journalEntry{done}}, {State: stateAborted}}, 1, []int{1}},
		{"restored or dropped entries hold nothing", []*journal{{State: stateDone, Entries: []journalEntry{done}},
			{State: stateDone, Entries: []journalEntry{{Name: "a", RolledBack: true}}}, {State: stateDone, Entries: []journalEntry{{Name: "a", Dropped: true}}}}, 1, []int{0}},
		{"unfinished never removed", []*journal{{State: stateCommitting}, {State: stateStaging}, {State: stateDone, Entries: []journalEntry{done}}, {State: stateRollingBack}}, 1, []int{0, 1, 2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, err := pki.NewRoot(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for i, j := range tc.dirs {
				d := filepath.Join(DefaultBackupDir, BackupPrefix+now.Add(time.Duration(i)*time.Second).UTC().Format("20060102T150405.000000000Z"))
				names = append(names, d)
				if err := os.MkdirAll(root.HostPath(d), 0o700); err != nil {
					t.Fatal(err)
				}
				if j != nil {
					j.dir, j.root = d, root
					if err := j.save(j.State); err != nil {
						t.Fatal(err)
					}
				}
			}
			Prune(root, DefaultBackupDir, tc.keep)
			var want []string
			for _, i := range tc.want {
				want = append(want, names[i])
			}
			if got := backupDirs(root, DefaultBackupDir); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("kept %v, want %v", got, want)
			}
		})
	}
}

// renewAt renews the apiserver pair at time at, keeping one backup.
func renewAt(root *pki.Root, ca *LocalCA, at time.Time, hooks Hooks) ([]Result, error) {
	tg := Target{Name: "apiserver", Storage: StoragePair, CertPath: "/etc/kubernetes/pki/apiserver.crt", KeyPath: "/etc/kubernetes/pki/apiserver.key", CA: ca}
	return Renew(context.Background(), Options{Root: root, Now: at, KeepBackups: 1, Hooks: hooks}, []Target{tg})
}

// TestPruneNeverRemovesUnfinished: a transaction a crash left half done is
// kept whatever keep says, and whatever finished after it: Repair needs it.
func TestPruneNeverRemovesUnfinished(t *testing.T) {
	root, ca, _ := node(t)
	func() {
		defer func() { recover() }()
		renewAt(root, ca, now, panicAt("renamed-one"))
	}()
	crashed := Interrupted(root, DefaultBackupDir)
	if len(crashed) != 1 {
		t.Fatalf("interrupted: %v", crashed)
	}
	Prune(root, DefaultBackupDir, 1)
	os.MkdirAll(root.HostPath(filepath.Join(DefaultBackupDir, BackupPrefix+"20991231T000000.000000000Z")), 0o700)
	Prune(root, DefaultBackupDir, 1)
	if got := Interrupted(root, DefaultBackupDir); len(got) != 1 || got[0] != crashed[0] {
		t.Fatalf("unfinished transaction pruned: %v", got)
	}
}

// TestPruneSparesATransactionBeingMade: another process prunes (keep 0)
// while a transaction has just made its backup directory and not yet
// locked it. The directory is not Prune's to take: the renewal completes
// and its backup is there; a directory left by a crash at that point is
// removed by the next Prune.
func TestPruneSparesATransactionBeingMade(t *testing.T) {
	root, ca, _ := node(t)
	res, err := renewAt(root, ca, now, hookFunc(func(step string) {
		if step == "backup-dir-made" {
			Prune(root, DefaultBackupDir, 0)
		}
	}))
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("renewal with a concurrent prune: %v %+v", err, res)
	}
	if got := backupDirs(root, DefaultBackupDir); len(got) != 1 {
		t.Fatalf("backups after the renewal: %v, want its own", got)
	}
	func() {
		defer func() { recover() }()
		renewAt(root, ca, now.Add(time.Hour), panicAt("backup-dir-made"))
	}()
	dir := filepath.Join(root.Dir(), DefaultBackupDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	left := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".making-") {
			left++
			Prune(root, DefaultBackupDir, 1) // too young: it may be about to be locked
			if _, err := os.Stat(filepath.Join(dir, e.Name())); err != nil {
				t.Errorf("a directory made a moment ago was removed: %v", err)
			}
			old := time.Now().Add(-2 * time.Minute)
			os.Chtimes(filepath.Join(dir, e.Name()), old, old)
		}
	}
	if left != 1 {
		t.Fatalf("%d directories left by the crash, want 1", left)
	}
	Prune(root, DefaultBackupDir, 1)
	if entries, err = os.ReadDir(dir); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".making-") {
			t.Errorf("%s left behind by a crash before the transaction began", e.Name())
		}
	}
}

// TestBackupDirNeverShared: two renewals at the same instant (a clock
// that did not move, or went back to a crashed attempt's time) each get
// a backup directory of their own, and each restores what it replaced.
func TestBackupDirNeverShared(t *testing.T) {
	root, ca, _ := node(t)
	tg := Target{Name: "apiserver", Storage: StoragePair, CertPath: "/etc/kubernetes/pki/apiserver.crt", KeyPath: "/etc/kubernetes/pki/apiserver.key", CA: ca}
	renew := func() ([]Result, error) {
		return Renew(context.Background(), Options{Root: root, Now: now, KeepBackups: 5}, []Target{tg})
	}
	first, err := renew()
	if err != nil || first[0].Err != nil {
		t.Fatalf("%v %+v", err, first)
	}
	second, err := renew()
	if err != nil || second[0].Err != nil {
		t.Fatalf("%v %+v", err, second)
	}
	if first[0].Backup == second[0].Backup {
		t.Fatalf("both renewals wrote into %s", first[0].Backup)
	}
	for _, r := range []Result{first[0], second[0]} {
		j, err := loadJournal(root, r.Backup)
		if err != nil || !j.restorable() {
			t.Errorf("%s: %v", r.Backup, err)
		}
	}
}
