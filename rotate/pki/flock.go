package pki

import (
	"errors"
	"syscall"
)

// TryLock takes an exclusive flock on the directory without waiting. ok
// is false when another open file holds it, in this process or another.
// unlock releases it; so does the end of the process, however it ends.
func (d *Dir) TryLock() (unlock func(), ok bool, err error) {
	f, err := d.d.Open(".")
	if err != nil {
		return nil, false, pathError(d.Path, unwrapPath(err))
	}
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); {
	case errors.Is(err, syscall.EWOULDBLOCK):
		f.Close()
		return nil, false, nil
	case err != nil:
		f.Close()
		return nil, false, pathError(d.Path, err)
	}
	return func() { f.Close() }, true, nil
}
