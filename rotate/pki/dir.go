package pki

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// Every write certagent makes below a Root goes through a Dir: the
// directory is resolved once with Resolve (links followed as if the root
// were "/"), then opened, and every later operation names one entry of that
// open directory. The kernel never walks the path again, so neither a
// symlink in a parent directory nor a directory swapped after the
// resolution can send a write outside the root. Directories are opened with
// the standard library's os.Root, which itself refuses any path that leaves
// the directory it was opened on.

// ErrNotBelowRoot is returned for a node path whose resolution leaves the
// root; Resolve never produces one, so it marks a bug or a race.
var ErrNotBelowRoot = errors.New("path escapes the root")

// Dir is a directory below a Root, held open. Its methods take the name of
// one entry (no slashes) and never follow a symbolic link in it, except
// ReadLink, which reads one. Close releases it.
type Dir struct {
	// Path is the node path of the directory, links resolved.
	Path string
	d    *os.Root
}

// rel maps a resolved node path to a path relative to the root directory.
func rel(nodePath string) string {
	p := strings.TrimPrefix(path.Clean("/"+nodePath), "/")
	if p == "" {
		return "."
	}
	return p
}

// OpenDir resolves nodePath inside the root and opens the directory it
// names. A missing directory yields an error wrapping fs.ErrNotExist.
func (r *Root) OpenDir(nodePath string) (*Dir, error) {
	resolved, err := r.Resolve(nodePath)
	if err != nil {
		return nil, err
	}
	return r.openResolvedDir(resolved)
}

func (r *Root) openResolvedDir(resolved string) (*Dir, error) {
	top, err := os.OpenRoot(r.dir)
	if err != nil {
		return nil, fmt.Errorf("open root %s: %w", r.dir, err)
	}
	defer top.Close()
	d, err := top.OpenRoot(rel(resolved))
	if err != nil {
		return nil, pathError(resolved, unwrapPath(err))
	}
	return &Dir{Path: resolved, d: d}, nil
}

// unwrapPath keeps the cause of an os.Root error, whose path is relative.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &fs.PathError{Op: pe.Op, Path: pe.Path, Err: pe.Err}
	}
	return err
}

// ReadDir lists the directory at nodePath, resolved inside the root.
func (r *Root) ReadDir(nodePath string) ([]fs.DirEntry, error) {
	d, err := r.OpenDir(nodePath)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.ReadDir()
}

// MkdirAll makes nodePath a directory with its missing parents, each with
// mode perm, and opens it. Existing components may be links; they are
// followed inside the root. An existing directory keeps its mode.
func (r *Root) MkdirAll(nodePath string, perm fs.FileMode) (*Dir, error) {
	cur := "/"
	for _, c := range splitPath(path.Clean("/" + nodePath)) {
		if c == "" {
			continue
		}
		parent, err := r.openResolvedDir(cur)
		if err != nil {
			return nil, err
		}
		err = parent.d.Mkdir(c, perm)
		parent.Close()
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, pathError(path.Join(cur, c), unwrapPath(err))
		}
		// Follow what is there now, link or directory, inside the root.
		if cur, err = r.Resolve(path.Join(cur, c)); err != nil {
			return nil, err
		}
	}
	return r.openResolvedDir(cur)
}

// OpenParent opens the directory that holds nodePath and returns it with
// the base name of nodePath. The base name itself is not resolved: writes
// replace it, whatever it is.
func (r *Root) OpenParent(nodePath string) (*Dir, string, error) {
	clean := path.Clean("/" + nodePath)
	if clean == "/" {
		return nil, "", fmt.Errorf("%s: %w", nodePath, fs.ErrInvalid)
	}
	d, err := r.OpenDir(path.Dir(clean))
	if err != nil {
		return nil, "", err
	}
	return d, path.Base(clean), nil
}

// Close releases the directory.
func (d *Dir) Close() error { return d.d.Close() }

// node is the node path of one entry.
func (d *Dir) node(name string) string { return path.Join(d.Path, name) }

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return fmt.Errorf("%q: not a plain file name: %w", name, fs.ErrInvalid)
	}
	return nil
}

// OpenFile opens one entry with O_NOFOLLOW added: a link in its place is
// an error (ELOOP), never followed.
func (d *Dir) OpenFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	f, err := d.d.OpenFile(name, flag|syscall.O_NOFOLLOW, perm)
	if err != nil {
		return nil, pathError(d.node(name), unwrapPath(err))
	}
	return f, nil
}

// Lstat describes one entry without following a link.
func (d *Dir) Lstat(name string) (fs.FileInfo, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	fi, err := d.d.Lstat(name)
	if err != nil {
		return nil, pathError(d.node(name), unwrapPath(err))
	}
	return fi, nil
}

// ReadDir lists the directory.
func (d *Dir) ReadDir() ([]fs.DirEntry, error) {
	f, err := d.d.Open(".")
	if err != nil {
		return nil, pathError(d.Path, unwrapPath(err))
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// Remove unlinks one entry (a link itself, not its target). A missing
// entry is not an error.
func (d *Dir) Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := d.d.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return pathError(d.node(name), unwrapPath(err))
	}
	return nil
}

