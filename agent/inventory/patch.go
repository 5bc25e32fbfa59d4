package inventory

import (
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/certagent/certagent/agent/config"
)

// A scan narrowed to what a file watcher saw change costs what changed
// only when it can start from the previous scan's report: the previous
// scan's record (lastScan) says which candidate each file it read belongs
// to, so a changed path names the candidates to read again. When every
// one of them is a plain leaf before and after (one certificate of its
// own in a PEM or DER file: no CA, no chain, no kubeconfig, no problem,
// no other entry folded into it), the report is the previous one with
// those certificates replaced, each matched by signature against the
// previous scan's authorities, which did not change. Anything else (a CA,
// a key pair or a kubeconfig changed, a file created or removed, a
// directory renamed, a time a state depends on reached, another scan in
// between) runs the whole narrowed scan, which is always right.

// lastScan is what a scan with a Cache leaves for the next one to patch.
// It is never changed once stored: a patch stores a new one.
type lastScan struct {
	gen         uint64
	cfg         *config.Config
	now, until  time.Time // the scan time; the earliest time a state may change after it
	cands       []candidate
	rep         *Report
	authorities []*authority
	longest     map[*authority]time.Duration
	other       []Problem // the problems of the readings, before sorting
	deps        *depIndex // shared by the scans that patch this one
	// leaf, per candidate: its certificate's index in rep.Certificates
	// when it is a plain leaf, notPlain, or absent (a well-known file
	// not there).
	leaf []int32
	// per certificate of rep.Certificates: its issuer, lifetime and
	// identity (the file it was read from).
	issuer   []*authority
	life     []time.Duration
	identity []string
	uncached []int32 // candidates with no cached reading: always read again
	writers  []writersCheck
}

const (
	notPlain int32 = -1
	absent   int32 = -2
	// maxPatched bounds the candidates a patch reads again.
	maxPatched = 64
)

// depIndex maps the files the cached readings depend on to candidates.
type depIndex struct {
	first map[string]int32   // node or resolved path -> a candidate depending on it
	more  map[string][]int32 // the others, rarely any
	dirs  map[string]bool    // the directories of every such file
}

// writersCheck is a refuseLocalCA verdict on who else could write files,
// checked again on every patch (a directory's mode is no file event).
type writersCheck struct {
	cand  int
	files []string
	why   string
}

// previous returns the scan to patch: the one just before this one (no
// scan between) with the same configuration, or nil.
func (c *Cache) previous(gen uint64, cfg *config.Config) *lastScan {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.last; l != nil && l.gen == gen-1 && l.cfg == cfg {
		return l
	}
	return nil
}

// keep stores l for the next scan unless a later scan began.
func (c *Cache) keep(l *lastScan) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == l.gen {
		c.last = l
	}
}

// plainLeaf reports whether r, read for c, is a plain leaf.
func plainLeaf(c candidate, r *result) bool {
	if c.ca || c.kubeconfig || c.keyPair || r == nil || len(r.found) != 1 || len(r.chain) > 0 ||
		len(r.clusterCAs) > 0 || r.keyPair != nil || len(r.problems) > 0 {
		return false
	}
	info := r.found[0].info
	return !info.IsCA && (info.Kind == KindPEM || info.Kind == KindDER || info.Kind == KindCombined) &&
		len(info.UsedBy) == 0 && (info.Key == nil || info.Key.Error == "")
}

// affected lists the candidates a patch reads again; ok is false when the
// changes reach beyond candidates it can patch.
func (s *scanner) affected(p *lastScan) (map[int32]bool, bool) {
	for d := range p.deps.dirs {
		if !s.changes.watched[d] {
			return nil, false
		}
	}
	out := map[int32]bool{}
	for _, ch := range s.changes.paths {
		for d := range p.deps.dirs {
			if d == ch || ch == "/" || strings.HasPrefix(d, ch+"/") {
				return nil, false // a directory itself changed
			}
		}
		if i, ok := p.deps.first[ch]; ok {
			out[i] = true
		}
		for _, i := range p.deps.more[ch] {
			out[i] = true
		}
	}
	for _, i := range p.uncached {
		out[i] = true
	}
	return out, len(out) <= maxPatched
}

// replacement is a plain leaf read again for a patch.
type replacement struct {
	cand, at int32 // its candidate; its index in the report's certificates
	fd       *found
	cached   bool // its reading is in the cache
}

