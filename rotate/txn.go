package rotate

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"io/fs"
	"os"
	"path"
	"time"

	"github.com/certagent/certagent/rotate/pki"
)

// writeDurable replaces a node path atomically and durably inside the
// root (see pki.Root.WriteFile).
func writeDurable(root *pki.Root, nodePath string, data []byte, mode fs.FileMode, uid, gid int) error {
	return root.WriteFile(nodePath, data, mode, uid, gid)
}

// prepared is a target with its new certificate rendered, ready to commit.
type prepared struct {
	t      Target
	cur    *current
	cert   *x509.Certificate
	key    crypto.Signer
	files  map[string][]byte
	staged map[string]*pki.Pending
	entry  int // index in the journal
	err    error
}

// modeFor: keys and anything holding a key end up 0600 whatever the old
// mode was; certificates are 0644.
func modeFor(t Target, p string) fs.FileMode {
	if t.Storage == StoragePair && p == t.CertPath {
		return 0o644
	}
	return 0o600
}

// transaction commits prepared renewals with a journal in dir.
type transaction struct {
	now   time.Time // the renewal's "now": new certificates must be valid then
	root  *pki.Root
	j     *journal
	hooks Hooks
}

// Hooks lets tests stop a transaction at a named step. Step names:
// "staged", "backed-up", "committing", "renamed-one", "renamed", "synced",
// "verified".
type Hooks interface {
	Step(name string)
}

func (tx *transaction) step(name string) {
	if tx.hooks != nil {
		tx.hooks.Step(name)
	}
}

// commit runs the transaction over ps. It returns the error that failed
// the whole transaction; per-target failures before the first rename are
// recorded in each prepared.err and only drop that target.
func (tx *transaction) commit(ps []*prepared) error {
	j := tx.j
	for i, p := range ps {
		e := journalEntry{Name: p.t.Name, Storage: p.t.Storage, User: p.t.User}
		for _, fp := range p.t.Files() {
			old := p.cur.files[fp]
			e.Files = append(e.Files, journalFile{Path: fp, Backup: path.Join("files", fp), Mode: modeFor(p.t, fp), UID: old.UID, GID: old.GID})
		}
		j.Entries = append(j.Entries, e)
		p.entry = i
	}
	if err := j.save(stateStaging); err != nil {
		return err
	}
	// 1. Stage beside the old files, 2. verify what was staged, read back.
	for _, p := range ps {
		p.err = tx.stageOne(p)
		if p.err != nil {
			tx.drop(p)
		}
	}
	if err := j.save(stateStaging); err != nil {
		tx.cleanupAll(ps)
		return err
	}
	tx.step("staged")
	// 3. Back up the originals.
	for _, p := range ps {
		if p.err == nil {
			if p.err = tx.backup(p); p.err != nil {
				tx.drop(p)
			}
		}
	}
	live := 0
	for _, p := range ps {
		if p.err == nil {
			live++
		}
	}
	if live == 0 {
		return j.save(stateAborted)
	}
	tx.step("backed-up")
	if err := j.save(stateCommitting); err != nil {
		tx.cleanupAll(ps)
		return err
	}
	tx.step("committing")
	// 4. Rename into place, 5. sync the directories.
	// Each rename goes through the directory staged into, held open since.
	dirs := map[string]*pki.Pending{}
	var failed error
	for _, p := range ps {
		if p.err != nil {
			continue
		}
		for _, fp := range p.t.Files() {
			pf := p.staged[fp]
			if err := pf.Commit(); err != nil && failed == nil {
				failed = fmt.Errorf("rename %s: %w", fp, err)
			}
			dirs[pf.Dir()] = pf
			tx.step("renamed-one")
		}
	}
	tx.step("renamed")
	for d, pf := range dirs {
		if err := pf.Sync(); err != nil && failed == nil {
			failed = fmt.Errorf("sync %s: %w", d, err)
		}
	}
	for _, p := range ps {
		for _, pf := range p.staged {
			pf.Cleanup()
		}
	}
	tx.step("synced")
	// 6. Read back and verify again.
	bad := map[string]bool{}
	for _, p := range ps {
		if p.err != nil {
			continue
		}
		if err := tx.reverify(p); err != nil {
			p.err = err
			bad[p.t.Name] = true
		}
	}
	tx.step("verified")
	if failed != nil {
		for _, p := range ps {
			if p.err == nil {
				p.err = fmt.Errorf("rolled back: %w", failed)
			}
		}
		if err := j.rollBack(nil); err != nil {
			return fmt.Errorf("%v; rollback: %w", failed, err)
		}
		return failed
	}
	if len(bad) > 0 {
		return j.rollBack(bad)
	}
	return j.save(stateDone)
}

func (tx *transaction) stageOne(p *prepared) error {
	p.staged = map[string]*pki.Pending{}
	e := &tx.j.Entries[p.entry]
	for i, fp := range p.t.Files() {
		f := e.Files[i]
		pf, err := tx.root.Stage(fp, p.files[fp], f.Mode, f.UID, f.GID)
		if err != nil {
			return err
		}
		p.staged[fp] = pf
		e.Files[i].Staged = pf.Name()
	}
	// Verify the staged bytes as they are on disk.
	onDisk := map[string][]byte{}
	for fp, pf := range p.staged {
		f, err := tx.root.ReadFile(pf.Name())
		if err != nil {
			return fmt.Errorf("read back %s: %w", pf.Name(), err)
		}
		onDisk[fp] = f.Data
	}
	cert, bundled, key, err := parseRendered(p.t, onDisk)
	if err != nil {
		return fmt.Errorf("staged %s: %w", p.t.Name, err)
	}
	return verify(p.t, p.cur.cert, cert, bundled, key, tx.now)
}

func (tx *transaction) backup(p *prepared) error {
	e := tx.j.Entries[p.entry]
	for _, f := range e.Files {
		old := p.cur.files[f.Path]
		dst := path.Join(tx.j.dir, f.Backup)
		d, err := tx.root.MkdirAll(path.Dir(dst), 0o700)
		if err != nil {
			return fmt.Errorf("backup %s: %w", f.Path, err)
		}
		err = d.WriteFile(path.Base(dst), old.Data, 0o600, os.Geteuid(), os.Getegid())
		d.Close()
		if err != nil {
			return fmt.Errorf("backup %s: %w", f.Path, err)
		}
	}
	return nil
}

func (tx *transaction) reverify(p *prepared) error {
	files := map[string][]byte{}
	for _, fp := range p.t.Files() {
		f, err := tx.root.ReadFile(fp)
		if err != nil {
			return fmt.Errorf("read back %s: %w", fp, err)
		}
		if want := modeFor(p.t, fp); f.Mode != want {
			return fmt.Errorf("%s: mode %04o, want %04o", fp, f.Mode, want)
		}
		files[fp] = f.Data
	}
	cert, bundled, key, err := parseRendered(p.t, files)
	if err != nil {
		return fmt.Errorf("read back %s: %w", p.t.Name, err)
	}
	if !cert.Equal(p.cert) {
		return fmt.Errorf("read back %s: not the certificate written", p.t.Name)
	}
	return verify(p.t, p.cur.cert, cert, bundled, key, tx.now)
}

// drop takes a target out of the transaction before anything was renamed.
func (tx *transaction) drop(p *prepared) {
	for _, pf := range p.staged {
		pf.Cleanup()
	}
	tx.j.Entries[p.entry].Dropped = true
}

func (tx *transaction) cleanupAll(ps []*prepared) {
	for _, p := range ps {
		tx.drop(p)
	}
	tx.j.save(stateAborted)
}
