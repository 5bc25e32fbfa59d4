package inventory

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certagent/certagent/rotate/pki"
)

// racyWindow: a file changed this close to the moment it was read is not
// cached. A file rewritten in place within the same tick of the kernel's
// clock (or of a file system's coarse timestamps) could show the same
// change time before and after; such a file is read again next scan.
const racyWindow = 2 * time.Second

// Cache lets a long-running caller (the daemon) scan again at the cost of
// what changed. Give the same Cache to every Scan of one root and config:
//
//   - A file whose device, inode, size, modification time and change time
//     are all as when it was read, and every file its reading depended on
//     likewise (its key, the files a kubeconfig names, the absence of an
//     optional key), is not read or parsed again. A file changed within
//     two seconds of its read is not trusted and is read again: on any
//     doubt, re-read.
//   - A signature already checked against an authority (identified by its
//     whole certificate, so a different CA of the same name is another
//     authority) is not checked again; the result, either way, is kept.
//
// Entries that a full scan did not use are dropped at its end, so the
// cache holds what the node holds. It is safe for concurrent use; a Cache
// used with another root or size limit starts over. The zero value is
// not usable; use NewCache.
type Cache struct {
	mu       sync.Mutex
	root     string               // guarded by mu
	limit    int64                // guarded by mu
	gen      uint64               // scan generation; guarded by mu
	files    map[candidate]*entry // guarded by mu
	verified map[verifyKey]*verdict
	listings map[string]*listing // directory listings, by node path; guarded by mu
	cands    int                 // candidates the latest scan found; guarded by mu
	last     *lastScan           // the latest scan, for the next to patch; guarded by mu
	now      func() time.Time

	reads, verifications, patches atomic.Uint64
}

// entry is one candidate's reading, as a template cloned for each scan.
type entry struct {
	r    *result
	deps []dep
	gen  atomic.Uint64 // the latest scan that used it
}

// dep is one file a reading depended on.
type dep struct {
	path     string // node path as asked ("" when read by its resolved path)
	resolved string
	stat     pki.FileStat
	absent   bool // the file was not there
}

type verifyKey struct{ ca, signed [sha256.Size]byte }

type verdict struct {
	ok  bool
	gen uint64
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{files: map[candidate]*entry{}, verified: map[verifyKey]*verdict{}, listings: map[string]*listing{}, now: time.Now}
}

// CacheStats counts what a cache holds and what scans with it did.
type CacheStats struct {
	Files, Signatures int // entries held
	// Reads counts candidates read from disk (not from the cache);
	// Verifications counts signature checks done (not from the cache);
	// Patches counts scans that patched the previous scan's report.
	Reads, Verifications, Patches uint64
}

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Files: len(c.files), Signatures: len(c.verified),
		Reads: c.reads.Load(), Verifications: c.verifications.Load(), Patches: c.patches.Load()}
}

// begin starts a scan: a new generation, and a reset when the root or
// the size limit is not the one the entries were read with.
func (c *Cache) begin(root *pki.Root, limit int64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.root != root.Dir() || c.limit != limit {
		c.root, c.limit = root.Dir(), limit
		c.files, c.verified, c.listings, c.last = map[candidate]*entry{}, map[verifyKey]*verdict{}, map[string]*listing{}, nil
	}
	c.gen++
	return c.gen
}

// sweep drops what the scan of generation gen did not use.
func (c *Cache) sweep(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.files {
		if e.gen.Load() < gen {
			delete(c.files, k)
		}
	}
	for k, v := range c.verified {
		if v.gen < gen {
			delete(c.verified, k)
		}
	}
	for k, l := range c.listings {
		if l.gen < gen {
			delete(c.listings, k)
		}
	}
}

// readCached returns candidate c's reading: the cached one when nothing it
// depended on changed, else a fresh one (cached when it is settled).
func (s *scanner) readCached(c candidate, order int) *result {
	cache := s.cache
	if cache == nil {
		return s.read(c, order)
	}
	cache.mu.Lock()
	e := cache.files[c]
	cache.mu.Unlock()
	if e != nil && (s.trusted(e.deps) || s.unchanged(e.deps)) {
		raise(&e.gen, s.gen)
		return e.r.clone(order)
	}
	if e != nil {
		// Stale: a reading that is not cached below must not leave it to
		// be trusted by a later scan narrowed to other paths.
		cache.mu.Lock()
		if cache.files[c] == e {
			delete(cache.files, c)
		}
		cache.mu.Unlock()
	}
	start := cache.now()
	r := s.read(c, order)
	if r == nil { // a well-known file that is not there
		return nil
	}
	cache.reads.Add(1)
	if r.noCache || len(r.deps) == 0 {
		return r
	}
	for _, d := range r.deps {
		if !d.absent && time.Unix(0, d.stat.Ctime).After(start.Add(-racyWindow)) {
			return r // changed just now: not trusted next time
		}
	}
	for _, fd := range r.found {
		if !fd.info.IsCA {
			fd.last = &lastInfo{}
		}
	}
	e = &entry{r: r, deps: r.deps}
	e.gen.Store(s.gen)
	cache.mu.Lock()
	cache.files[c] = e
	cache.mu.Unlock()
	return r.clone(order)
}