// RemoveAll removes one entry and everything below it, without following
// links.
func (d *Dir) RemoveAll(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := d.d.RemoveAll(name); err != nil {
		return pathError(d.node(name), unwrapPath(err))
	}
	return nil
}

// Rename renames one entry of d to another; a link named newName is
// replaced, not followed.
func (d *Dir) Rename(oldName, newName string) error {
	if err := checkName(oldName); err != nil {
		return err
	}
	if err := checkName(newName); err != nil {
		return err
	}
	if err := d.d.Rename(oldName, newName); err != nil {
		return pathError(d.node(newName), unwrapPath(err))
	}
	return nil
}

// Symlink creates a link named name holding target (not interpreted).
func (d *Dir) Symlink(target, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := d.d.Symlink(target, name); err != nil {
		return pathError(d.node(name), unwrapPath(err))
	}
	return nil
}

// ReadLink returns the target of the link named name.
func (d *Dir) ReadLink(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	t, err := d.d.Readlink(name)
	if err != nil {
		return "", pathError(d.node(name), unwrapPath(err))
	}
	return t, nil
}

// Sync makes the directory's entries (renames, unlinks) durable.
func (d *Dir) Sync() error {
	f, err := d.d.Open(".")
	if err != nil {
		return pathError(d.Path, unwrapPath(err))
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return pathError(d.Path, err)
	}
	return nil
}

// Pending is a new file written and synced under a temporary name in its
// directory, waiting to be renamed over its final name.
type Pending struct {
	dir        *Dir
	tmp, final string
	done       bool
	owned      bool // dir was opened for this file; Cleanup closes it
}

// TempPrefix starts the name of every temporary file certagent stages:
// "." + the final name + this + random digits.
const TempPrefix = ".certagent-tmp-"

// Stage writes data to a new file beside name (created exclusively, never
// through a link), with the given mode and owner, and syncs it. The caller
// commits it with Commit or drops it with Cleanup. The Dir must stay open
// until then.
func (d *Dir) Stage(name string, data []byte, mode fs.FileMode, uid, gid int) (*Pending, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	tmp, err := tempName(name)
	if err != nil {
		return nil, err
	}
	f, err := d.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", d.node(name), err)
	}
	p := &Pending{dir: d, tmp: tmp, final: name}
	fail := func(err error) (*Pending, error) {
		f.Close()
		p.Cleanup()
		return nil, fmt.Errorf("stage %s: %w", d.node(name), err)
	}
	if uid != os.Geteuid() || gid != os.Getegid() {
		if err := f.Chown(uid, gid); err != nil {
			return fail(err)
		}
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fail(err)
	}
	return p, nil
}

// tempName is a new temporary name for a file staged beside name.
func tempName(name string) (string, error) {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	return "." + name + TempPrefix + hex.EncodeToString(rnd[:]), nil
}

// Name returns the node path of the staged (temporary) file.
func (p *Pending) Name() string { return p.dir.node(p.tmp) }

// Final returns the node path the file is committed to.
func (p *Pending) Final() string { return p.dir.node(p.final) }

// Commit renames the staged file over its final name. The directory is not
// synced: the caller syncs each directory once after its renames.
func (p *Pending) Commit() error {
	if err := p.dir.Rename(p.tmp, p.final); err != nil {
		return err
	}
	p.done = true
	return nil
}

// Sync makes the rename durable by syncing the directory.
func (p *Pending) Sync() error { return p.dir.Sync() }

// Dir returns the node path of the directory the file is staged in.
func (p *Pending) Dir() string { return p.dir.Path }

// Cleanup removes the staged file unless it was committed, and releases
// the directory when the Pending owns it. Call it once the file is
// committed and synced, or abandoned.
func (p *Pending) Cleanup() {
	if !p.done {
		p.dir.Remove(p.tmp)
		p.done = true
	}
	if p.owned {
		p.dir.Close()
		p.owned = false
	}
}

// Stage opens the directory of nodePath inside the root and stages data
// beside it (see Dir.Stage). The Pending holds the directory open until
// Cleanup, so the later rename lands in the same directory whatever
// happens to the path meanwhile.
func (r *Root) Stage(nodePath string, data []byte, mode fs.FileMode, uid, gid int) (*Pending, error) {
	return r.stageIn(nodePath, func(d *Dir, name string) (*Pending, error) { return d.Stage(name, data, mode, uid, gid) })
}

// stageIn opens the directory of nodePath and stages there with stage;
// the Pending owns the directory.
func (r *Root) stageIn(nodePath string, stage func(d *Dir, name string) (*Pending, error)) (*Pending, error) {
	d, name, err := r.OpenParent(nodePath)
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", nodePath, err)
	}
	p, err := stage(d, name)
	if err != nil {
		d.Close()
		return nil, err
	}
	p.owned = true
	return p, nil
}

