package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// openRegular opens a resolved node path for reading and returns the raw
// descriptor (the caller closes it) and its fstat. The kernel resolves
// it inside the root (openat2 with RESOLVE_IN_ROOT: an absolute link
// restarts at the root, ".." stops there), so a directory swapped for a
// link after Resolve cannot send the read to the host. The file is first
// opened as a bare reference (O_PATH), which does nothing to a device or
// FIFO; only a regular file is then opened for reading, through that very
// reference (/proc/self/fd), so nothing swapped in meanwhile is opened:
// the reference pins the inode, so the second open reaches the file the
// fstat saw. Where openat2 or /proc is missing it falls back to a checked
// open by path that refuses a swapped file. Raw descriptors, not os.File:
// a scan opens thousands of files, and os.File adds an fcntl and a poller
// registration to each.
func (r *Root) openRegular(resolved string) (int, *unix.Stat_t, error) {
	rootfd, done, err := r.rootFD()
	if err != nil {
		return -1, nil, fmt.Errorf("open root %s: %w", r.dir, err)
	}
	defer done()
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	pfd, err := unix.Openat2(rootfd, rel(resolved), how)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		return r.openByPath(resolved)
	}
	if err != nil {
		return -1, nil, &fs.PathError{Op: "open", Path: resolved, Err: err}
	}
	defer unix.Close(pfd)
	st := new(unix.Stat_t)
	if err := unix.Fstat(pfd, st); err != nil { // fstat works on an O_PATH descriptor
		return -1, nil, &fs.PathError{Op: "stat", Path: resolved, Err: err}
	}
	if err := regular(resolved, statMode(st)); err != nil {
		return -1, nil, err
	}
	if beforeOpen != nil {
		beforeOpen(r.HostPath(resolved))
	}
	// O_NONBLOCK: belt and braces; the reference is a regular file.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) { // no /proc here
			return r.openByPath(resolved)
		}
		return -1, nil, &fs.PathError{Op: "open", Path: resolved, Err: err}
	}
	return fd, st, nil
}

// openByPath is the fallback: lstat decides the type before any open, and
// the open must reach the same regular file.
func (r *Root) openByPath(resolved string) (int, *unix.Stat_t, error) {
	host := r.HostPath(resolved)
	lst := new(unix.Stat_t)
	if err := unix.Lstat(host, lst); err != nil {
		return -1, nil, &fs.PathError{Op: "lstat", Path: resolved, Err: err}
	}
	if err := regular(resolved, statMode(lst)); err != nil {
		return -1, nil, err
	}
	if beforeOpen != nil {
		beforeOpen(host)
	}
	fd, err := unix.Open(host, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, nil, &fs.PathError{Op: "open", Path: resolved, Err: err}
	}
	st := new(unix.Stat_t)
	err = unix.Fstat(fd, st)
	if err != nil {
		err = &fs.PathError{Op: "stat", Path: resolved, Err: err}
	} else if err = regular(resolved, statMode(st)); err == nil && (st.Dev != lst.Dev || st.Ino != lst.Ino) {
		err = fmt.Errorf("%s: replaced between its check and its open; not read", resolved)
	}
	if err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	return fd, st, nil
}

// statMode converts a stat's mode to an fs.FileMode (type and permissions).
func statMode(st *unix.Stat_t) fs.FileMode {
	m := fs.FileMode(st.Mode & 0o777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFIFO:
		m |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		m |= fs.ModeSocket
	case unix.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		m |= fs.ModeDevice
	default:
		m |= fs.ModeIrregular
	}
	return m
}

// FileStat identifies one version of a file: device, inode, size,
// modification and change times (nanoseconds). A file rewritten in place
// keeps its inode but gets a new change time, which no one can set back;
// a file replaced by rename has a new inode.
type FileStat struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64
}

func fileStat(st *unix.Stat_t) FileStat {
	return FileStat{Dev: uint64(st.Dev), Ino: st.Ino, Size: st.Size,
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
}

// StatResolved returns the identity of a resolved node path without
// opening it (a link in its last component is not followed: its own
// identity is returned). It is for caches that decide whether a file
// changed: a file whose identity equals the one ReadResolvedFile returned
// earlier is that very version of that file.
func (r *Root) StatResolved(resolved string) (FileStat, error) {
	rootfd, done, err := r.rootFD()
	if err != nil {
		return FileStat{}, fmt.Errorf("open root %s: %w", r.dir, err)
	}
	defer done()
	var st unix.Stat_t
	if err := unix.Fstatat(rootfd, rel(resolved), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return FileStat{}, &fs.PathError{Op: "stat", Path: resolved, Err: err}
	}
	return fileStat(&st), nil
}

// rootFD is the root directory opened once (O_PATH) for every read.
type rootFD struct {
	once sync.Once
	f    *os.File
	err  error
}

// rootFD returns a descriptor of the root directory and a function to call
// when done with it: the shared one when the Root has one, else a fresh
// one closed by done.
func (r *Root) rootFD() (fd int, done func(), err error) {
	if r.fd == nil {
		fd, err := unix.Open(r.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		return fd, func() { unix.Close(fd) }, err
	}
	r.fd.once.Do(func() {
		var fd int
		if fd, r.fd.err = unix.Open(r.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); r.fd.err == nil {
			r.fd.f = os.NewFile(uintptr(fd), r.dir)
		}
	})
	if r.fd.err != nil {
		return -1, nil, r.fd.err
	}
	// Fd keeps the file (and so the descriptor) alive while in use.
	return int(r.fd.f.Fd()), func() { runtime.KeepAlive(r.fd.f) }, nil
}
