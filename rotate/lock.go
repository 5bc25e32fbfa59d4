package rotate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/certagent/certagent/rotate/pki"
)

// LockName is the lock file below the backup directory that serialises
// every certagent that renews under the same root.
const LockName = "certagent.lock"

// ErrLocked is returned when the lock could not be taken in time.
var ErrLocked = errors.New("another renewal is in progress")

// Lock is a held renewal lock; Unlock releases it.
type Lock struct{ f *os.File }

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	return l.f.Close()
}

// Acquire takes the renewal lock for root, waiting until ctx is done. It
// also waits while a kubeadm process works on the same root (kubeadm has
// no lock of its own, so certagent looks for the process). The lock dies
// with the process, so a crash never leaves it held.
func Acquire(ctx context.Context, root *pki.Root, backupDir string) (*Lock, error) {
	return AcquireNotify(ctx, root, backupDir, nil)
}

// AcquireNotify is Acquire that, when it has to wait, calls waiting once
// with what it waits for ("<lock path>, held by pid N" or "kubeadm (pid
// N), working on the same PKI").
func AcquireNotify(ctx context.Context, root *pki.Root, backupDir string, waiting func(what string)) (*Lock, error) {
	d, err := root.MkdirAll(backupDir, 0o700)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	p := path.Join(d.Path, LockName)
	// O_NOFOLLOW: a link planted as the lock file is refused, never
	// followed (truncating its target). The directory is held open, so the
	// lock lands in it whatever happens to its path.
	f, err := d.OpenFile(LockName, os.O_RDWR|os.O_CREATE, 0o600)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("lock %s: not a regular file", p)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	notify := func(what string) {
		if waiting != nil {
			waiting(what)
			waiting = nil
		}
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			pid, busy := kubeadmRunning(root)
			if !busy {
				f.Truncate(0)
				f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
				return &Lock{f: f}, nil
			}
			syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
			notify(fmt.Sprintf("kubeadm (pid %d), working on the same PKI", pid))
			if ctx.Err() != nil {
				f.Close()
				return nil, fmt.Errorf("%w: kubeadm (pid %d) is working on the same PKI", ErrLocked, pid)
			}
		} else if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", p, err)
		} else if ctx.Err() != nil {
			holder := lockHolder(f)
			f.Close()
			return nil, fmt.Errorf("%w: %s is held by pid %s", ErrLocked, p, holder)
		} else {
			notify(fmt.Sprintf("%s, held by pid %s", p, lockHolder(f)))
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// lockHolder is the pid the holder wrote into the lock file.
func lockHolder(f *os.File) string {
	holder := make([]byte, 32)
	n, _ := f.ReadAt(holder, 0)
	if h := strings.TrimSpace(string(holder[:n])); h != "" {
		return h
	}
	return "unknown"
}

// kubeadmRunning looks for a kubeadm process whose --rootfs (or "/" when
// it has none) is root.
func kubeadmRunning(root *pki.Root) (int, bool) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, c := range procs {
		data, err := os.ReadFile(c)
		if err != nil || len(data) == 0 {
			continue
		}
		args := bytes.Split(bytes.TrimRight(data, "\x00"), []byte{0})
		if path.Base(string(args[0])) != "kubeadm" {
			continue
		}
		rootfs := "/"
		for i, a := range args {
			s := string(a)
			if v, ok := strings.CutPrefix(s, "--rootfs="); ok {
				rootfs = v
			} else if s == "--rootfs" && i+1 < len(args) {
				rootfs = string(args[i+1])
			}
		}
		if abs, err := filepath.Abs(rootfs); err == nil && filepath.Clean(abs) == root.Dir() {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(c)))
			return pid, true
		}
	}
	return 0, false
}
