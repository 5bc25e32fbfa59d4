// Package watch tells the agent when something changed on disk. It
// watches directories, not files, because atomic renames and the kubelet's
// symlink swaps replace inodes; a directory that does not exist yet is
// waited for by watching its nearest existing ancestor. Bursts of events
// are debounced into one notification.
package watch

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/utils/clock"
)

// Watcher watches a set of directories and signals changes on C.
type Watcher struct {
	// C receives one value per debounced burst of changes.
	C <-chan struct{}

	c        chan struct{}
	fs       *fsnotify.Watcher
	clock    clock.WithTicker
	debounce time.Duration

	mu      sync.Mutex      // guards the fields below
	want    []string        // host directories asked for
	watched map[string]bool // host directories with a watch
	errs    []string        // recent watch errors, newest last
	last    time.Time       // when the latest event was received
	done    chan struct{}

	// observed, when set (tests only), is called from the loop after each
	// event has been fully handled: watches moved and the debounce timer armed.
	observed func(fsnotify.Event)
}

// New starts a watcher. Debounce is how long it waits after an event for
// more before it signals.
func New(clk clock.WithTicker, debounce time.Duration) (*Watcher, error) {
	return newWatcher(clk, debounce, nil)
}

// newWatcher is New with a hook the tests use to wait for an event to be
// handled instead of waiting for a quiet period.
func newWatcher(clk clock.WithTicker, debounce time.Duration, observed func(fsnotify.Event)) (*Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	c := make(chan struct{}, 1)
	w := &Watcher{C: c, c: c, fs: fw, clock: clk, debounce: debounce, watched: map[string]bool{}, done: make(chan struct{}), observed: observed}
	go w.loop()
	return w, nil
}

// Close stops the watcher.
func (w *Watcher) Close() error {
	close(w.done)
	return w.fs.Close()
}

// Set replaces the directories to watch (host paths). Missing ones are
// covered by a watch on their nearest existing ancestor.
func (w *Watcher) Set(dirs []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want = append([]string(nil), dirs...)
	w.syncLocked()
}

// LastEvent is when the latest file event was received (zero: none yet).
// A scan that began after it saw every change signalled so far.
func (w *Watcher) LastEvent() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// Errors returns the most recent watch errors.
func (w *Watcher) Errors() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.errs...)
}

// Watched returns the directories being watched, sorted.
func (w *Watcher) Watched() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for d := range w.watched {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// syncLocked adds and removes watches so that every wanted directory, or
// its nearest existing ancestor, is watched. A directory created between
// looking and adding the watch on its parent sends no event, so it looks
// again until nothing changes. w.mu is held.
func (w *Watcher) syncLocked() {
	for i := 0; i < 16 && w.syncOnceLocked(); i++ {
	}
}

// syncOnceLocked does one round and reports whether it added a watch.
func (w *Watcher) syncOnceLocked() bool {
	need := map[string]bool{}
	for _, d := range w.want {
		for p := filepath.Clean(d); ; p = filepath.Dir(p) {
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				need[p] = true
				break
			} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
				w.noteLocked(err)
			}
			if p == filepath.Dir(p) {
				break
			}
		}
	}
	for d := range w.watched {
		if !need[d] {
			w.fs.Remove(d)
			delete(w.watched, d)
		}
	}
	added := false
	for d := range need {
		if w.watched[d] {
			continue
		}
		if err := w.fs.Add(d); err != nil {
			w.noteLocked(err)
			continue
		}
		w.watched[d] = true
		added = true
	}
	return added
}

func (w *Watcher) noteLocked(err error) {
	w.errs = append(w.errs, w.clock.Now().UTC().Format(time.RFC3339)+" "+err.Error())
	if len(w.errs) > 10 {
		w.errs = w.errs[len(w.errs)-10:]
	}
}

func (w *Watcher) loop() {
	var timer clock.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-w.done:
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			// A directory appeared or went away: watches may have to move
			// (down into a new directory, up from a removed one).
			w.mu.Lock()
			w.last = w.clock.Now()
			if ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
				if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
					delete(w.watched, ev.Name)
				}
				w.syncLocked()
			}
			w.mu.Unlock()
			if timer == nil {
				timer = w.clock.NewTimer(w.debounce)
				fire = timer.C()
			}
			if w.observed != nil {
				w.observed(ev)
			}
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			w.mu.Lock()
			w.noteLocked(err)
			w.mu.Unlock()
		case <-fire:
			timer, fire = nil, nil
			select {
			case w.c <- struct{}{}:
			default: // one pending signal is enough
			}
		}
	}
}
