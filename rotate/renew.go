package rotate

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/certagent/certagent/rotate/pki"
)

// DefaultBackupDir is where transactions keep their backups and journals,
// below the root: /etc/kubernetes/tmp/certagent-backup-<timestamp>/.
const DefaultBackupDir = "/etc/kubernetes/tmp"

// Options configure Renew.
type Options struct {
	Root *pki.Root
	// BackupDir holds the transactions' backup directories (node path).
	BackupDir string
	// KeepBackups is how many backup directories Prune keeps (>= 1):
	// completed ones first, failed attempts only in the room left.
	KeepBackups int
	Policy      Policy
	Now         time.Time
	Hooks       Hooks
}

// Result is the outcome of renewing one target.
type Result struct {
	Name      string
	OldSerial string
	NewSerial string
	NotAfter  time.Time
	// Backup is the transaction directory holding the old files.
	Backup string
	Err    error
}

// Renew re-signs every target with its local CA (a SelfSigned target gets
// a new self-signed pair instead) and commits them in one
// transaction. Keys are generated in parallel. A target that fails before
// the commit is left untouched and reported; the others go ahead.
func Renew(ctx context.Context, opts Options, targets []Target) ([]Result, error) {
	opts = opts.withDefaults()
	ps := make([]*prepared, len(targets))
	// One goroutine per target: key generation dominates and its time
	// varies a lot (RSA prime search), so letting the scheduler spread all
	// of them over the CPUs balances better than fixed-size batches.
	var wg sync.WaitGroup
	for i, t := range targets {
		ps[i] = &prepared{t: t}
		wg.Add(1)
		go func(p *prepared) {
			defer wg.Done()
			if ctx.Err() != nil {
				p.err = ctx.Err()
				return
			}
			p.err = prepare(opts, p)
		}(ps[i])
	}
	wg.Wait()
	var ready []*prepared
	for _, p := range ps {
		if p.err == nil {
			ready = append(ready, p)
		}
	}
	var txErr error
	var dir string
	if len(ready) > 0 && ctx.Err() == nil {
		if dir, txErr = runTx(opts, ready); txErr != nil {
			for _, p := range ready {
				if p.err == nil {
					p.err = txErr
				}
			}
		}
		Prune(opts.Root, opts.BackupDir, opts.KeepBackups)
	}
	out := make([]Result, len(ps))
	for i, p := range ps {
		r := Result{Name: p.t.Name, Err: p.err, Backup: dir}
		if p.cur != nil {
			r.OldSerial = serialHex(p.cur.cert)
		}
		if p.cert != nil && p.err == nil {
			r.NewSerial, r.NotAfter = serialHex(p.cert), p.cert.NotAfter
		}
		out[i] = r
	}
	return out, txErr
}

// Install writes a certificate issued elsewhere (through a CSR) and its
// key over a target, with the same transaction as Renew. Only certs[0] is
// written.
func Install(ctx context.Context, opts Options, t Target, certs []*x509.Certificate, key crypto.Signer) (Result, error) {
	cur, err := load(opts.Root, t)
	if err != nil {
		r := Result{Name: t.Name, NewSerial: serialHex(certs[0]), NotAfter: certs[0].NotAfter, Err: err}
		return r, err
	}
	return install(opts, t, cur, certs[:1], key)
}

// install writes certs and key over t, whose files hold cur now, in a
// transaction of its own.
func install(opts Options, t Target, cur *current, certs []*x509.Certificate, key crypto.Signer) (Result, error) {
	opts = opts.withDefaults()
	r := Result{Name: t.Name, NewSerial: serialHex(certs[0]), NotAfter: certs[0].NotAfter}
	if cur.cert != nil {
		r.OldSerial = serialHex(cur.cert)
	}
	files, err := render(t, cur, certs, key)
	if err != nil {
		r.Err = err
		return r, err
	}
	p := &prepared{t: t, cur: cur, cert: certs[0], key: key, files: files}
	r.Backup, err = runTx(opts, []*prepared{p})
	if err == nil {
		err = p.err
	}
	Prune(opts.Root, opts.BackupDir, opts.KeepBackups)
	r.Err = err
	return r, err
}