// raise sets g to gen unless it is already later (a concurrent scan).
func raise(g *atomic.Uint64, gen uint64) {
	for old := g.Load(); old < gen && !g.CompareAndSwap(old, gen); old = g.Load() {
	}
}

// candidates is how many candidates the latest scan found (0 without a
// cache), to size the next scan's lists.
func (c *Cache) candidates() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cands
}

func (c *Cache) setCandidates(n int) {
	if c != nil {
		c.mu.Lock()
		c.cands = n
		c.mu.Unlock()
	}
}

// unchanged reports whether every dependency is still the version read.
func (s *scanner) unchanged(deps []dep) bool {
	for _, d := range deps {
		resolved := d.resolved
		if d.path != "" {
			res, err := s.root.Resolve(d.path)
			if d.absent {
				if errors.Is(err, fs.ErrNotExist) {
					continue
				}
				return false
			}
			if err != nil || res != d.resolved {
				return false
			}
		} else if d.absent {
			return false
		}
		st, err := s.root.StatResolved(resolved)
		if err != nil || st != d.stat {
			return false
		}
	}
	return true
}

// track records a read as a dependency of r: the version read, or the
// absence of the file. Any other failure makes r uncacheable.
func (r *result) track(nodePath string, f *pki.File, err error) {
	switch {
	case r.untracked:
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			r.noCache = true
		}
	case err == nil:
		r.deps = append(r.deps, dep{path: nodePath, resolved: f.Resolved, stat: f.Stat})
	case errors.Is(err, fs.ErrNotExist):
		r.deps = append(r.deps, dep{path: nodePath, absent: true})
	default:
		r.noCache = true
	}
}

// readFile reads a node path for r, recording the dependency.
func (s *scanner) readFile(r *result, nodePath string) (*pki.File, error) {
	f, err := s.root.ReadFile(nodePath)
	r.track(nodePath, f, err)
	return f, err
}

// clone copies a cached reading for one scan, which fills in and links
// the copies; the template stays as read. A leaf's Certificate is not
// copied here: assemble fills in a copy of the template's, and reports
// the one it reported last time instead when they are the same
// (lastInfo.settle), so an unchanged leaf costs no new Certificate.
func (r *result) clone(order int) *result {
	out := &result{keyPair: r.keyPair, problems: r.problems, deps: r.deps, cached: true}
	chain := map[*authority]*authority{}
	for _, a := range r.chain {
		b, info := *a, *a.info
		b.info = &info
		chain[a] = &b
		out.chain = append(out.chain, &b)
	}
	for _, ci := range r.clusterCAs {
		c := *ci
		out.clusterCAs = append(out.clusterCAs, &c)
	}
	for _, fd := range r.found {
		g := *fd
		g.order = order
		if fd.last != nil {
			g.shared = true
		} else {
			info := *fd.info
			g.info = &info
		}
		if fd.issuer != nil {
			// A bundled issuer that is no CA by its basicConstraints (a
			// v1 CA) is not in the chain: copy it as the chain's are.
			if g.issuer = chain[fd.issuer]; g.issuer == nil {
				b, info := *fd.issuer, *fd.issuer.info
				b.info = &info
				g.issuer = &b
			}
		}
		out.found = append(out.found, &g)
	}
	return out
}

// verified checks signed against authority a once per cache: the verdict
// is kept under a's whole certificate and the signed content.
func (s *scanner) verified(signed *pki.Signed, a *authority) bool {
	if s.cache == nil {
		return signed.VerifiedBy(a.cert)
	}
	k := verifyKey{ca: a.id, signed: signed.ID()}
	s.cache.mu.Lock()
	v := s.cache.verified[k]
	if v != nil {
		v.gen = max(v.gen, s.gen)
	}
	s.cache.mu.Unlock()
	if v != nil {
		return v.ok
	}
	ok := signed.VerifiedBy(a.cert)
	s.cache.verifications.Add(1)
	s.cache.mu.Lock()
	s.cache.verified[k] = &verdict{ok: ok, gen: s.gen}
	s.cache.mu.Unlock()
	return ok
}