// patch fills rep from the previous scan p when what changed is plain
// leaves only (see lastScan); it reports whether it did.
func (s *scanner) patch(rep *Report, cands []candidate) bool {
	p := s.prev
	if s.now.Before(p.now) || !s.now.Before(p.until) || !slices.Equal(cands, p.cands) {
		return false
	}
	affected, ok := s.affected(p)
	if !ok {
		return false
	}
	s.cands = cands
	var eligible []*authority
	for _, a := range p.authorities {
		if a.issues() {
			eligible = append(eligible, a)
		}
	}
	var repl []replacement
	for i := range affected {
		r := s.readCached(cands[i], int(i))
		at := p.leaf[i]
		switch {
		case r == nil && at == absent:
			continue
		case at < 0 || !plainLeaf(cands[i], r) || r.found[0].identity != p.identity[at]:
			return false
		case !p.deps.covers(int32(i), r.deps):
			return false // it now reads files the index does not know (a key re-pointed)
		}
		fd := r.found[0]
		s.matchOne(fd, eligible, nil)
		if !p.sameLongest(at, fd) {
			return false
		}
		repl = append(repl, replacement{cand: i, at: at, fd: fd, cached: r.cached})
	}
	for _, w := range p.writers {
		if !affected[int32(w.cand)] && s.writersOf(w.files) != w.why {
			return false
		}
	}
	s.patched(rep, repl)
	return true
}

// sameLongest reports whether replacing certificate at with fd leaves
// the longest lifetime among each authority's leaves as it was.
func (p *lastScan) sameLongest(at int32, fd *found) bool {
	life := fd.info.NotAfter.Sub(fd.info.NotBefore)
	if a := fd.issuer; a != nil && life > p.longest[a] {
		return false
	}
	if a := p.issuer[at]; a != nil && p.life[at] == p.longest[a] {
		return fd.issuer == a && life == p.life[at] // it may have been the only one
	}
	return true
}

// patched fills rep: the previous report with the replacements, and
// leaves the record for the next scan.
func (s *scanner) patched(rep *Report, repl []replacement) {
	p := s.prev
	s.authorities = p.authorities
	rep.Certificates = slices.Clone(p.rep.Certificates)
	l := *p
	l.gen, l.now, l.rep = s.gen, s.now, rep
	l.issuer, l.life, l.identity = slices.Clone(p.issuer), slices.Clone(p.life), slices.Clone(p.identity)
	l.writers = slices.DeleteFunc(slices.Clone(p.writers), func(w writersCheck) bool {
		return slices.ContainsFunc(repl, func(r replacement) bool { return int(r.cand) == w.cand })
	})
	for _, r := range repl {
		s.finish(r.fd, rep)
		rep.Certificates[r.at] = r.fd.info
		l.issuer[r.at], l.life[r.at], l.identity[r.at] = r.fd.issuer, r.fd.info.NotAfter.Sub(r.fd.info.NotBefore), r.fd.identity
		l.until = leafUntil(l.until, s.now, r.fd.info, r.fd.issuer)
		if w := r.fd.writers; w != nil {
			l.writers = append(l.writers, *w)
		}
		if !r.cached && !slices.Contains(l.uncached, r.cand) {
			l.uncached = append(slices.Clip(l.uncached), r.cand)
		}
	}
	rep.Authorities = s.residuals(p.rep.Authorities)
	rep.ClusterCAs = s.residuals(p.rep.ClusterCAs)
	rep.KeyPairs = p.rep.KeyPairs
	rep.Problems = append(rep.Problems, p.other...)
	sort.SliceStable(rep.Problems, func(i, j int) bool { return rep.Problems[i].Path < rep.Problems[j].Path })
	if rep.Problems == nil {
		rep.Problems = []Problem{}
	}
	s.cache.patches.Add(1)
	s.cache.keep(&l)
}

// residuals copies certificates with their residual seconds at the scan
// time (a handful: the authorities).
func (s *scanner) residuals(list []*Certificate) []*Certificate {
	if list == nil {
		return nil
	}
	out := make([]*Certificate, len(list))
	for i, c := range list {
		cc := *c
		cc.ResidualSeconds = Residual(c.NotAfter, s.now)
		out[i] = &cc
	}
	return out
}

// covers reports whether every file in deps, and its directory, is
// indexed for candidate i: a reading that now depends on other files (a
// key symlink re-pointed) would leave later changes to them unseen by
// every patch that follows, so it needs a scan that indexes again.
func (ix *depIndex) covers(i int32, deps []dep) bool {
	for _, d := range deps {
		for _, p := range []string{d.path, d.resolved} {
			if p != "" && (!ix.has(p, i) || !ix.dirs[path.Dir(p)]) {
				return false
			}
		}
	}
	return true
}

func (ix *depIndex) has(p string, i int32) bool {
	j, ok := ix.first[p]
	return ok && (j == i || slices.Contains(ix.more[p], i))
}

// dirsOf adds the directories of a dependency's paths to dirs.
func (d dep) dirsOf(dirs map[string]bool) {
	for _, p := range []string{d.path, d.resolved} {
		if p != "" {
			dirs[path.Dir(p)] = true
		}
	}
}
