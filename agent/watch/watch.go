// Package watch tells the agent when something changed on disk. It
// watches directories, not files, because atomic renames and the kubelet's
// symlink swaps replace inodes; a directory that does not exist yet is
// waited for by watching its nearest existing ancestor. Bursts of events
// are debounced into one notification, and the watcher remembers which
// paths changed (Take), so that the agent can rescan only those.
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
	pending map[string]pendingPath
	all     time.Time // when something not pinned to a path changed (zero: nothing)
	done    chan struct{}

	// observed, when set (tests only), is called from the loop after each
	// event has been fully handled: watches moved and the debounce timer armed.
	observed func(fsnotify.Event)
}

// pendingPath is a changed path not taken yet.
type pendingPath struct {
	at      time.Time
	listing bool // created, removed or renamed: its directory's listing changed
}

// maxPending: more changed paths than this since the last Take are
// rescanned as a whole.
const maxPending = 1024

// New starts a watcher. It signals once no event came for debounce, or
// at the latest 10 × debounce after the first event of a burst.
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
	w := &Watcher{C: c, c: c, fs: fw, clock: clk, debounce: debounce, watched: map[string]bool{}, pending: map[string]pendingPath{}, done: make(chan struct{}), observed: observed}
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
	if w.syncLocked() {
		// What changed in a directory before its watch began sent no
		// event: the next rescan cannot trust the paths alone.
		w.all = w.clock.Now()
	}
}

// Changes are what changed on disk since the previous Take.
type Changes struct {
	// All: something changed that no path pins down (the kernel's event
	// queue overflowed, a watch failed, a watched directory appeared or
	// went away, a directory began to be watched): rescan everything.
	All bool
	// Paths are the host paths the events named; true when the path was
	// created, removed or renamed (its directory's listing changed).
	Paths map[string]bool
	// Watched are the host directories watched, each of its own (not
	// through an ancestor): a change below one of them is in Paths.
	Watched map[string]bool
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool { return !c.All && len(c.Paths) == 0 }

// Take returns the changes received since the previous Take and forgets
// them. Changes received before since (the start of a full scan, which
// saw them) are dropped.
func (w *Watcher) Take(since time.Time) Changes {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := Changes{All: !w.all.IsZero() && !w.all.Before(since), Paths: map[string]bool{}, Watched: make(map[string]bool, len(w.watched))}
	for p, e := range w.pending {
		if !e.at.Before(since) {
			c.Paths[p] = e.listing
		}
	}
	for d := range w.watched {
		c.Watched[d] = true
	}
	w.pending, w.all = map[string]pendingPath{}, time.Time{}
	return c
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
// again until nothing changes. It reports whether it added a watch.
// w.mu is held.
func (w *Watcher) syncLocked() bool {
	added := false
	for i := 0; i < 16 && w.syncOnceLocked(); i++ {
		added = true
	}
	return added
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
	var first time.Time // the first event of the burst being debounced
	arm := func() {
		now := w.clock.Now()
		if timer == nil {
			first = now
		} else {
			timer.Stop()
		}
		wait := min(w.debounce, max(first.Add(10*w.debounce).Sub(now), 0))
		timer = w.clock.NewTimer(wait)
		fire = timer.C()
	}
	for {
		select {
		case <-w.done:
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			w.note(ev)
			arm()
			if w.observed != nil {
				w.observed(ev)
			}
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			w.mu.Lock()
			w.noteLocked(err)
			w.all = w.clock.Now() // an overflow lost events: rescan everything
			w.mu.Unlock()
			arm()
		case <-fire:
			timer, fire = nil, nil
			select {
			case w.c <- struct{}{}:
			default: // one pending signal is enough
			}
		}
	}
}

// note records an event: the path it names, or a change of the watches.
func (w *Watcher) note(ev fsnotify.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.clock.Now()
	listing := ev.Has(fsnotify.Create) || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)
	moved := false
	// A directory appeared or went away: watches may have to move
	// (down into a new directory, up from a removed one).
	if listing {
		if (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) && w.watched[ev.Name] {
			delete(w.watched, ev.Name)
			moved = true
		}
		moved = w.syncLocked() || moved
	}
	if moved || len(w.pending) >= maxPending {
		w.all = now
		return
	}
	p := w.pending[ev.Name]
	w.pending[ev.Name] = pendingPath{at: now, listing: p.listing || listing}
}
