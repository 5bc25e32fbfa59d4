// Package carotate keeps the files of a CA rotation on a node: the new CA
// staged next to the old one as <stem>.next.crt and <stem>.next.key, made
// here (same subject, a new key of the same algorithm and size, a new
// serial) or supplied by the operator and checked. Every write goes
// through the root's confined writes (rotate/pki).
package carotate

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path"
	"time"

	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Files are the node paths of one CA's files in the PKI directory.
type Files struct {
	Cert, Key         string // <stem>.crt, <stem>.key: the CA in use
	NextCert, NextKey string // <stem>.next.crt, <stem>.next.key: the new CA, staged
}

// Stems maps the kubeadm CA names to their file stems below the PKI directory.
var Stems = map[string]string{"ca": "ca", "front-proxy-ca": "front-proxy-ca", "etcd-ca": "etcd/ca"}

// FilesFor returns the files of the CA named ca (ca, front-proxy-ca or
// etcd-ca) in pkiDir.
func FilesFor(pkiDir, ca string) (Files, error) {
	stem, ok := Stems[ca]
	if !ok {
		return Files{}, fmt.Errorf("unknown CA %q: one of ca, etcd-ca, front-proxy-ca", ca)
	}
	p := path.Join(pkiDir, stem)
	return Files{Cert: p + ".crt", Key: p + ".key", NextCert: p + ".next.crt", NextKey: p + ".next.key"}, nil
}

// NewCA makes a successor of old valid from now: the same subject (byte
// for byte), key usages and path length, a new key of the same algorithm
// and size, a new random serial, and the old CA's lifetime.
func NewCA(old *x509.Certificate, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := rotate.NewKey(old.PublicKey, "")
	if err != nil {
		return nil, nil, fmt.Errorf("new CA key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	notBefore, notAfter := rotate.Validity(now, old.NotAfter.Sub(old.NotBefore), now.Add(old.NotAfter.Sub(old.NotBefore)))
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)), RawSubject: old.RawSubject, Subject: old.Subject,
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: old.KeyUsage | x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: old.MaxPathLen, MaxPathLenZero: old.MaxPathLenZero,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// CheckPair checks that cert is a CA that may sign certificates, that key
// is its key, that it signed itself, and (old set) that it has old's
// subject and is not old itself.
func CheckPair(cert *x509.Certificate, key crypto.Signer, old *x509.Certificate) error {
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return errors.New("not a CA certificate")
	case cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0:
		return errors.New("a CA certificate without the certificate-signing key usage")
	case key == nil || !pki.KeyMatches(cert, key):
		return errors.New("the key is not the certificate's")
	case cert.CheckSignatureFrom(cert) != nil:
		return errors.New("not self-signed (certagent rotates to a self-signed CA only)")
	case old == nil:
		return nil
	case !bytes.Equal(cert.RawSubject, old.RawSubject):
		return fmt.Errorf("its subject %q is not the current CA's %q", cert.Subject, old.Subject)
	case bytes.Equal(cert.Raw, old.Raw) || pki.PublicKeyMatches(cert.PublicKey, old.PublicKey):
		return errors.New("it has the current CA's key: a rotation needs a new key")
	}
	return nil
}

// ParsePair reads a certificate and key from PEM (the first certificate
// of certPEM) and checks them with CheckPair against old.
func ParsePair(certPEM, keyPEM []byte, old *x509.Certificate) (*x509.Certificate, crypto.Signer, error) {
	b, err := pki.ParseBundle(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate: %w", err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	if err := CheckPair(b.Certs[0], key, old); err != nil {
		return nil, nil, err
	}
	return b.Certs[0], key, nil
}

// LoadStaged reads the staged new CA. It returns (nil, nil, nil) when
// neither file is there, and an error when one is missing, unreadable or
// the pair fails CheckPair against old.
func LoadStaged(root *pki.Root, f Files, old *x509.Certificate) (*x509.Certificate, crypto.Signer, error) {
	cf, cerr := root.ReadFile(f.NextCert)
	kf, kerr := root.ReadFile(f.NextKey)
	if errors.Is(cerr, fs.ErrNotExist) && errors.Is(kerr, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err := errors.Join(cerr, kerr); err != nil {
		return nil, nil, err
	}
	if kf.Mode&0o077 != 0 {
		return nil, nil, fmt.Errorf("%s is readable or writable by group or others (mode %04o); chmod 600 it", f.NextKey, kf.Mode)
	}
	cert, key, err := ParsePair(cf.Data, kf.Data, old)
	if err != nil {
		return nil, nil, fmt.Errorf("%s, %s: %w", f.NextCert, f.NextKey, err)
	}
	return cert, key, nil
}

// Stage writes the new CA as f.NextKey (0600) then f.NextCert (0644),
// each atomically and durably inside the root, in the key format of the
// CA key in use (keyFormat, see pki.KeyPEMFormat). The key goes first: a
// crash in between leaves a pair that LoadStaged refuses, never a
// certificate without its key.
func Stage(root *pki.Root, f Files, cert *x509.Certificate, key crypto.Signer, keyFormat string) error {
	keyPEM, err := pki.EncodeKeyPEM(key, keyFormat)
	if err != nil {
		return fmt.Errorf("stage %s: %w", f.NextKey, err)
	}
	uid, gid := os.Geteuid(), os.Getegid()
	if err := root.WriteFile(f.NextKey, keyPEM, 0o600, uid, gid); err != nil {
		return err
	}
	return root.WriteFile(f.NextCert, pki.EncodeCertPEM(cert), 0o644, uid, gid)
}
