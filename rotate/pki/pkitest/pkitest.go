// Package pkitest makes certificate authorities, leaves and whole node PKI
// layouts with chosen dates, so that tests and the demo never wait for time
// to pass. It is not for production keys: it favours speed (ECDSA P-256 by
// default) and writes whatever it is told to.
package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/certagent/certagent/rotate/pki"
)

// KeyType selects the private key algorithm of generated certificates.
type KeyType string

// Key types.
const (
	ECDSA KeyType = "ecdsa" // P-256
	RSA   KeyType = "rsa"   // 2048 bits
)

// NewKey generates a private key of the given type.
func NewKey(t KeyType) (crypto.Signer, error) {
	if t == RSA {
		return rsa.GenerateKey(rand.Reader, 2048)
	}
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// CA is a certificate authority: its certificate and key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Spec describes a certificate to issue. Zero dates mean "now" and
// "NotBefore plus one year".
type Spec struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	URIs         []*url.URL
	Emails       []string
	NotBefore    time.Time
	NotAfter     time.Time
	ExtKeyUsage  []x509.ExtKeyUsage
	KeyType      KeyType
	// IsCA makes an intermediate CA when passed to CA.Issue.
	IsCA bool
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n.Add(n, big.NewInt(1))
}

func skid(pub crypto.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha1.Sum(der)
	return sum[:]
}

func (s Spec) template() *x509.Certificate {
	nb := s.NotBefore
	if nb.IsZero() {
		nb = time.Now()
	}
	na := s.NotAfter
	if na.IsZero() {
		na = nb.AddDate(1, 0, 0)
	}
	t := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: s.CommonName, Organization: s.Organization},
		DNSNames:              s.DNSNames,
		IPAddresses:           s.IPs,
		URIs:                  s.URIs,
		EmailAddresses:        s.Emails,
		NotBefore:             nb.UTC(),
		NotAfter:              na.UTC(),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           s.ExtKeyUsage,
		BasicConstraintsValid: true,
	}
	if s.IsCA {
		t.IsCA = true
		t.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign
		t.ExtKeyUsage = nil
	}
	return t
}

// NewCA makes a self-signed root CA valid from notBefore to notAfter.
func NewCA(cn string, notBefore, notAfter time.Time, kt KeyType) (*CA, error) {
	key, err := NewKey(kt)
	if err != nil {
		return nil, err
	}
	t := Spec{CommonName: cn, NotBefore: notBefore, NotAfter: notAfter, IsCA: true}.template()
	t.SubjectKeyId = skid(key.Public())
	der, err := x509.CreateCertificate(rand.Reader, t, t, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA %s: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue signs a new certificate for s with a fresh key.
func (ca *CA) Issue(s Spec) (*x509.Certificate, crypto.Signer, error) {
	key, err := NewKey(s.KeyType)
	if err != nil {
		return nil, nil, err
	}
	cert, err := ca.Sign(s, key.Public())
	return cert, key, err
}

// Sign signs a certificate for s over an existing public key.
func (ca *CA) Sign(s Spec, pub crypto.PublicKey) (*x509.Certificate, error) {
	t := s.template()
	t.SubjectKeyId = skid(pub)
	der, err := x509.CreateCertificate(rand.Reader, t, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: %w", s.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

// CertPEM encodes certificates as PEM, in order (pki.EncodeCertPEM).
func CertPEM(certs ...*x509.Certificate) []byte {
	return pki.EncodeCertPEM(certs...)
}

// KeyPEM encodes a private key as pki.EncodeKeyPEM does.
func KeyPEM(key crypto.Signer) []byte {
	b, err := pki.EncodeKeyPEM(key, "")
	if err != nil {
		panic(fmt.Sprintf("pkitest: marshal key: %v", err)) // only on an unknown key type: a test bug
	}
	return b
}
