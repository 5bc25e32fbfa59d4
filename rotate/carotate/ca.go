// Package carotate is the node side of a CA rotation in files: a new CA
// made or checked and staged next to the old one (<stem>.next.crt and
// <stem>.next.key), the trust bundles that hold a CA found and given the
// new one or rid of the old one, the signer switch (<stem>.crt and
// <stem>.key to the new CA, the old one kept bundled), and what on the
// node still depends on the old CA. It talks to no API server. Every
// write goes through rotate's transaction inside the pki.Root; every file
// read is untrusted: one that is not what it should be is an error of its
// own, never a stop for the others.
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

// Stem is where kubeadm keeps a CA below the PKI directory, without
// .crt/.key: ca, front-proxy-ca or etcd/ca for the CA names ca,
// front-proxy-ca and etcd-ca.
func Stem(caName string) (string, error) {
	switch caName {
	case "ca", "front-proxy-ca":
		return caName, nil
	case "etcd-ca":
		return "etcd/ca", nil
	}
	return "", fmt.Errorf("unknown CA %q: one of ca, etcd-ca, front-proxy-ca", caName)
}

// Paths are the files of one CA below a PKI directory (node paths).
type Paths struct {
	Cert, Key, NextCert, NextKey string
	// Signer is the one-certificate file the controller manager signs
	// with during a rotation (its --cluster-signing-cert-file): the CA
	// of Key alone, while Cert holds two CAs.
	Signer string
}

// PathsOf returns the files of the CA stem below pkiDir.
func PathsOf(pkiDir, stem string) Paths {
	p := path.Join(pkiDir, stem)
	return Paths{Cert: p + ".crt", Key: p + ".key", NextCert: p + ".next.crt", NextKey: p + ".next.key", Signer: p + ".signer.crt"}
}

// PathsFor returns the files of the CA named caName (ca, etcd-ca or
// front-proxy-ca) below pkiDir.
func PathsFor(pkiDir, caName string) (Paths, error) {
	stem, err := Stem(caName)
	if err != nil {
		return Paths{}, err
	}
	return PathsOf(pkiDir, stem), nil
}

