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
// CA staged next to it.
//
// Seam: the node side (the daemon's convergence) keeps the same files;
// when it brings its own staging, Prepare and StageOnly should call it.
type Local struct {
	Root  *pki.Root
	Files cafiles.Files
	CA    string // ca, etcd-ca or front-proxy-ca
}

// Current reads the CA in use with its key. refusal is set (and err nil)
// when the node cannot rotate it: no key (an external CA), or a key that
// is unsafe or not the certificate's. keyFormat is the key's PEM type.
func (l *Local) Current() (ca *rotate.LocalCA, keyFormat, refusal string, err error) {
	ca, err = rotate.LoadLocalCA(l.Root, l.CA, l.Files.Cert, l.Files.Key)
	switch {
	case errors.Is(err, rotate.ErrExternalCA):
		return nil, "", fmt.Sprintf("external CA: %s has no key (%s); certagent does not rotate a CA it cannot sign with", l.Files.Cert, l.Files.Key), nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, "", fmt.Sprintf("CA %s: %s does not exist on this node", l.CA, l.Files.Cert), nil
	case err != nil:
		return nil, "", fmt.Sprintf("CA %s cannot be used: %v", l.CA, err), nil
	}
	kf, err := l.Root.ReadFile(l.Files.Key)
	if err != nil {
		return nil, "", "", err
	}
	return ca, pki.KeyPEMFormat(kf.Data), "", nil
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
func (l *Local) Prepare(cur *rotate.LocalCA, keyFormat string, supplied *Pair, now time.Time) (*x509.Certificate, error) {
	if supplied != nil {
		cert, key, err := cafiles.ParsePair(supplied.CertPEM, supplied.KeyPEM, cur.Cert)
		if err != nil {
			return nil, fmt.Errorf("the supplied CA: %w", err)
		}
		if staged, _, err := cafiles.LoadStaged(l.Root, l.Files, cur.Cert); err == nil && staged != nil && staged.Equal(cert) {
			return cert, nil
		}
		return cert, cafiles.Stage(l.Root, l.Files, cert, key, keyFormat)
	}
	staged, _, err := cafiles.LoadStaged(l.Root, l.Files, cur.Cert)
	if staged != nil {
		return staged, nil
	}
	if _, cerr := l.Root.ReadFile(l.Files.NextCert); err != nil && !errors.Is(cerr, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w; remove both files to have certagent make a new CA", err)
	}
	cert, key, err := cafiles.NewCA(cur.Cert, now)
	if err != nil {
		return nil, err
	}
	return cert, cafiles.Stage(l.Root, l.Files, cert, key, keyFormat)
}
