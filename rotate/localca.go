package rotate

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/certagent/certagent/rotate/pki"
)

// Errors callers branch on.
var (
	// ErrExternalCA: the issuing CA's key is not on this node.
	ErrExternalCA = errors.New("CA key not on this node (externally managed)")
	// ErrUnsafeCAKey: the CA key's permissions or owner are not safe.
	ErrUnsafeCAKey = errors.New("unsafe CA key")
	// ErrNotIssuedBy: the current certificate was not signed by the CA.
	ErrNotIssuedBy = errors.New("certificate not signed by this CA")
)

// Backdate is how far before "now" a renewed certificate becomes valid, so
// that clocks a little behind still accept it (kubeadm uses the same).
const Backdate = 5 * time.Minute

// Validity returns the validity of a certificate renewed at now for the
// given lifetime: it starts Backdate in the past (a tenth of the lifetime
// for short-lived certificates) and never ends after the CA does.
func Validity(now time.Time, lifetime time.Duration, caNotAfter time.Time) (notBefore, notAfter time.Time) {
	back := Backdate
	if lifetime/10 < back {
		back = lifetime / 10
	}
	notBefore = now.Add(-back).UTC()
	notAfter = notBefore.Add(lifetime)
	if notAfter.After(caNotAfter) {
		notAfter = caNotAfter.UTC()
	}
	return notBefore, notAfter
}

// LocalCA is a certificate authority whose key is on this node.
type LocalCA struct {
	Name string
	Cert *x509.Certificate
	Key  crypto.Signer
	// Previous is, during a rotation (`certagent ca rotate`) once Key is
	// the new CA's, the CA being replaced (set by Retire, never from the
	// file alone). Certificates it issued are re-signed by Cert; it never
	// signs.
	Previous []*x509.Certificate
	// bundled are the certificates of the CA's file.
	bundled []*x509.Certificate
}

// Retire lets ca re-sign what old issued: old must be a CA of ca's
// subject bundled in ca's file, not ca itself. The caller vouches that
// old is the CA a rotation replaces with ca (its own record of the
// rotation); a same-subject CA that is merely in the file never is.
func (ca *LocalCA) Retire(old *x509.Certificate) bool {
	if old == nil || old.Equal(ca.Cert) || !pki.IsCA(old) || !bytes.Equal(old.RawSubject, ca.Cert.RawSubject) {
		return false
	}
	for _, c := range ca.bundled {
		if c.Equal(old) {
			ca.Previous = []*x509.Certificate{old}
			return true
		}
	}
	return false
}

// Issued reports whether c was signed by the CA or by a CA it replaces.
func (ca *LocalCA) Issued(c *x509.Certificate) bool {
	if pki.SignedBy(c, ca.Cert) {
		return true
	}
	for _, p := range ca.Previous {
		if pki.SignedBy(c, p) {
			return true
		}
	}
	return false
}

// PickCA returns the certificate of a CA file that key belongs to (nil
// when none is): a CA file is a bundle while a CA is being rotated, and
// the one signed with need not be first.
func PickCA(certs []*x509.Certificate, key crypto.Signer) *x509.Certificate {
	for _, c := range certs {
		if pki.KeyMatches(c, key) {
			return c
		}
	}
	return nil
}

// LoadLocalCA reads a CA certificate and key through root and refuses a
// key that others can read, that is owned by another user than the one
// running certagent, or that is not the certificate's.
func LoadLocalCA(root *pki.Root, name, certPath, keyPath string) (*LocalCA, error) {
	cf, err := root.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", name, err)
	}
	b, err := pki.ParseBundle(cf.Data)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %s: %w", name, certPath, err)
	}
	kf, err := root.ReadFile(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("CA %s: %w: no %s", name, ErrExternalCA, keyPath)
	}
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", name, err)
	}
	if kf.Mode&0o077 != 0 {
		return nil, fmt.Errorf("CA %s: %w: %s is readable or writable by group or others (mode %04o); chmod 600 it", name, ErrUnsafeCAKey, keyPath, kf.Mode)
	}
	if euid := os.Geteuid(); kf.UID != euid {
		return nil, fmt.Errorf("CA %s: %w: %s is owned by uid %d, not by uid %d that runs certagent", name, ErrUnsafeCAKey, keyPath, kf.UID, euid)
	}
	key, err := pki.ParseKeyPEM(kf.Data)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %s: %w", name, keyPath, err)
	}
	cert := PickCA(b.Certs, key)
	if cert == nil {
		return nil, fmt.Errorf("CA %s: %w: %s is not the key of %s", name, ErrUnsafeCAKey, keyPath, certPath)
	}
	if !pki.IsCA(cert) {
		return nil, fmt.Errorf("CA %s: %s is not a CA certificate", name, certPath)
	}
	return &LocalCA{Name: name, Cert: cert, Key: key, bundled: b.Certs}, nil
}