// ParsePair reads a CA the operator supplies (the first certificate of
// certPEM, and keyPEM) and checks that the key is the certificate's and
// that it may replace old.
func ParsePair(certPEM, keyPEM []byte, old *x509.Certificate) (*x509.Certificate, crypto.Signer, error) {
	cert, key, err := ReadPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	if err := CheckSuccessor(old, cert); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// ReadPair reads a CA the operator supplies (the first certificate of
// certPEM, and keyPEM) and checks that the key is the certificate's; not
// what it replaces (see CheckSuccessor).
func ReadPair(certPEM, keyPEM []byte) (*x509.Certificate, crypto.Signer, error) {
	b, err := pki.ParseBundle(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate: %w", err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("key: %w", err)
	}
	if !pki.KeyMatches(b.Certs[0], key) {
		return nil, nil, errors.New("the key is not the certificate's")
	}
	return b.Certs[0], key, nil
}

// NewCA makes the successor of the CA old, whose key oldKey proves the
// caller holds it: the same subject, a new key of the same algorithm and
// size, a new serial, and the old CA's lifetime counted from now.
func NewCA(old *x509.Certificate, oldKey crypto.Signer, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	if !pki.IsCA(old) {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", old.Subject)
	}
	if oldKey == nil || !pki.KeyMatches(old, oldKey) {
		return nil, nil, errors.New("the CA key is not the CA certificate's")
	}
	key, err := rotate.NewKey(old.PublicKey, "")
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	notBefore := now.Add(-rotate.Backdate).UTC()
	t := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)), RawSubject: old.RawSubject,
		NotBefore: notBefore, NotAfter: notBefore.Add(old.NotAfter.Sub(old.NotBefore)),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true, IsCA: true, SubjectKeyId: rotate.SubjectKeyID(key.Public()),
	}
	der, err := x509.CreateCertificate(rand.Reader, t, t, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign the new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// CheckSuccessor checks that next may replace old: a CA certificate
// that may sign certificates, validly self-signed, of the same subject,
// and not old itself.
func CheckSuccessor(old, next *x509.Certificate) error {
	switch {
	case !pki.IsCA(next) || next.KeyUsage != 0 && next.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("the new CA %s is not a CA certificate that may sign certificates", next.Subject)
	case next.CheckSignatureFrom(next) != nil:
		return fmt.Errorf("the new CA %s is not validly self-signed", next.Subject)
	case !bytes.Equal(old.RawSubject, next.RawSubject):
		return fmt.Errorf("the new CA's subject %s is not the old CA's %s", next.Subject, old.Subject)
	case next.Equal(old) || pki.PublicKeyMatches(next.PublicKey, old.PublicKey):
		return errors.New("the new CA has the old CA's key")
	}
	return nil
}

// Stage places a new CA as <stem>.next.crt (0644) and <stem>.next.key
// (0600) below pkiDir, after checking that the key is the certificate's
// and that it may replace the CA in <stem>.crt. Staging the same CA
// again does nothing; a different one already staged is an error, and so
// is a staged pair that cannot be used (unreadable, a key others may
// read, a key that is not the certificate's, a certificate without its
// key): its key may be the only copy of a CA already trusted, so it is
// never overwritten. Only a key without its certificate (Stage killed
// between its two writes) is replaced.
func Stage(root *pki.Root, pkiDir, stem string, cert *x509.Certificate, key crypto.Signer) error {
	p := PathsOf(pkiDir, stem)
	if !pki.KeyMatches(cert, key) {
		return errors.New("the new CA key is not the new CA certificate's")
	}
	old, err := readCA(root, p.Cert)
	if err != nil {
		return err
	}
	if err := CheckSuccessor(old, cert); err != nil {
		return err
	}
	staged, _, err := Staged(root, pkiDir, stem)
	switch {
	case err == nil && staged.Equal(cert):
		return nil
	case err == nil:
		return fmt.Errorf("%s holds another new CA (serial %X): remove it first", p.NextCert, staged.SerialNumber)
	case !errors.Is(err, fs.ErrNotExist) || exists(root, p.NextCert):
		return fmt.Errorf("a new CA staged here cannot be used (%w); it is never overwritten, its key may be the only copy of a CA already trusted: fix it, or remove %s and %s first", err, p.NextCert, p.NextKey)
	}
	keyPEM, err := pki.EncodeKeyPEM(key, "")
	if err != nil {
		return err
	}
	uid, gid := os.Geteuid(), os.Getegid()
	// The key first: a crash between the two leaves no certificate, and
	// Staged reports nothing staged.
	if err := root.WriteFile(p.NextKey, keyPEM, 0o600, uid, gid); err != nil {
		return fmt.Errorf("write %s: %w", p.NextKey, err)
	}
	if err := root.WriteFile(p.NextCert, pki.EncodeCertPEM(cert), 0o644, uid, gid); err != nil {
		return fmt.Errorf("write %s: %w", p.NextCert, err)
	}
	return nil
}

// Staged reads the staged new CA and its key. An error wrapping
// fs.ErrNotExist means none is staged (or only its key, from a crash).
func Staged(root *pki.Root, pkiDir, stem string) (*x509.Certificate, crypto.Signer, error) {
	p := PathsOf(pkiDir, stem)
	cert, err := readCA(root, p.NextCert)
	if err != nil {
		return nil, nil, err
	}
	kf, err := root.ReadFile(p.NextKey)
	if err != nil {
		return nil, nil, fmt.Errorf("the new CA key: %w", err)
	}
	if kf.Mode&0o077 != 0 || kf.UID != os.Geteuid() {
		return nil, nil, fmt.Errorf("%w: %s is mode %04o, uid %d: chmod 600 it, owned by uid %d", rotate.ErrUnsafeCAKey, p.NextKey, kf.Mode, kf.UID, os.Geteuid())
	}
	key, err := pki.ParseKeyPEM(kf.Data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p.NextKey, err)
	}
	if !pki.KeyMatches(cert, key) {
		return nil, nil, fmt.Errorf("%s is not the key of %s", p.NextKey, p.NextCert)
	}
	return cert, key, nil
}

// HasKey reports whether the staged new CA key below pkiDir belongs to
// next (the "newKey" a node reports).
func HasKey(root *pki.Root, pkiDir, stem string, next *x509.Certificate) bool {
	cert, _, err := Staged(root, pkiDir, stem)
	if err == nil && cert.Equal(next) {
		return true
	}
	// After the switch the new key is the CA key itself.
	ca, err := rotate.LoadLocalCA(root, stem, PathsOf(pkiDir, stem).Cert, PathsOf(pkiDir, stem).Key)
	return err == nil && ca.Cert.Equal(next)
}

// exists reports whether p is there (or cannot be told apart from being
// there: any error but not-exist).
func exists(root *pki.Root, p string) bool {
	_, err := root.ReadFile(p)
	return !errors.Is(err, fs.ErrNotExist)
}

// readCA reads the first certificate of a CA file.
func readCA(root *pki.Root, p string) (*x509.Certificate, error) {
	f, err := root.ReadFile(p)
	if err != nil {
		return nil, err
	}
	b, err := pki.ParseBundle(f.Data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if !pki.IsCA(b.Certs[0]) {
		return nil, fmt.Errorf("%s: %s is not a CA certificate", p, b.Certs[0].Subject)
	}
	return b.Certs[0], nil
}
