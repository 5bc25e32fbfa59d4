package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
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
	if len(child.AuthorityKeyId) > 0 && len(parent.SubjectKeyId) > 0 {
		if string(child.AuthorityKeyId) != string(parent.SubjectKeyId) {
			return false
		}
	} else if string(child.RawIssuer) != string(parent.RawSubject) {
		return false
	}
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
