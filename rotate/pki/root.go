// Package pki is certagent's shared model of a node's public key
// infrastructure: confined path resolution, reading and parsing of PEM, DER
// and kubeconfig files, key matching and issuer lookup. Both the agent's
// inventory and the renewal code import it; it imports nothing of ours.
package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultMaxFileSize caps how much of one file is read. Certificates and
// kubeconfigs are a few kilobytes; anything larger is refused unread.
const DefaultMaxFileSize = 1 << 20

// maxSymlinks bounds how many links one resolution follows, as the kernel's
// own limit does, so that loops end with an error.
const maxSymlinks = 40

// ErrSymlinkLoop is returned when resolving a path follows too many links.
var ErrSymlinkLoop = errors.New("too many levels of symbolic links (a symlink loop?)")

// ErrTooLarge is returned for a file over the read limit.
var ErrTooLarge = errors.New("file too large")

// Root makes a host directory act as "/" for every path certagent touches:
// configured paths, default locations, paths that kubeconfigs reference and
// absolute symlink targets. Paths given to and returned by its methods are
// node paths (absolute, as the node sees them); HostPath maps them to the
// host. The zero value is not usable; use NewRoot.
type Root struct {
	dir string
	// MaxFileSize caps ReadFile; 0 means DefaultMaxFileSize.
	MaxFileSize int64
	// fd is the root directory held open for reads (shared by copies of
	// the Root); nil opens it per read.
	fd *rootFD
}

// NewRoot returns a Root for dir ("" or "/" for the host itself).
func NewRoot(dir string) (*Root, error) {
	if dir == "" {
		dir = "/"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("root %s: not a directory", dir)
	}
	return &Root{dir: abs, fd: &rootFD{}}, nil
}

// Dir returns the host directory that acts as "/".
func (r *Root) Dir() string { return r.dir }

// IsHost reports whether the root is the host's own "/".
func (r *Root) IsHost() bool { return r.dir == "/" }

// HostPath maps a node path to the host path, without following links.
func (r *Root) HostPath(nodePath string) string {
	return filepath.Join(r.dir, path.Clean("/"+nodePath))
}

// NodePath maps a host path below the root back to a node path.
func (r *Root) NodePath(hostPath string) (string, bool) {
	if r.dir == "/" {
		return path.Clean(hostPath), true
	}
	rel, err := filepath.Rel(r.dir, hostPath)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return path.Clean("/" + filepath.ToSlash(rel)), true
}

// Resolve follows every symbolic link in nodePath as if the root were "/"
// and returns the node path it leads to. ".." never climbs above the root
// and absolute link targets restart at the root, so the result always lies
// inside it. A missing component yields an error wrapping fs.ErrNotExist;
// a chain of more than 40 links yields ErrSymlinkLoop.
func (r *Root) Resolve(nodePath string) (string, error) {
	resolved := "/"
	rest := splitPath(nodePath)
	links := 0
	var lastLink string
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, c)
		fi, err := os.Lstat(r.HostPath(next))
		if err != nil {
			if lastLink != "" && errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("dangling symlink %s: %s does not exist: %w", lastLink, next, fs.ErrNotExist)
			}
			return "", pathError(next, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		links++
		if links > maxSymlinks {
			return "", fmt.Errorf("%s: %w", nodePath, ErrSymlinkLoop)
		}
		target, err := os.Readlink(r.HostPath(next))
		if err != nil {
			return "", pathError(next, err)
		}
		lastLink = next
		if path.IsAbs(target) {
			resolved = "/"
		}
		rest = append(splitPath(target), rest...)
	}
	return resolved, nil
}

func splitPath(p string) []string {
	return strings.Split(filepath.ToSlash(p), "/")
}

// pathError reports err for a node path without the host prefix.
func pathError(nodePath string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &fs.PathError{Op: pe.Op, Path: nodePath, Err: pe.Err}
	}
	return err
}

// File is the content of a file read through a Root.
type File struct {
	// Path is the node path asked for; Resolved is where its links lead.
	Path, Resolved string
	Data           []byte
	Mode           fs.FileMode
	UID, GID       int
	// Stat identifies the version of the file that was read.
	Stat FileStat
}

// ReadFile resolves nodePath and reads it. Directories, devices, FIFOs,
// sockets and files over the size limit are refused before they are read,
// and all but oversized files before they are even opened.
func (r *Root) ReadFile(nodePath string) (*File, error) {
	resolved, err := r.Resolve(nodePath)
	if err != nil {
		return nil, err
	}
	f, err := r.readResolved(resolved)
	if err != nil {
		return nil, err
	}
	f.Path = nodePath
	return f, nil
}

// ReadResolvedFile reads a node path that the caller already resolved (from
// Resolve, or a directory listing of a resolved directory) without walking
// it again. A link that appeared in its last component since is refused.
func (r *Root) ReadResolvedFile(resolved string) (*File, error) {
	return r.readResolved(resolved)
}

func (r *Root) readResolved(resolved string) (*File, error) {
	fd, st, err := r.openRegular(resolved)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	limit := r.MaxFileSize
	if limit <= 0 {
		limit = DefaultMaxFileSize
	}
	if st.Size > limit {
		return nil, fmt.Errorf("%s: %w: %d bytes, over the %d-byte limit", resolved, ErrTooLarge, st.Size, limit)
	}
	// One read of the size fstat gave, plus one byte to notice growth.
	buf, err := readAll(fd, make([]byte, 0, st.Size+1), limit)
	if err != nil {
		return nil, pathError(resolved, err)
	}
	if int64(len(buf)) > limit {
		return nil, fmt.Errorf("%s: %w: grew past the %d-byte limit while read", resolved, ErrTooLarge, limit)
	}
	return &File{Path: resolved, Resolved: resolved, Data: buf, Mode: statMode(st).Perm(),
		UID: int(st.Uid), GID: int(st.Gid), Stat: fileStat(st)}, nil
}

// readAll reads fd to its end, or to one byte past limit, appending to buf.
func readAll(fd int, buf []byte, limit int64) ([]byte, error) {
	for int64(len(buf)) <= limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Err: err}
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	return buf, nil
}

// beforeOpen, when set by a test, runs between the lstat and the open.
var beforeOpen func(hostPath string)

// regular refuses anything but a regular file, naming what it is.
func regular(nodePath string, m fs.FileMode) error {
	t := m.Type()
	switch {
	case t.IsRegular():
		return nil
	case t&fs.ModeDir != 0:
		return fmt.Errorf("%s: is a directory, expected a file", nodePath)
	}
	return fmt.Errorf("%s: not a regular file (%s)", nodePath, FileType(t))
}

// FileType names a file's type for messages: "a regular file", "a FIFO",
// "a character device"...
func FileType(m fs.FileMode) string {
	t := m.Type()
	if t.IsRegular() {
		return "a regular file"
	}
	if s, ok := fileTypes[t]; ok {
		return s
	}
	return "type " + t.String()
}

var fileTypes = map[fs.FileMode]string{fs.ModeDir: "a directory", fs.ModeNamedPipe: "a FIFO", fs.ModeSocket: "a socket",
	fs.ModeSymlink: "a symbolic link", fs.ModeDevice | fs.ModeCharDevice: "a character device", fs.ModeDevice: "a block device"}

// ReadHostFile reads a host path (already mapped through a Root) with the
// same size limit as ReadFile.
func ReadHostFile(p string) ([]byte, error) {
	r := &Root{dir: "/"}
	f, err := r.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return f.Data, nil
}
