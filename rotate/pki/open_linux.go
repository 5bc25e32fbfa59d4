package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// openRegular opens a resolved node path for reading. The kernel resolves
// it inside the root (openat2 with RESOLVE_IN_ROOT: an absolute link
// restarts at the root, ".." stops there), so a directory swapped for a
// link after Resolve cannot send the read to the host. The file is first
// opened as a bare reference (O_PATH), which does nothing to a device or
// FIFO; only a regular file is then opened for reading, through that very
// reference (/proc/self/fd), so nothing swapped in meanwhile is opened.
// Where openat2 or /proc is missing it falls back to a checked open by
// path that refuses a swapped file.
func (r *Root) openRegular(resolved string) (*os.File, fs.FileInfo, error) {
	rootfd, done, err := r.rootFD()
	if err != nil {
		return nil, nil, fmt.Errorf("open root %s: %w", r.dir, err)
	}
	defer done()
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	pfd, err := unix.Openat2(rootfd, rel(resolved), how)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		return r.openByPath(resolved)
	}
	if err != nil {
		return nil, nil, pathError(resolved, &fs.PathError{Op: "open", Path: resolved, Err: err})
	}
	ref := os.NewFile(uintptr(pfd), resolved) // owns pfd
	defer ref.Close()
	checked, err := ref.Stat() // fstat works on an O_PATH descriptor
	if err != nil {
		return nil, nil, pathError(resolved, err)
	}
	if err := regular(resolved, checked); err != nil {
		return nil, nil, err
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
		return nil, nil, pathError(resolved, &fs.PathError{Op: "open", Path: resolved, Err: err})
	}
	f := os.NewFile(uintptr(fd), r.HostPath(resolved))
	fi, err := f.Stat()
	if err == nil && !os.SameFile(checked, fi) {
		err = fmt.Errorf("%s: replaced between its check and its open; not read", resolved)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// openByPath is the fallback: lstat decides the type before any open, and
// the open must reach the same regular file.
func (r *Root) openByPath(resolved string) (*os.File, fs.FileInfo, error) {
	host := r.HostPath(resolved)
	lfi, err := os.Lstat(host)
	if err != nil {
		return nil, nil, pathError(resolved, err)
	}
	if err := regular(resolved, lfi); err != nil {
		return nil, nil, err
	}
	if beforeOpen != nil {
		beforeOpen(host)
	}
	fd, err := os.OpenFile(host, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, pathError(resolved, err)
	}
	fi, err := fd.Stat()
	if err == nil {
		if err = regular(resolved, fi); err == nil && !os.SameFile(lfi, fi) {
			err = fmt.Errorf("%s: replaced between its check and its open; not read", resolved)
		}
	}
	if err != nil {
		fd.Close()
		return nil, nil, pathError(resolved, err)
	}
	return fd, fi, nil
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