// Policy says how a renewed certificate differs from the one it replaces.
type Policy struct {
	// Validity is the new lifetime; 0 keeps the old certificate's.
	Validity time.Duration
	// KeyAlgorithm is "" (same as the old key), rsa-2048, rsa-3072,
	// rsa-4096, ecdsa-p256, ecdsa-p384 or ed25519.
	KeyAlgorithm string
	// ReuseKey keeps the old private key instead of generating a new one.
	ReuseKey bool
}

// KeyAlgorithms lists the values Policy.KeyAlgorithm accepts.
var KeyAlgorithms = []string{"rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384", "ed25519"}

// NewKey generates a private key like pub (same algorithm and size), or
// of the named algorithm.
func NewKey(pub crypto.PublicKey, algorithm string) (crypto.Signer, error) {
	switch algorithm {
	case "rsa-2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	case "rsa-4096":
		return rsa.GenerateKey(rand.Reader, 4096)
	case "ecdsa-p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case "":
	default:
		return nil, fmt.Errorf("unknown key algorithm %q", algorithm)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return rsa.GenerateKey(rand.Reader, k.N.BitLen())
	case *ecdsa.PublicKey:
		return ecdsa.GenerateKey(k.Curve, rand.Reader)
	case ed25519.PublicKey:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	}
	return nil, fmt.Errorf("unsupported key type %T", pub)
}

var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// Reissue signs a successor of old for pub: same subject, the very same
// subjectAltName extension bytes (DNS, IP, URI and e-mail names alike),
// the same key usages and extended key usages; a new serial, a new
// validity that never outlives the CA, and key identifiers for the new key.
func (ca *LocalCA) Reissue(old *x509.Certificate, pub crypto.PublicKey, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	if !ca.Issued(old) {
		return nil, fmt.Errorf("%w %s", ErrNotIssuedBy, ca.Name)
	}
	if validity <= 0 {
		validity = old.NotAfter.Sub(old.NotBefore)
	}
	notBefore, notAfter := Validity(now, validity, ca.Cert.NotAfter)
	if !notAfter.After(now) {
		return nil, fmt.Errorf("CA %s expired %s: it cannot sign a renewal", ca.Name, ca.Cert.NotAfter.Format(time.RFC3339))
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		SerialNumber:          serial.Add(serial, big.NewInt(1)),
		RawSubject:            old.RawSubject,
		NotBefore:             notBefore.UTC(),
		NotAfter:              notAfter.UTC(),
		KeyUsage:              old.KeyUsage,
		ExtKeyUsage:           old.ExtKeyUsage,
		UnknownExtKeyUsage:    old.UnknownExtKeyUsage,
		BasicConstraintsValid: true,
		SubjectKeyId:          subjectKeyID(pub),
	}
	for _, e := range old.Extensions {
		if e.Id.Equal(oidSAN) {
			t.ExtraExtensions = append(t.ExtraExtensions, e)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, t, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign with CA %s: %w", ca.Name, err)
	}
	return x509.ParseCertificate(der)
}

// SubjectKeyID is the key identifier certagent gives a new key: the
// SHA-1 of its public key bits (RFC 5280 method 1).
func SubjectKeyID(pub crypto.PublicKey) []byte { return subjectKeyID(pub) }

// subjectKeyID is the SHA-1 of the public key bits (RFC 5280 method 1).
func subjectKeyID(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	var spki struct {
		Algorithm asn1.RawValue
		Key       asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil
	}
	sum := sha1.Sum(spki.Key.Bytes)
	return sum[:]
}