// withDefaults fills in the backup directory, how many backups to keep
// and the time.
func (opts Options) withDefaults() Options {
	if opts.BackupDir == "" {
		opts.BackupDir = DefaultBackupDir
	}
	if opts.KeepBackups < 1 {
		opts.KeepBackups = 5
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	return opts
}

// prepare loads a target, makes its new key and certificate and renders
// the files, without writing anything.
func prepare(opts Options, p *prepared) error {
	t := p.t
	if t.SelfSigned {
		return prepareSelfSigned(opts, p)
	}
	if t.CA == nil {
		return fmt.Errorf("%s: %w", t.Name, ErrExternalCA)
	}
	cur, err := load(opts.Root, t)
	if err != nil {
		return err
	}
	p.cur = cur
	if !t.CA.Issued(cur.cert) {
		return fmt.Errorf("%w %s", ErrNotIssuedBy, t.CA.Name)
	}
	key := cur.key
	if !opts.Policy.ReuseKey {
		if key, err = NewKey(cur.cert.PublicKey, opts.Policy.KeyAlgorithm); err != nil {
			return err
		}
	}
	cert, err := t.CA.Reissue(cur.cert, key.Public(), opts.Now, opts.Policy.Validity)
	if err != nil {
		return err
	}
	files, err := render(t, cur, []*x509.Certificate{cert}, key)
	if err != nil {
		return err
	}
	p.cert, p.key, p.files = cert, key, files
	return nil
}

// Prune keeps the newest keep backup directories and removes the rest, in
// this order of worth: a completed transaction (journal "done" with an
// entry that was committed and not rolled back) holds old files that
// Restore can put back, so it is kept first; a failed attempt (aborted,
// rolled back, done with every entry rolled back, or left without a
// journal by a crash) holds nothing that is not on disk already, so it
// only fills what room the completed ones leave and is removed first.
// Failed attempts, however many, never push out a completed backup.
// Unfinished transactions and unreadable journals are never removed:
// Repair needs them. Callers hold the lock.
func Prune(root *pki.Root, backupDir string, keep int) {
	var completed, failed []string
	for _, d := range backupDirs(root, backupDir) {
		unlock, ok := lockTx(root, d)
		if !ok {
			continue // a live transaction: it has no journal yet
		}
		unlock()
		j, err := loadJournal(root, d)
		switch {
		case err == nil && unfinished(j.State):
		case err == nil && j.restorable():
			completed = append(completed, d)
		case err == nil || errors.Is(err, os.ErrNotExist):
			failed = append(failed, d)
		}
	}
	var drop []string
	if n := len(completed) - keep; n > 0 {
		drop, completed = completed[:n], completed[n:]
	}
	if n := len(failed) - (keep - len(completed)); n > 0 {
		drop = append(drop, failed[:n]...)
	}
	for _, d := range drop {
		removeBackup(root, d)
	}
	removeUnmade(root, backupDir)
}

// removeUnmade removes the directories of transactions that crashed
// before they began (made by mkBackupDir, never renamed into place):
// they hold nothing. One made in the last minute may be between its
// mkdir and its lock: it stays, as does one that is locked.
func removeUnmade(root *pki.Root, backupDir string) {
	d, err := root.OpenDir(backupDir)
	if err != nil {
		return
	}
	entries, err := d.ReadDir()
	d.Close()
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), ".making-") {
			continue
		}
		dir := path.Join(backupDir, e.Name())
		if info, err := e.Info(); err != nil || time.Since(info.ModTime()) < time.Minute {
			continue
		}
		if unlock, ok := lockTx(root, dir); ok {
			unlock()
			removeBackup(root, dir)
		}
	}
}

// runTx commits ps in a transaction and returns its backup directory
// (under opts.BackupDir, named after opts.Now). The directory is locked
// (flock) while the transaction runs, so that Repair and Prune, in this
// process or another, leave a live transaction alone; a crash releases
// the lock.
func runTx(opts Options, ps []*prepared) (dir string, err error) {
	return runTxOf(opts, ps, false)
}

// runTxOf is runTx; together makes every target's failure before the
// commit abort the whole transaction.
func runTxOf(opts Options, ps []*prepared, together bool) (dir string, err error) {
	dir, unlock, err := mkBackupDir(opts.Root, opts.BackupDir, opts.Now, opts.Hooks)
	if err != nil {
		return "", err
	}
	defer unlock()
	tx := &transaction{now: opts.Now, root: opts.Root, j: &journal{dir: dir, root: opts.Root}, hooks: opts.Hooks, together: together}
	return dir, tx.commit(ps)
}

// mkBackupDir makes a transaction's backup directory (0700) inside the
// root, locked. It is made under a name that Prune and Repair do not
// list, locked, and only then renamed into place: another process never
// sees it unlocked, so it never takes it for a failed attempt. A name
// already taken (another transaction at the same instant, or one a
// crash left at a clock that went back) gets a suffix: no transaction
// ever writes into another's directory.
func mkBackupDir(root *pki.Root, backupDir string, now time.Time, hooks Hooks) (dir string, unlock func(), err error) {
	name := BackupPrefix + now.UTC().Format("20060102T150405.000000000Z")
	making := path.Join(backupDir, ".making-"+name)
	d, err := root.MkdirAll(making, 0o700)
	if err != nil {
		return "", nil, fmt.Errorf("backup directory: %w", err)
	}
	defer d.Close()
	if err := d.Chmod(0o700); err != nil {
		return "", nil, fmt.Errorf("backup directory: %w", err)
	}
	if hooks != nil {
		hooks.Step("backup-dir-made")
	}
	unlock, ok, err := d.TryLock()
	if err == nil && !ok {
		err = errors.New("in use by another transaction")
	}
	if err != nil {
		return "", nil, fmt.Errorf("backup directory %s: %w", making, err)
	}
	// Not empty when renamed: rename(2) replaces an empty directory but
	// fails on one that is not, so a name already taken is never
	// replaced, and the loop tries the next.
	if err := d.WriteFile("claimed", nil, 0o600, os.Geteuid(), os.Getegid()); err != nil {
		unlock()
		return "", nil, fmt.Errorf("backup directory %s: %w", making, err)
	}
	for i := 0; i < 100; i++ {
		dir = path.Join(backupDir, name)
		if i > 0 {
			dir += fmt.Sprintf("-%d", i)
		}
		if err = root.Rename(making, dir); err == nil {
			return dir, unlock, nil
		}
		if !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			break
		}
	}
	unlock()
	return "", nil, fmt.Errorf("backup directory %s: %w", dir, err)
}

// lockTx locks a transaction's backup directory, unless a live
// transaction holds it (ok false).
func lockTx(root *pki.Root, dir string) (unlock func(), ok bool) {
	d, err := root.OpenDir(dir)
	if err != nil {
		return nil, false
	}
	defer d.Close()
	unlock, ok, err = d.TryLock()
	return unlock, ok && err == nil
}

// removeBackup deletes one backup directory inside the root, links in it
// removed as links.
func removeBackup(root *pki.Root, dir string) {
	d, name, err := root.OpenParent(dir)
	if err != nil {
		return
	}
	defer d.Close()
	d.RemoveAll(name)
}

func serialHex(c *x509.Certificate) string { return strings.ToUpper(c.SerialNumber.Text(16)) }
