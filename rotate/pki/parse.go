package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"k8s.io/client-go/util/keyutil"
)

// Format says how a file holds its certificate.
type Format string

// The formats certagent reads.
const (
	FormatPEM        Format = "pem"        // PEM certificate(s), the key elsewhere
	FormatCombined   Format = "combined"   // PEM certificate(s) and private key in one file
	FormatDER        Format = "der"        // binary DER certificate(s)
	FormatKubeconfig Format = "kubeconfig" // a kubeconfig; see ParseKubeconfig
)

// Errors for files that hold no usable certificate. Callers branch on them
// with errors.Is.
var (
	ErrEmpty      = errors.New("empty file")
	ErrNoCert     = errors.New("no certificate in file")
	ErrKeyOnly    = errors.New("file holds only a private key, no certificate")
	ErrCSROnly    = errors.New("file holds a certificate signing request, not a certificate")
	ErrTruncated  = errors.New("truncated or malformed PEM block")
	ErrUnknownFmt = errors.New("not a PEM, DER or kubeconfig file")
	// ErrEncryptedKey: the private key is protected by a passphrase
	// (PKCS#8 "ENCRYPTED PRIVATE KEY", or OpenSSL's "Proc-Type:
	// 4,ENCRYPTED" header); nothing on the node could use it unattended.
	ErrEncryptedKey = errors.New("encrypted private key: certagent cannot use a key protected by a passphrase")
)

// Bundle is what one certificate file holds. Certs[0] is the leaf; any
// further certificates are the chain that came with it.
type Bundle struct {
	Format Format
	Certs  []*x509.Certificate
	// Key is the private key found in the same file, if any.
	Key crypto.Signer
	// Warning is set when the certificates were read but the file also
	// holds something wrong, such as data after the last PEM block.
	Warning error
}

var pemBegin = []byte("-----BEGIN ")

// ParseBundle parses PEM (one or more certificates, optionally with a
// private key), or DER. It never panics on any input: fuzzed.
func ParseBundle(data []byte) (*Bundle, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, ErrEmpty
	}
	if bytes.Contains(data, pemBegin) {
		return parsePEM(data)
	}
	certs, err := x509.ParseCertificates(data)
	if err != nil || len(certs) == 0 {
		return nil, ErrUnknownFmt
	}
	return &Bundle{Format: FormatDER, Certs: certs}, nil
}

func parsePEM(data []byte) (*Bundle, error) {
	b := &Bundle{Format: FormatPEM}
	var sawKey, sawCSR bool
	rest := data
	blocks := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		blocks++
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("certificate %d: %w", len(b.Certs)+1, err)
			}
			b.Certs = append(b.Certs, c)
		case "RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
			sawKey = true
		case "CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST":
			sawCSR = true
		}
	}
	if blocks == 0 {
		return nil, ErrTruncated
	}
	if len(b.Certs) == 0 {
		switch {
		case sawKey:
			return nil, ErrKeyOnly
		case sawCSR:
			return nil, ErrCSROnly
		}
		return nil, ErrNoCert
	}
	if sawKey {
		key, err := ParseKeyPEM(data)
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		b.Key = key
		b.Format = FormatCombined
	}
	switch tail := bytes.TrimSpace(rest); {
	case bytes.Contains(tail, pemBegin):
		b.Warning = fmt.Errorf("%w after the last complete block", ErrTruncated)
	case len(tail) > 0:
		b.Warning = fmt.Errorf("%d bytes of trailing data after the last PEM block", len(tail))
	}
	return b, nil
}

// ParseKeyPEM parses the first private key in PEM data (PKCS#1, SEC 1 or
// PKCS#8) with client-go's keyutil. When that key is encrypted the error
// is ErrEncryptedKey.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	if firstKeyEncrypted(data) {
		return nil, ErrEncryptedKey
	}
	k, err := keyutil.ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
	return s, nil
}

// firstKeyEncrypted reports whether the first private key block in PEM
// data is protected by a passphrase.
func firstKeyEncrypted(data []byte) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			return b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED")
		}
	}
}