// Rename renames oldPath to newPath inside the root; both must lie in the
// same directory once links are resolved. A link at newPath is replaced.
func (r *Root) Rename(oldPath, newPath string) error {
	d, oldName, err := r.OpenParent(oldPath)
	if err != nil {
		return err
	}
	defer d.Close()
	nd, newName, err := r.OpenParent(newPath)
	if err != nil {
		return err
	}
	nd.Close()
	if nd.Path != d.Path {
		return fmt.Errorf("rename %s to %s: not in one directory (%s, %s)", oldPath, newPath, d.Path, nd.Path)
	}
	if err := d.Rename(oldName, newName); err != nil {
		return err
	}
	return d.Sync()
}

// IsStaged reports whether name is a temporary file that Stage made for
// final.
func IsStaged(name, final string) bool {
	rest, ok := strings.CutPrefix(name, "."+final+TempPrefix)
	return ok && len(rest) == 16 && strings.Trim(rest, "0123456789abcdef") == ""
}

// WriteFile replaces nodePath atomically and durably inside the root: the
// parent is resolved and opened once, the data staged beside the old file,
// renamed over it and the directory synced.
func (r *Root) WriteFile(nodePath string, data []byte, mode fs.FileMode, uid, gid int) error {
	d, name, err := r.OpenParent(nodePath)
	if err != nil {
		return fmt.Errorf("write %s: %w", nodePath, err)
	}
	defer d.Close()
	return d.WriteFile(name, data, mode, uid, gid)
}

// WriteFile replaces one entry atomically and durably.
func (d *Dir) WriteFile(name string, data []byte, mode fs.FileMode, uid, gid int) error {
	p, err := d.Stage(name, data, mode, uid, gid)
	if err != nil {
		return err
	}
	defer p.Cleanup()
	if err := p.Commit(); err != nil {
		return fmt.Errorf("replace %s: %w", d.node(name), err)
	}
	return d.Sync()
}

// Remove unlinks nodePath (not what a link there points to) inside the
// root. A missing file is not an error.
func (r *Root) Remove(nodePath string) error {
	d, name, err := r.OpenParent(nodePath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	defer d.Close()
	return d.Remove(name)
}

// Chmod sets the mode of the directory itself.
func (d *Dir) Chmod(mode fs.FileMode) error {
	f, err := d.d.Open(".")
	if err != nil {
		return pathError(d.Path, unwrapPath(err))
	}
	defer f.Close()
	if err := f.Chmod(mode); err != nil {
		return pathError(d.Path, unwrapPath(err))
	}
	return nil
}

// HostDir makes nodePath a directory inside the root (missing parts with
// mode perm, links followed inside the root) and returns the host path of
// where it resolved to. For code that must hand a host path to another
// library (a unix socket, the agent's state files): the path holds no link
// that leaves the root at the time of the call.
func (r *Root) HostDir(nodePath string, perm fs.FileMode) (string, error) {
	d, err := r.MkdirAll(nodePath, perm)
	if err != nil {
		return "", err
	}
	d.Close()
	return r.HostPath(d.Path), nil
}

// HostFile returns the host path of nodePath with its directory resolved
// inside the root; the last component is not followed.
func (r *Root) HostFile(nodePath string) (string, error) {
	d, name, err := r.OpenParent(nodePath)
	if err != nil {
		return "", err
	}
	d.Close()
	return r.HostPath(path.Join(d.Path, name)), nil
}

// Writers says who other than the trusted owners could have written
// nodePath: the file (its links resolved inside the root) or any directory
// above it, up to the root. Trusted are root and the user and group
// certagent runs as. It returns "" when nobody else could, or a sentence
// naming the first place that others can write, for example
// "/etc/kubernetes/pki is writable by group 1000". A file that cannot be
// examined counts as writable by others. seen, when not nil, caches the
// verdict per directory across calls (not safe for concurrent use).
func (r *Root) Writers(nodePath string, seen map[string]string) string {
	resolved, err := r.Resolve(nodePath)
	if err != nil {
		return fmt.Sprintf("%s cannot be examined: %v", nodePath, err)
	}
	if why := r.writable(resolved); why != "" {
		return why
	}
	for d := path.Dir(resolved); ; d = path.Dir(d) {
		why, ok := seen[d]
		if !ok {
			why = r.writable(d)
			if seen != nil {
				seen[d] = why
			}
		}
		if why != "" {
			return why
		}
		if d == "/" {
			return ""
		}
	}
}

// writable examines one resolved node path (not followed: it holds no
// links once resolved).
func (r *Root) writable(resolved string) string {
	fi, err := os.Lstat(r.HostPath(resolved))
	if err != nil {
		return fmt.Sprintf("%s cannot be examined: %v", resolved, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Sprintf("%s: no owner information", resolved)
	}
	perm := fi.Mode().Perm()
	switch uid, gid := int(st.Uid), int(st.Gid); {
	case perm&0o002 != 0:
		return fmt.Sprintf("%s is writable by everyone (mode %04o)", resolved, perm)
	case uid != 0 && uid != os.Geteuid() && perm&0o200 != 0:
		return fmt.Sprintf("%s is owned and writable by uid %d", resolved, uid)
	case gid != 0 && gid != os.Getegid() && perm&0o020 != 0:
		return fmt.Sprintf("%s is writable by group %d (mode %04o)", resolved, gid, perm)
	}
	return ""
}
