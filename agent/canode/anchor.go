package canode

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"

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
