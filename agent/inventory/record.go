package inventory

import (
	"slices"
	"time"
)

// farFuture bounds a record whose states never change again.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// record leaves what this scan found for the next one to patch (see
// lastScan).
func (s *scanner) record(rep *Report, cands []candidate) {
	n := len(rep.Certificates)
	l := &lastScan{gen: s.gen, cfg: s.cfg, now: s.now, cands: cands, rep: rep, authorities: s.authorities,
		longest: s.longest, other: s.other, leaf: make([]int32, len(cands)),
		issuer: make([]*authority, n), life: make([]time.Duration, n), identity: make([]string, n)}
	at := make(map[*Certificate]int32, n)
	for i, c := range rep.Certificates {
		at[c] = int32(i)
	}
	for i, r := range s.results {
		l.leaf[i] = notPlain
		if r == nil {
			l.leaf[i] = absent
			continue
		}
		for _, fd := range r.found {
			if j, ok := at[fd.info]; ok {
				l.issuer[j], l.life[j], l.identity[j] = fd.issuer, fd.info.NotAfter.Sub(fd.info.NotBefore), fd.identity
				if plainLeaf(cands[i], r) {
					l.leaf[i] = j
				}
			}
			if fd.writers != nil {
				l.writers = append(l.writers, *fd.writers)
			}
		}
	}
	l.deps, l.uncached = depsOf(s.results)
	l.until = l.firstChange(s.now)
	s.cache.keep(l)
}

// firstChange is the earliest time from now at which a state or warning
// of the recorded report may change.
func (l *lastScan) firstChange(now time.Time) time.Time {
	until := farFuture
	for j, c := range l.rep.Certificates {
		until = leafUntil(until, now, c, l.issuer[j])
	}
	for _, list := range [][]*Certificate{l.rep.Authorities, l.rep.ClusterCAs} {
		for _, c := range list {
			until = earliest(until, now, false, c.NotBefore, c.RenewalWindowStart)
			until = earliest(until, now, true, c.NotAfter)
		}
	}
	for a, life := range l.longest {
		if life > 0 {
			until = earliest(until, now, true, a.info.NotAfter.Add(-life))
		}
	}
	return until
}

// leafUntil is the earliest of until and the times from now at which a
// leaf's state or warnings may change: its validity and renewal window,
// and the time from which its issuer expires within one of its lifetimes.
func leafUntil(until, now time.Time, info *Certificate, issuer *authority) time.Time {
	until = earliest(until, now, false, info.NotBefore, info.RenewalWindowStart)
	until = earliest(until, now, true, info.NotAfter)
	if issuer != nil && !issuer.bundled {
		until = earliest(until, now, true, issuer.info.NotAfter.Add(-info.NotAfter.Sub(info.NotBefore)))
	}
	return until
}

// earliest is the earliest of until and the times after now. A state
// flips at a time t either from t on (not yet valid before notBefore, due
// from the start of the renewal window) or only after t (expired after
// notAfter): for the latter, at says that t equal to now counts, as the
// state is about to change.
func earliest(until, now time.Time, at bool, times ...time.Time) time.Time {
	for _, t := range times {
		if (t.After(now) || at && t.Equal(now)) && t.Before(until) {
			until = t
		}
	}
	return until
}

// depsOf indexes the cached readings' dependencies by file, and lists the
// candidates without a cached reading.
func depsOf(results []*result) (*depIndex, []int32) {
	ix := &depIndex{first: make(map[string]int32, len(results)), more: map[string][]int32{}, dirs: map[string]bool{}}
	add := func(p string, i int32) {
		if j, ok := ix.first[p]; !ok {
			ix.first[p] = i
		} else if j != i && !slices.Contains(ix.more[p], i) {
			ix.more[p] = append(ix.more[p], i)
		}
	}
	var uncached []int32
	for i, r := range results {
		if r == nil || !r.cached {
			uncached = append(uncached, int32(i))
			continue
		}
		for _, d := range r.deps {
			if d.path != "" {
				add(d.path, int32(i))
			}
			if d.resolved != "" && d.resolved != d.path {
				add(d.resolved, int32(i))
			}
			d.dirsOf(ix.dirs)
		}
	}
	return ix, uncached
}
