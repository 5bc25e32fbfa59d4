package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// KeyMatches reports whether key is the private half of cert's public key.
func KeyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	if cert == nil || key == nil {
		return false
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(key.Public())
}

// PublicKeyMatches reports whether two public keys are the same key.
func PublicKeyMatches(a, b crypto.PublicKey) bool {
	pa, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pa.Equal(b)
}

// DescribeKey names a public key's algorithm and size, e.g. "RSA" and 2048
// or "ECDSA" and 256.
func DescribeKey(pub crypto.PublicKey) (algorithm string, bits int) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return "RSA", k.N.BitLen()
	case *ecdsa.PublicKey:
		return "ECDSA", k.Curve.Params().BitSize
	case ed25519.PublicKey:
		return "Ed25519", 256
	default:
		return fmt.Sprintf("%T", pub), 0
	}
}

// IsCA reports whether cert may sign other certificates.
func IsCA(cert *x509.Certificate) bool {
	return cert.BasicConstraintsValid && cert.IsCA
}

// SignedBy reports whether child was signed by the key of parent. The
// subject/issuer and key-identifier comparison only selects candidates;
// the signature decides.
func SignedBy(child, parent *x509.Certificate) bool {
	s := SignedPart(child)
	return s.MaySign(parent) && s.VerifiedBy(parent)
}

// Signed is what of a certificate its issuer's signature covers, with the
// issuer's name and key identifier that select candidate issuers. It holds
// a few hundred bytes where a parsed certificate holds kilobytes, so a
// scan can keep it for thousands of certificates until every authority is
// known.
type Signed struct {
	Algorithm      x509.SignatureAlgorithm
	TBS, Signature []byte
	AuthorityKeyID []byte
	RawIssuer      []byte
	id             [sha256.Size]byte
}

// SignedPart takes the signed part of c (sharing c's bytes).
func SignedPart(c *x509.Certificate) *Signed {
	s := &Signed{Algorithm: c.SignatureAlgorithm, TBS: c.RawTBSCertificate, Signature: c.Signature,
		AuthorityKeyID: c.AuthorityKeyId, RawIssuer: c.RawIssuer}
	h := sha256.New()
	h.Write([]byte{byte(s.Algorithm)})
	h.Write(s.TBS)
	h.Write(s.Signature)
	h.Sum(s.id[:0])
	return s
}

// ID is a digest of the signed content and its signature: two Signed with
// the same ID verify (or not) alike against the same issuer.
func (s *Signed) ID() [sha256.Size]byte { return s.id }

// MaySign reports whether parent is a candidate issuer: its key
// identifier (when both have one), else its subject, matches.
func (s *Signed) MaySign(parent *x509.Certificate) bool {
	if len(s.AuthorityKeyID) > 0 && len(parent.SubjectKeyId) > 0 {
		return string(s.AuthorityKeyID) == string(parent.SubjectKeyId)
	}
	return string(s.RawIssuer) == string(parent.RawSubject)
}

// VerifiedBy checks the signature with parent's key, and that parent may
// sign certificates, exactly as x509's CheckSignatureFrom does.
func (s *Signed) VerifiedBy(parent *x509.Certificate) bool {
	child := &x509.Certificate{SignatureAlgorithm: s.Algorithm, RawTBSCertificate: s.TBS, Signature: s.Signature}
	return child.CheckSignatureFrom(parent) == nil
}

// ParsePublicKeysPEM parses PEM public keys with client-go's keyutil.
func ParsePublicKeysPEM(data []byte) ([]crypto.PublicKey, error) {
	keys, err := keyutil.ParsePublicKeysPEM(data)
	if err != nil {
		return nil, err
	}
	out := make([]crypto.PublicKey, len(keys))
	for i, k := range keys {
		out[i] = k
	}
	return out, nil
}

// EncodeKeyPEM encodes a private key as PEM. With format "PRIVATE KEY" it
// writes PKCS#8; otherwise client-go's keyutil picks the traditional block
// ("RSA PRIVATE KEY", "EC PRIVATE KEY") and PKCS#8 for the rest.
func EncodeKeyPEM(key crypto.Signer, format string) ([]byte, error) {
	if format != "PRIVATE KEY" {
		if b, err := keyutil.MarshalPrivateKeyToPEM(key); err == nil {
			return b, nil
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// KeyPEMFormat returns the block type of the first private key in PEM data.
func KeyPEMFormat(data []byte) string {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return ""
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			return b.Type
		}
	}
}

// EncodeCertPEM encodes certificates with client-go's certutil.
func EncodeCertPEM(certs ...*x509.Certificate) []byte {
	b, _ := certutil.EncodeCertificates(certs...) // only fails on a nil certificate
	return b
}
