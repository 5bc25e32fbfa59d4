package inventory

import (
	"context"
	"crypto/sha256"
	"path"
	"strings"
)

// An issuer is found by signature: the authority key identifier and the
// issuer name only pick candidates, the signature decides, so two CAs with
// the same name (a CA rotation) are never confused, and a certificate that
// merely names a CA is not taken for one it signed. Checking a signature
// is where a scan spends most of its time when the CAs are on the node (an
// ECDSA P-256 check costs several parses), so it is done once per
// certificate and candidate, on every worker:
//
//   - Phase 1, as each file is read: against the authorities found so far
//     (files that look like CAs are read first). Then the certificate lets
//     its signed bytes go, so memory stays flat.
//   - Phase 2, once every authority is known: the issuer is the first
//     authority, in the order the files were listed, whose key verifies
//     the signature, so the result does not depend on timing. Only the
//     candidates phase 1 did not try are checked; for that the file is
//     read again. That happens only for a certificate read before its CA
//     (a CA file not named like one, among the first files read), or when
//     two candidates share a name or key identifier.
//
// A Cache keeps every verdict across scans, so a later scan checks only
// what is new.

// verdictOf is the outcome of checking a certificate against an authority.
type verdictOf struct {
	a  *authority
	ok bool
}

// processingOrder lists candidate indexes with likely authorities first:
// the well-known CA files, then files named like a CA. The order only
// decides how early phase 1 knows the CAs, never a result.
func processingOrder(cands []candidate) []int {
	order := make([]int, 0, len(cands))
	var named, rest []int // named like a CA; the others
	for i, c := range cands {
		switch base := strings.ToLower(path.Base(c.path)); {
		case c.ca:
			order = append(order, i)
		case strings.Contains(base, "ca"):
			named = append(named, i)
		default:
			rest = append(rest, i)
		}
	}
	return append(append(order, named...), rest...)
}

// authoritiesOf makes the authorities a reading holds: its CA
// certificates and the chain bundled with them.
func authoritiesOf(r *result) []*authority {
	var out []*authority
	for _, f := range r.found {
		if f.info.IsCA {
			out = append(out, &authority{info: f.info, cert: f.cert,
				keyOK: f.info.Key != nil && f.info.Key.Matches, keyHere: f.info.Key != nil && f.info.Key.Present})
		}
	}
	out = append(out, r.chain...)
	for _, a := range out {
		a.id = sha256.Sum256(a.cert.Raw)
	}
	return out
}

// issues reports whether a may issue other files' certificates: a chain
// bundled in a certificate file issues that file's own certificate
// (matched as it was read); only the well-known CA files' chains issue
// others.
func (a *authority) issues() bool { return !a.bundled || a.wellKnown }

// mayIssue: a's key identifier (when both have one), else its subject,
// matches what fd names as its issuer.
func (a *authority) mayIssue(fd *found) bool {
	if fd.akid != "" && len(a.cert.SubjectKeyId) > 0 {
		return fd.akid == string(a.cert.SubjectKeyId)
	}
	return fd.rawIssuer == string(a.cert.RawSubject)
}

// early publishes a reading's authorities and checks its certificates
// against every authority published so far (phase 1).
func (s *scanner) early(r *result) {
	if r == nil {
		return
	}
	r.authorities = authoritiesOf(r)
	if len(r.authorities) > 0 {
		s.publishMu.Lock()
		var list []*authority
		if p := s.published.Load(); p != nil {
			list = append(list, *p...)
		}
		list = append(list, r.authorities...)
		s.published.Store(&list)
		s.publishMu.Unlock()
	}
	var known []*authority
	if p := s.published.Load(); p != nil {
		known = *p
	}
	for _, fd := range r.found {
		if fd.info.IsCA || fd.issuer != nil || fd.signed == nil {
			continue // CAs are matched in phase 2, with every authority known
		}
		for _, a := range known {
			if a.issues() && a.mayIssue(fd) {
				ok := s.verdict(fd, a)
				fd.verdicts = append(fd.verdicts, verdictOf{a, ok})
				if ok {
					break
				}
			}
		}
		if s.cache == nil {
			// Let the signed bytes go: a certificate whose issuer comes
			// later is read again in phase 2, so memory stays flat with
			// 10,000 leaves. (A cache holds them anyway.)
			fd.signed = nil
		}
	}
}

// match finds each certificate's issuer once every authority is known
// (phase 2), on every worker.
func (s *scanner) match(ctx context.Context, all []*found, workers int) error {
	var eligible []*authority
	for _, a := range s.authorities {
		if a.issues() {
			eligible = append(eligible, a)
		}
	}
	if len(eligible) == 0 {
		return nil
	}
	for _, fd := range all { // the few CAs first, with no worker
		if fd.info.IsCA {
			var self *authority // its own entry, to check a self-signed root
			for _, a := range eligible {
				if a.info == fd.info {
					self = a
				}
			}
			s.matchOne(fd, eligible, self)
		}
	}
	err := parallel(ctx, len(all), workers, func(i int) {
		if fd := all[i]; !fd.info.IsCA {
			s.matchOne(fd, eligible, nil)
		}
	})
	for _, fd := range all {
		fd.signed, fd.verdicts = nil, nil // not needed any more: let the bytes go
	}
	return err
}

// matchOne sets fd's issuer: a self-signed root is its own CA (no issuer),
// anything else is issued by the first eligible authority that verifies
// its signature.
func (s *scanner) matchOne(fd *found, eligible []*authority, self *authority) {
	if fd.issuer != nil {
		return
	}
	if self != nil && self.mayIssue(fd) && s.check(fd, self) {
		fd.info.CAName = fd.info.Name // a self-signed root
		return
	}
	for _, a := range eligible {
		if a != self && a.info != fd.info && a.mayIssue(fd) && s.check(fd, a) {
			fd.issuer = a
			return
		}
	}
}

// check returns fd's verdict against a: the one phase 1 reached, or a
// check now (reading the file again if its signed bytes were let go).
func (s *scanner) check(fd *found, a *authority) bool {
	for _, v := range fd.verdicts {
		if v.a == a {
			return v.ok
		}
	}
	if fd.signed == nil && !s.reread(fd) {
		return false
	}
	return s.verdict(fd, a)
}

// verdict checks fd's signed part against a: a cached leaf remembers the
// verdict of the last authority it was checked against (its file's
// version and that authority's whole certificate decide it), so a scan
// that finds the same authority again asks no one; anything else asks
// the cache (verified).
func (s *scanner) verdict(fd *found, a *authority) bool {
	m := fd.last
	if m == nil {
		return s.verified(fd.signed, a)
	}
	if v := m.verdict.Load(); v != nil && v.ca == a.id {
		return v.ok
	}
	ok := s.verified(fd.signed, a)
	m.verdict.Store(&caVerdict{ca: a.id, ok: ok})
	return ok
}

// reread recovers fd's signed bytes by reading its candidate again; it
// fails when the file changed since (then nothing is claimed about it).
func (s *scanner) reread(fd *found) bool {
	r := s.read(s.cands[fd.order], fd.order)
	if r == nil {
		return false
	}
	for _, again := range r.found {
		if again.identity == fd.identity && again.info.Name == fd.info.Name && again.signed != nil && again.sigID == fd.sigID {
			fd.signed = again.signed
			return true
		}
	}
	return false
}
