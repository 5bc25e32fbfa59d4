package rotate

import (
	"crypto"
	"crypto/x509"
	"errors"
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
	files  []newFile      // in commit order
	staged []*pki.Pending // by index in files
	entry  int            // index in the journal
	err    error
}

// transaction commits prepared renewals with a journal in dir.
type transaction struct {
	now   time.Time // the renewal's "now": new certificates must be valid then
	root  *pki.Root
	j     *journal
	hooks Hooks
	// together: one target dropped before the commit aborts them all.
	together bool
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
		for _, f := range p.files {
			// A link's staged name is known now: recorded before it exists,
			// a crash while staging cannot leave it unknown.
			e.Files = append(e.Files, journalFile{Path: f.path, Staged: f.staged, Backup: path.Join("files", f.path), Mode: f.mode, UID: f.uid, GID: f.gid})
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
	if tx.together && live < len(ps) {
		tx.cleanupAll(ps)
		if err := j.save(stateAborted); err != nil {
			return err
		}
		return errDropped
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
		for i, f := range p.files {
			pf := p.staged[i]
			// What a link points to was renamed before it: make that
			// durable first, so the link never points at nothing.
			if err := syncFirst(f, pf); err != nil && failed == nil {
				failed = err
			}
			if err := pf.Commit(); err != nil && failed == nil {
				failed = fmt.Errorf("rename %s: %w", f.path, err)
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
			if pf != nil {
				pf.Cleanup()
			}
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

// syncFirst syncs the directory of a link before it is renamed into
// place.
func syncFirst(f newFile, pf *pki.Pending) error {
	if !f.link {
		return nil
	}
	if err := pf.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", pf.Dir(), err)
	}
	return nil
}

func (tx *transaction) stageOne(p *prepared) error {
	p.staged = make([]*pki.Pending, len(p.files))
	e := &tx.j.Entries[p.entry]
	for i, f := range p.files {
		var pf *pki.Pending
		var err error
		if f.link {
			pf, err = tx.root.StageLink(f.path, path.Base(f.staged), string(f.data))
		} else {
			pf, err = tx.root.Stage(f.path, f.data, f.mode, f.uid, f.gid)
		}
		if err != nil {
			return err
		}
		p.staged[i] = pf
		e.Files[i].Staged = pf.Name()
	}
	onDisk, err := tx.readStaged(p)
	if err != nil {
		return err
	}
	cert, bundled, key, err := parseRendered(p.t, onDisk)
	if err != nil {
		return fmt.Errorf("staged %s: %w", p.t.Name, err)
	}
	return verify(p.t, p.cur.cert, cert, bundled, key, tx.now)
}

// readStaged reads the staged files of p as they are on disk, by final
// path. A staged link must hold its target and point at a file of the
// same renewal; it reads as that file.
func (tx *transaction) readStaged(p *prepared) (map[string][]byte, error) {
	onDisk := map[string][]byte{}
	for i, f := range p.files {
		pf := p.staged[i]
		if f.link {
			continue
		}
		data, err := tx.root.ReadFile(pf.Name())
		if err != nil {
			return nil, fmt.Errorf("read back %s: %w", pf.Name(), err)
		}
		onDisk[f.path] = data.Data
	}
	for i, f := range p.files {
		if !f.link {
			continue
		}
		target, isLink, err := readLink(tx.root, p.staged[i].Name())
		data, ok := onDisk[target]
		if err != nil || !isLink || target != string(f.data) || !ok {
			return nil, fmt.Errorf("read back %s: not a link to a file of this renewal (%q, %v)", p.staged[i].Name(), target, err)
		}
		onDisk[f.path] = data
	}
	return onDisk, nil
}

func (tx *transaction) backup(p *prepared) error {
	e := &tx.j.Entries[p.entry]
	for i, f := range e.Files {
		dst := path.Join(tx.j.dir, f.Backup)
		d, err := tx.root.MkdirAll(path.Dir(dst), 0o700)
		if err != nil {
			return fmt.Errorf("backup %s: %w", f.Path, err)
		}
		absent, err := tx.backupOne(d, path.Base(dst), p.cur.files[f.Path], p.files[i])
		d.Close()
		if err != nil {
			return fmt.Errorf("backup %s: %w", f.Path, err)
		}
		if absent {
			e.Files[i].Backup = "" // nothing to restore: Repair removes it
		}
	}
	return nil
}

// backupOne copies what a new file replaces into the backup directory d
// as name: the current file as read (old), or, for a link and a file
// that was not read, whatever is at its path now: a link as a link, a
// file by its contents. It reports when nothing is there.
func (tx *transaction) backupOne(d *pki.Dir, name string, old *pki.File, f newFile) (absent bool, err error) {
	if old == nil || f.link {
		target, isLink, err := readLink(tx.root, f.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return true, nil
		case err != nil:
			return false, err
		case isLink:
			return false, d.Symlink(target, name)
		}
		if old, err = tx.root.ReadFile(f.path); err != nil {
			return false, err
		}
	}
	return false, d.WriteFile(name, old.Data, 0o600, os.Geteuid(), os.Getegid())
}

func (tx *transaction) reverify(p *prepared) error {
	files := map[string][]byte{}
	for _, f := range p.files {
		got, err := tx.root.ReadFile(f.path)
		if err != nil {
			return fmt.Errorf("read back %s: %w", f.path, err)
		}
		if got.Mode != f.mode {
			return fmt.Errorf("%s: mode %04o, want %04o", f.path, got.Mode, f.mode)
		}
		files[f.path] = got.Data
	}
	cert, bundled, key, err := parseRendered(p.t, files)
	if err != nil {
		return fmt.Errorf("read back %s: %w", p.t.Name, err)
	}
	if (cert == nil) != (p.cert == nil) || cert != nil && !cert.Equal(p.cert) {
		return fmt.Errorf("read back %s: not the certificate written", p.t.Name)
	}
	return verify(p.t, p.cur.cert, cert, bundled, key, tx.now)
}

// drop takes a target out of the transaction before anything was renamed.
func (tx *transaction) drop(p *prepared) {
	for _, pf := range p.staged {
		if pf != nil {
			pf.Cleanup()
		}
	}
	tx.j.Entries[p.entry].Dropped = true
}

func (tx *transaction) cleanupAll(ps []*prepared) {
	for _, p := range ps {
		tx.drop(p)
	}
	tx.j.save(stateAborted)
}
