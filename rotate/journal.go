package rotate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/certagent/certagent/rotate/pki"
)

// Journal states. A transaction moves staging -> committing -> done, or
// to rolling-back -> rolled-back when it fails after the first rename.
const (
	stateStaging     = "staging"
	stateCommitting  = "committing"
	stateRollingBack = "rolling-back"
	stateDone        = "done"
	stateRolledBack  = "rolled-back"
	stateAborted     = "aborted"
)

// BackupPrefix starts the name of every transaction's directory below the
// backup directory: certagent-backup-<UTC timestamp>.
const BackupPrefix = "certagent-backup-"

const journalName = "journal.json"

// journal is the durable record of one transaction, kept in its backup
// directory. All paths are node paths, except Backup which is relative to
// the backup directory.
type journal struct {
	State   string         `json:"state"`
	Entries []journalEntry `json:"entries"`

	dir  string // node path of the backup directory
	root *pki.Root
}

type journalEntry struct {
	Name    string        `json:"name"`
	Storage Storage       `json:"storage"`
	User    string        `json:"user,omitempty"`
	Files   []journalFile `json:"files"`
	// Dropped entries failed before the commit and were never renamed.
	Dropped bool `json:"dropped,omitempty"`
	// RolledBack entries were restored from the backup.
	RolledBack bool `json:"rolledBack,omitempty"`
}

type journalFile struct {
	Path   string      `json:"path"`
	Staged string      `json:"staged,omitempty"`
	Backup string      `json:"backup"`
	Mode   fs.FileMode `json:"mode"`
	UID    int         `json:"uid"`
	GID    int         `json:"gid"`
}

// save writes the journal atomically and durably.
func (j *journal) save(state string) error {
	j.State = state
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := j.root.WriteFile(path.Join(j.dir, journalName), data, 0o600, os.Geteuid(), os.Getegid()); err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	return nil
}

func loadJournal(root *pki.Root, dir string) (*journal, error) {
	f, err := root.ReadFile(path.Join(dir, journalName))
	if err != nil {
		return nil, err
	}
	j := &journal{dir: dir, root: root}
	if err := json.Unmarshal(f.Data, j); err != nil {
		return nil, fmt.Errorf("journal %s: %w", dir, err)
	}
	return j, nil
}

// Interrupted lists the transactions below backupDir that a crash left
// unfinished, for reporting without repairing.
func Interrupted(root *pki.Root, backupDir string) []string {
	return transactionsIn(root, backupDir, unfinished)
}

// transactionsIn lists the transactions below backupDir whose journal's
// state passes keep.
func transactionsIn(root *pki.Root, backupDir string, keep func(state string) bool) []string {
	var out []string
	for _, dir := range backupDirs(root, backupDir) {
		if j, err := loadJournal(root, dir); err == nil && keep(j.State) {
			out = append(out, dir)
		}
	}
	return out
}

// restorable reports whether a finished transaction holds old files that
// are not on disk any more: it completed, and an entry it committed was
// not rolled back (by the transaction itself or by Restore).
func (j *journal) restorable() bool {
	if j.State != stateDone {
		return false
	}
	for _, e := range j.Entries {
		if !e.Dropped && !e.RolledBack {
			return true
		}
	}
	return false
}

// Mixed lists the transactions below backupDir that a crash left while
// renaming files into place or back: until Repair runs, a key and its
// certificate there may come from different renewals. (One interrupted
// while staging never touched the live files.)
func Mixed(root *pki.Root, backupDir string) []string {
	return transactionsIn(root, backupDir, func(state string) bool { return state == stateCommitting || state == stateRollingBack })
}

func unfinished(state string) bool {
	return state == stateStaging || state == stateCommitting || state == stateRollingBack
}

// backupDirs returns the transaction directories, oldest first.
func backupDirs(root *pki.Root, backupDir string) []string {
	entries, err := root.ReadDir(backupDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), BackupPrefix) {
			out = append(out, path.Join(backupDir, e.Name()))
		}
	}
	sort.Strings(out)
	return out
}

// RepairReport says what Repair did to one interrupted transaction.
type RepairReport struct {
	Dir    string
	Action string // "rolled forward", "rolled back", "discarded staged files"
	Err    error
}

// Repair finishes or undoes every transaction a crash interrupted, so that
// no key/cert pair is left mixed: one that crashed while staging loses its
// staged files (the originals were never touched); one that crashed while
// committing is rolled forward (every staged file was verified and synced
// before the first rename) and each pair is checked, falling back to the
// backup if one does not match; one that crashed while rolling back is
// rolled back. A transaction still running, in this process or another
// (its backup directory is locked while it runs), is left alone: the
// daemon's CSR renewals commit without the renewal lock. Callers hold the
// renewal lock.
func Repair(root *pki.Root, backupDir string) []RepairReport {
	var out []RepairReport
	for _, dir := range backupDirs(root, backupDir) {
		if r, ok := repairOne(root, dir); ok {
			out = append(out, r)
		}
	}
	return out
}

// repairOne repairs the transaction in dir if a crash left it unfinished,
// and reports whether it did. A transaction still running (its directory
// locked) is not a crash: it is left alone.
func repairOne(root *pki.Root, dir string) (RepairReport, bool) {
	unlock, ok := lockTx(root, dir)
	if !ok {
		return RepairReport{}, false
	}
	defer unlock()
	j, err := loadJournal(root, dir)
	if err != nil || !unfinished(j.State) {
		return RepairReport{}, false
	}
	r := RepairReport{Dir: dir}
	switch j.State {
	case stateStaging:
		r.Action = "discarded staged files"
		j.discardStaged()
		r.Err = j.save(stateAborted)
	case stateCommitting:
		r.Action = "rolled forward"
		r.Err = j.rollForward()
	case stateRollingBack:
		r.Action = "rolled back"
		r.Err = j.rollBack(nil)
	}
	return r, true
}

