package carotate

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/certagent/certagent/rotate"
	cafiles "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Local is this node's side of the command: the CA in use and the new
// CA staged next to it (rotate/carotate's files, the ones the daemon
// converges with).
type Local struct {
	Root   *pki.Root
	PKIDir string
	Files  cafiles.Paths
	CA     string // ca, etcd-ca or front-proxy-ca
}

// NewLocal returns the files of the CA named ca below pkiDir.
func NewLocal(root *pki.Root, pkiDir, ca string) (*Local, error) {
	files, err := cafiles.PathsFor(pkiDir, ca)
	if err != nil {
		return nil, err
	}
	return &Local{Root: root, PKIDir: pkiDir, Files: files, CA: ca}, nil
}

// Current reads the CA in use with its key. refusal is set (and err nil)
// when the node cannot rotate it: no key (an external CA), or a key that
// is unsafe or not the certificate's.
func (l *Local) Current() (ca *rotate.LocalCA, refusal string) {
	ca, err := rotate.LoadLocalCA(l.Root, l.CA, l.Files.Cert, l.Files.Key)
	switch {
	case errors.Is(err, rotate.ErrExternalCA):
		return nil, fmt.Sprintf("external CA: %s has no key (%s); certagent does not rotate a CA it cannot sign with", l.Files.Cert, l.Files.Key)
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Sprintf("CA %s: %s does not exist on this node", l.CA, l.Files.Cert)
	case err != nil:
		return nil, fmt.Sprintf("CA %s cannot be used: %v", l.CA, err)
	}
	return ca, ""
}

// Pair is a CA certificate with its key, as PEM (--new-ca-cert, --new-ca-key).
type Pair struct {
	CertPEM, KeyPEM []byte
}

// Prepare stages the new CA next to cur and returns it: the supplied
// pair (checked), else a pair already staged and valid (a rerun, or one
// the operator placed), else a new one made from cur at now. A staged
// pair that fails the checks is an error, never overwritten; a staged
// key without its certificate (a crash in between) is replaced.
func (l *Local) Prepare(cur *rotate.LocalCA, supplied *Pair, now time.Time) (*x509.Certificate, error) {
	stem, err := cafiles.Stem(l.CA)
	if err != nil {
		return nil, err
	}
	if supplied != nil {
		cert, key, err := cafiles.ParsePair(supplied.CertPEM, supplied.KeyPEM, cur.Cert)
		if err == nil {
			err = cafiles.CheckLifetime(cur.Cert, cert, now)
		}
		if err != nil {
			return nil, fmt.Errorf("the supplied CA: %w", err)
		}
		return cert, cafiles.Stage(l.Root, l.PKIDir, stem, cert, key)
	}
	staged, _, err := cafiles.Staged(l.Root, l.PKIDir, stem)
	switch {
	case err == nil:
		if err := errors.Join(cafiles.CheckSuccessor(cur.Cert, staged), cafiles.CheckLifetime(cur.Cert, staged, now)); err != nil {
			return nil, fmt.Errorf("%s: %w; remove both files to have certagent make a new CA", l.Files.NextCert, err)
		}
		return staged, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w; remove both files to have certagent make a new CA", err)
	}
	cert, key, err := cafiles.NewCA(cur.Cert, cur.Key, now)
	if err != nil {
		return nil, err
	}
	return cert, cafiles.Stage(l.Root, l.PKIDir, stem, cert, key)
}
