package rotate

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/certagent/certagent/rotate/pki"
)

// Storage says how a certificate and its key are kept on disk.
type Storage string

// Storages.
const (
	StoragePair       Storage = "pair"       // a certificate file and a key file
	StorageCombined   Storage = "combined"   // certificate and key in one PEM file
	StorageKubeconfig Storage = "kubeconfig" // client-certificate-data and client-key-data of a kubeconfig user
	// StorageKubeletStore is the kubelet's store: a new
	// <prefix>-<timestamp>.pem (certificate and key) and the
	// <prefix>-current.pem link swapped to it. Its targets are made by
	// KubeletStore.Update.
	StorageKubeletStore Storage = "kubelet-store"
)

// Target is one certificate to renew and where it lives. Paths are node
// paths (below the Root).
type Target struct {
	Name    string
	Storage Storage
	// CertPath is the certificate file, the combined file or the kubeconfig.
	CertPath string
	KeyPath  string // StoragePair only
	User     string // StorageKubeconfig only
	// file is the new timestamped file of a StorageKubeletStore target
	// (CertPath is its -current.pem link).
	file string
	// CA re-signs the certificate (Renew). For certificates issued
	// elsewhere (Install), CA is nil and Roots, when set, is what the new
	// certificate must chain to.
	CA    *LocalCA
	Roots *x509.CertPool
	// SelfSigned marks a pair whose certificate file bundles the
	// self-signed CA that issued it (the kubelet's kubelet.crt). Renew
	// makes a new pair the kubelet's way (see prepareSelfSigned), and the
	// transaction checks it in a narrow mode of its own: the new leaf
	// chains to the CA bundled with it in the new file and keeps the old
	// DNS and IP names; the subject (a timestamp) and the CA are new.
	SelfSigned bool
}

// Files lists the files that hold t's certificate and key now.
func (t Target) Files() []string {
	c, err := codecOf(t.Storage)
	if err != nil {
		return []string{t.CertPath}
	}
	return c.files(t)
}

// current is a target's material as found on disk: the pair, and the
// files it was read from. cert is nil only for a kubelet store that has
// no usable current pair (see KubeletStore.Update).
type current struct {
	decoded
	files map[string]*pki.File // by node path
}

// load reads the current certificate and key of t.
func load(root *pki.Root, t Target) (*current, error) {
	c, err := codecOf(t.Storage)
	if err != nil {
		return nil, err
	}
	cur := &current{files: map[string]*pki.File{}}
	data := map[string][]byte{}
	for _, p := range c.files(t) {
		f, err := root.ReadFile(p)
		if err != nil {
			return nil, err
		}
		cur.files[p], data[p] = f, f.Data
	}
	d, err := c.decode(t, data)
	var pe *partError
	switch {
	case errors.As(err, &pe) && pe.key:
		return nil, fmt.Errorf("current key: %w", pe.err)
	case errors.As(err, &pe):
		return nil, fmt.Errorf("current certificate %s: %w", t.CertPath, pe.err)
	case err != nil:
		return nil, err
	}
	cur.decoded = d
	return cur, nil
}

// render produces the new files of t, in the order they are committed.
func render(t Target, cur *current, certs []*x509.Certificate, key crypto.Signer) ([]newFile, error) {
	c, err := codecOf(t.Storage)
	if err != nil {
		return nil, err
	}
	return c.encode(t, cur, certs, key)
}

// verify checks a certificate and key as the transaction stages and reads
// them back: the key is the certificate's, the certificate chains to the
// CA, and its subject, names and usages are those of the old one. bundled
// is what follows the certificate in its file (a self-signed target's CA).
func verify(t Target, old, cert *x509.Certificate, bundled []*x509.Certificate, key crypto.Signer, now time.Time) error {
	if keyless(t.Storage) {
		return nil // its codec checked every certificate is a CA
	}
	if !pki.KeyMatches(cert, key) {
		return fmt.Errorf("%s: private key does not match the certificate", t.Name)
	}
	if t.SelfSigned {
		return verifySelfSigned(t, old, cert, bundled, now)
	}
	if t.CA == nil {
		if t.Roots == nil {
			return nil
		}
		inter := x509.NewCertPool()
		for _, c := range bundled {
			inter.AddCert(c)
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: t.Roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: now}); err != nil {
			return fmt.Errorf("%s: chain: %w", t.Name, err)
		}
		return nil
	}
	if !pki.SignedBy(cert, t.CA.Cert) {
		return fmt.Errorf("%s: does not chain to CA %s", t.Name, t.CA.Name)
	}
	pool := x509.NewCertPool()
	pool.AddCert(t.CA.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: now}); err != nil {
		return fmt.Errorf("%s: chain to CA %s: %w", t.Name, t.CA.Name, err)
	}
	return sameIdentity(old, cert)
}

// sameIdentity compares what a renewal must keep.
func sameIdentity(old, cert *x509.Certificate) error {
	switch {
	case !bytes.Equal(old.RawSubject, cert.RawSubject):
		return fmt.Errorf("subject changed: %s -> %s", old.Subject, cert.Subject)
	case !bytes.Equal(sanBytes(old), sanBytes(cert)):
		return fmt.Errorf("subject alternative names changed")
	case old.KeyUsage != cert.KeyUsage:
		return fmt.Errorf("key usage changed: %v -> %v", old.KeyUsage, cert.KeyUsage)
	case !reflect.DeepEqual(old.ExtKeyUsage, cert.ExtKeyUsage) || !reflect.DeepEqual(old.UnknownExtKeyUsage, cert.UnknownExtKeyUsage):
		return fmt.Errorf("extended key usage changed: %v -> %v", old.ExtKeyUsage, cert.ExtKeyUsage)
	}
	return nil
}

func sanBytes(c *x509.Certificate) []byte {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidSAN) {
			return e.Value
		}
	}
	return nil
}

// parseRendered reads back a staged or final file set of t: the
// certificate, the certificates bundled after it, and the key.
func parseRendered(t Target, files map[string][]byte) (*x509.Certificate, []*x509.Certificate, crypto.Signer, error) {
	c, err := codecOf(t.Storage)
	if err != nil {
		return nil, nil, nil, err
	}
	d, err := c.decode(t, files)
	if err != nil {
		return nil, nil, nil, err
	}
	return d.cert, d.bundled, d.key, nil
}