// discardStaged removes staged files, including ones created before their
// names reached the journal (renameio names them "." + base + digits).
func (j *journal) discardStaged() {
	for _, e := range j.Entries {
		for _, f := range e.Files {
			if f.Staged != "" {
				j.root.Remove(f.Staged)
			}
			removeStrays(j.root, f.Path)
		}
	}
}

// removeStrays removes files staged for final whose names never reached
// the journal: pki's ".<name>.certagent-tmp-<hex>", and the
// ".<name><digits>" that versions before it staged with.
func removeStrays(root *pki.Root, final string) {
	d, name, err := root.OpenParent(final)
	if err != nil {
		return
	}
	defer d.Close()
	entries, err := d.ReadDir()
	if err != nil {
		return
	}
	old := "." + name
	for _, e := range entries {
		n := e.Name()
		rest, isOld := strings.CutPrefix(n, old)
		if pki.IsStaged(n, name) || (isOld && rest != "" && strings.Trim(rest, "0123456789") == "") {
			d.Remove(n)
		}
	}
}

func (j *journal) rollForward() error {
	for _, e := range j.Entries {
		if e.Dropped {
			continue
		}
		for _, f := range e.Files {
			if f.Staged == "" {
				continue
			}
			// Rename syncs the directory.
			if err := j.root.Rename(f.Staged, f.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("roll forward %s: %w", f.Path, err)
			}
		}
	}
	// Every pair must match now; one that does not goes back to the backup.
	var bad map[string]bool
	for _, e := range j.Entries {
		if !e.Dropped && !j.entryConsistent(e) {
			if bad == nil {
				bad = map[string]bool{}
			}
			bad[e.Name] = true
		}
	}
	if bad != nil {
		return j.rollBack(bad)
	}
	return j.save(stateDone)
}

// entryConsistent checks that an entry's files hold a certificate and the
// key that belongs to it, as its storage's codec reads them.
func (j *journal) entryConsistent(e journalEntry) bool {
	c, err := codecOf(e.Storage)
	if err != nil {
		return false
	}
	files := map[string][]byte{}
	var paths []string
	for _, f := range e.Files {
		data, err := j.root.ReadFile(f.Path)
		if err != nil {
			return false
		}
		files[f.Path] = data.Data
		paths = append(paths, f.Path)
	}
	d, err := c.decode(c.fromJournal(Target{Name: e.Name, Storage: e.Storage, User: e.User}, paths), files)
	return err == nil && (keyless(e.Storage) || pki.KeyMatches(d.cert, d.key))
}

// rollBack restores entries from the backup: those named in only, or all
// that were not dropped when only is nil.
func (j *journal) rollBack(only map[string]bool) error {
	if err := j.save(stateRollingBack); err != nil {
		return err
	}
	var firstErr error
	for i, e := range j.Entries {
		if e.Dropped || (only != nil && !only[e.Name]) {
			continue
		}
		// Undone in the reverse order of the commit: a link goes back
		// before the file it pointed to goes.
		for _, f := range slices.Backward(e.Files) {
			if err := j.restore(f); err != nil && firstErr == nil {
				firstErr = err
			}
			if f.Staged != "" {
				j.root.Remove(f.Staged)
			}
		}
		j.Entries[i].RolledBack = true
	}
	if firstErr != nil {
		return firstErr
	}
	if only != nil {
		return j.save(stateDone)
	}
	return j.save(stateRolledBack)
}

// restore puts a backed-up file back in place atomically and durably: a
// file with its mode and owner, a link as a link; a file that was not
// there before the transaction (no backup) is removed.
func (j *journal) restore(f journalFile) error {
	if f.Backup == "" {
		return removeDurable(j.root, f.Path)
	}
	b := path.Join(j.dir, f.Backup)
	if target, isLink, err := readLink(j.root, b); err != nil || isLink {
		if err != nil {
			return fmt.Errorf("restore %s: %w", f.Path, err)
		}
		return j.root.WriteLink(f.Path, target)
	}
	data, err := j.root.ReadFile(b)
	if err != nil {
		return fmt.Errorf("restore %s: %w", f.Path, err)
	}
	return writeDurable(j.root, f.Path, data.Data, f.Mode, f.UID, f.GID)
}

// readLink returns the target of nodePath when it is a symbolic link.
func readLink(root *pki.Root, nodePath string) (target string, isLink bool, err error) {
	d, name, err := root.OpenParent(nodePath)
	if err != nil {
		return "", false, err
	}
	defer d.Close()
	fi, err := d.Lstat(name)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return "", false, err
	}
	target, err = d.ReadLink(name)
	return target, err == nil, err
}

// removeDurable unlinks nodePath (a link itself) and syncs its directory.
func removeDurable(root *pki.Root, nodePath string) error {
	d, name, err := root.OpenParent(nodePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Remove(name); err != nil {
		return err
	}
	return d.Sync()
}

// Restore puts the old files of the named entries of a finished
// transaction back from its backup (after a restart showed that the new
// certificate does not work), atomically and durably.
func Restore(root *pki.Root, dir string, names ...string) error {
	j, err := loadJournal(root, dir)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	found := false
	for i, e := range j.Entries {
		if e.Dropped || !want[e.Name] {
			continue
		}
		found = true
		for _, f := range slices.Backward(e.Files) {
			if err := j.restore(f); err != nil {
				return err
			}
		}
		j.Entries[i].RolledBack = true
	}
	if !found {
		return fmt.Errorf("restore: no entry for %v in %s", names, dir)
	}
	return j.save(j.State)
}
