package canode

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
)

// anchor ties the rotation to this node's own files, so that a
// ConfigMap consistent only with itself (Verify) gets no CA trusted here:
// the rotation's old CA (or, once the node went past it, its new CA)
// must be the CA of the rotation's name in <pki>/<stem>.crt. A node
// without that file (a worker without the etcd CA) checks that the old
// CA is no other CA's there; the bundles it then edits are only those
// that hold the old CA, whose key signed the proof.
func (s *step) anchor() error {
	own := ca.PathsOf(s.in.Config.PKIDir, s.stem).Cert
	certs, err := s.caFile(own)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("%s: %w", own, err)
	case holds(certs, s.old) || holds(certs, s.next):
		return nil
	}
	for _, name := range []string{"ca", "etcd-ca", "front-proxy-ca"} {
		stem, _ := ca.Stem(name)
		if stem == s.stem {
			continue
		}
		other := ca.PathsOf(s.in.Config.PKIDir, stem).Cert
		if c, err := s.caFile(other); err == nil && holds(c, s.old) {
			return fmt.Errorf("oldCA (%s, serial %X) is the CA of %s (%s), not of %s: the rotation names another CA than it replaces", s.old.Subject, s.old.SerialNumber, name, other, s.in.Cluster.CA)
		}
	}
	if certs != nil {
		return fmt.Errorf("oldCA (%s, serial %X) is not the CA in %s: this node does not take part in a rotation of another CA", s.old.Subject, s.old.SerialNumber, own)
	}
	return nil
}

// caFile reads the certificates of a CA file.
func (s *step) caFile(p string) ([]*x509.Certificate, error) {
	f, err := s.n.Root.ReadFile(p)
	if err != nil {
		return nil, err
	}
	b, err := pki.ParseBundle(f.Data)
	if err != nil {
		return nil, err
	}
	return b.Certs, nil
}

func holds(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range certs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// nextStaged: on a node with the CA key, the rotation's new CA is staged
// (<stem>.next.crt) or already signs.
func (s *step) nextStaged() bool {
	p := ca.PathsOf(s.in.Config.PKIDir, s.stem)
	if certs, err := s.caFile(p.NextCert); err == nil && len(certs) == 1 && certs[0].Equal(s.next) {
		return true
	}
	return s.signerIsNext()
}

// signerIsNext: the CA key on this node is the rotation's new CA's, read
// from the files (never from a record that may be stale).
func (s *step) signerIsNext() bool {
	p := ca.PathsOf(s.in.Config.PKIDir, s.stem)
	lc, err := rotate.LoadLocalCA(s.n.Root, s.stem, p.Cert, p.Key)
	return err == nil && lc.Cert.Equal(s.next)
}

// joinedAfter: the rotation is over (phase done) and this node, with no
// record of it, holds nothing of the old CA (a node that joined, or was
// rebuilt, since): every phase is recorded done without running one (no
// signer file written, no restart, no lifetime check of a CA that may
// have expired since). False, and nothing recorded, otherwise.
func (s *step) joinedAfter() bool {
	if s.in.Cluster.Phase != carotate.Done || len(s.it.PhasesDone) > 0 {
		return false
	}
	if own, err := s.caFile(ca.PathsOf(s.in.Config.PKIDir, s.stem).Cert); err == nil && holds(own, s.old) {
		return false
	}
	bundles, probs := ca.Find(s.n.Root, s.sources(), s.old)
	all := make([]ca.Leaf, 0, len(s.in.Leaves))
	for _, l := range s.in.Leaves {
		all = append(all, l.Leaf)
	}
	still, probs2 := ca.IssuedBy(s.n.Root, all, s.old)
	if len(bundles)+len(probs)+len(still)+len(probs2) > 0 {
		return false
	}
	now := s.in.Now.UTC()
	s.it.Phase, s.it.Since, s.it.Done, s.it.DoneAt = carotate.Done, now, true, &now
	s.it.PhasesDone = slices.Clone(carotate.Phases)
	if err := s.it.save(s.n.StateDir); err != nil {
		s.block(err.Error())
		return true
	}
	s.out.Report.Phase, s.out.Status.NodePhase, s.out.Status.Since = carotate.Done, string(carotate.Done), now
	s.done()
	return true
}
