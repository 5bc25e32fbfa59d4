package inventory

import (
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// Changed narrows a scan with a Cache to what changed since the previous
// scan with it: a file watcher's report. A file the cache holds is taken
// as unchanged without looking at it when its directory (and the one its
// links lead to) is in Watched and no path in Paths is the file, one of
// its directories, or, for a directory's listing, an entry created,
// removed or renamed in it. Anything else is looked at as in a full scan
// (device, inode, size, times), so a watcher that misses a directory
// costs time, never a change.
type Changed struct {
	// Paths are the host paths that changed; true when the path was
	// created, removed or renamed.
	Paths map[string]bool
	// Watched are the host directories whose every change is in Paths.
	Watched map[string]bool
}

// maxChanged: with more changed paths than this, a scan looks at every
// file (testing each against each changed path would cost more).
const maxChanged = 64

// changes is a Changed in node paths, for one scan.
type changes struct {
	paths   []string        // node paths that changed
	listed  map[string]bool // node directories whose listing changed
	watched map[string]bool // node directories watched
}

// nodeChanges maps c into node paths; nil (look at everything) when c is
// nil or names too many paths.
func (s *scanner) nodeChanges(c *Changed) *changes {
	if c == nil || len(c.Paths) > maxChanged {
		return nil
	}
	out := &changes{listed: map[string]bool{}, watched: make(map[string]bool, len(c.Watched))}
	for p, listing := range c.Paths {
		np, ok := s.root.NodePath(p)
		if !ok {
			continue
		}
		out.paths = append(out.paths, np)
		if listing {
			out.listed[path.Dir(np)] = true
		}
	}
	for d := range c.Watched {
		if nd, ok := s.root.NodePath(d); ok {
			out.watched[nd] = true
		}
	}
	return out
}

// untouched reports whether node path p is known unchanged: watched, and
// neither it nor a directory above it changed.
func (c *changes) untouched(p string) bool {
	if !c.watched[path.Dir(p)] {
		return false
	}
	for _, ch := range c.paths {
		if strings.HasPrefix(p, ch) && (len(p) == len(ch) || p[len(ch)] == '/' || ch == "/") {
			return false
		}
	}
	return true
}

// trusted reports whether every dependency is known unchanged without
// looking at it.
func (s *scanner) trusted(deps []dep) bool {
	c := s.changes
	if c == nil {
		return false
	}
	for _, d := range deps {
		if d.path != "" && !c.untouched(d.path) {
			return false
		}
		if d.resolved != "" && d.resolved != d.path && !c.untouched(d.resolved) {
			return false
		}
	}
	return true
}

// listing is a directory's candidates as listed, kept in the Cache.
type listing struct {
	resolved string
	cands    []candidate
	gen      uint64
}

// cachedListing returns dir's listing from the cache when nothing in it
// was created, removed or renamed since; when something was, the entries
// named by the changes are looked at again, the rest kept.
func (s *scanner) cachedListing(dir string, exts []string) ([]candidate, bool) {
	c := s.changes
	if c == nil || s.cache == nil {
		return nil, false
	}
	key := listingKey(dir, exts)
	s.cache.mu.Lock() // guards l.cands; a listing's cands are never changed in place
	l := s.cache.listings[key]
	var cands []candidate
	if l != nil {
		cands = l.cands
	}
	s.cache.mu.Unlock()
	if l == nil || !c.untouched(dir+"/.") || !c.untouched(l.resolved+"/.") {
		return nil, false
	}
	if c.listed[dir] || c.listed[l.resolved] {
		var ok bool
		if cands, ok = s.patchListing(dir, l.resolved, cands, exts); !ok {
			return nil, false
		}
	}
	s.cache.mu.Lock()
	l.cands, l.gen = cands, max(l.gen, s.gen)
	s.cache.mu.Unlock()
	return cands, true
}

// patchListing is the listing cands of dir (resolved: where it leads)
// with the entries the changes name looked at again (and the certificates
// whose "<stem>.key" they name), inside the root.
func (s *scanner) patchListing(dir, resolved string, cands []candidate, exts []string) ([]candidate, bool) {
	redo := map[string]bool{}
	for _, p := range s.changes.paths {
		if d := path.Dir(p); d == dir || d == resolved {
			redo[path.Base(p)] = true
		}
	}
	out := make([]candidate, 0, len(cands)+len(redo))
	for _, c := range cands {
		name := path.Base(c.path)
		if redo[name] || redo[sibling(name)] {
			redo[name] = true
			continue
		}
		out = append(out, c)
	}
	if len(redo) == 0 {
		return out, true
	}
	d, err := s.root.OpenDir(resolved)
	if err != nil {
		return nil, false // list it all again
	}
	defer d.Close()
	for name := range redo {
		fi, err := d.Lstat(name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, false // list it all again
		}
		_, err = d.Lstat(sibling(name))
		c, ok := listed(dir, resolved, name, fi.Mode().Type(), err == nil, exts)
		if !ok {
			continue
		}
		i, _ := slices.BinarySearchFunc(out, c.path, func(a candidate, p string) int { return strings.Compare(a.path, p) })
		out = slices.Insert(out, i, c)
	}
	return out, true
}

// listingKey names a directory's listing for some extensions.
func listingKey(dir string, exts []string) string {
	return dir + "\x00" + strings.Join(exts, ",")
}

// keepListing stores dir's listing in the cache.
func (s *scanner) keepListing(dir, resolved string, exts []string, cands []candidate) {
	if s.cache == nil {
		return
	}
	s.cache.mu.Lock()
	s.cache.listings[listingKey(dir, exts)] = &listing{resolved: resolved, cands: cands, gen: s.gen}
	s.cache.mu.Unlock()
}
