package pki_test

import (
	"bytes"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

func testCA(t testing.TB) *pkitest.CA {
	t.Helper()
	ca, err := pkitest.NewCA("test-ca", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestParseBundle(t *testing.T) {
	ca := testCA(t)
	cert, key, err := ca.Issue(pkitest.Spec{CommonName: "leaf"})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := pkitest.CertPEM(cert), pkitest.KeyPEM(key)
	_, otherKey, _ := ca.Issue(pkitest.Spec{CommonName: "other"})
	csr := "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAjCBqAIBADAOMQwwCgYDVQQDEwNmb28wWTATBgcqhkjOPQIBBggqhkjOPQMB\nBwNCAAQ=\n-----END CERTIFICATE REQUEST-----\n"

	tests := []struct {
		name     string
		data     []byte
		err      error  // errors.Is target
		errText  string // or a substring
		format   pki.Format
		certs    int
		keyMatch bool
		warning  string
	}{
		{name: "pem", data: certPEM, format: pki.FormatPEM, certs: 1},
		{name: "bundle", data: append(append([]byte{}, certPEM...), pkitest.CertPEM(ca.Cert)...), format: pki.FormatPEM, certs: 2},
		{name: "combined", data: append(append([]byte{}, certPEM...), keyPEM...), format: pki.FormatCombined, certs: 1, keyMatch: true},
		{name: "combined key first", data: append(append([]byte{}, keyPEM...), certPEM...), format: pki.FormatCombined, certs: 1, keyMatch: true},
		{name: "combined wrong key", data: append(append([]byte{}, certPEM...), pkitest.KeyPEM(otherKey)...), format: pki.FormatCombined, certs: 1},
		{name: "der", data: cert.Raw, format: pki.FormatDER, certs: 1},
		{name: "empty", data: nil, err: pki.ErrEmpty},
		{name: "whitespace", data: []byte("\n \n"), err: pki.ErrEmpty},
		{name: "garbage", data: []byte("hello, I am not a certificate\n"), err: pki.ErrUnknownFmt},
		{name: "truncated", data: certPEM[:len(certPEM)/2], err: pki.ErrTruncated},
		{name: "key only", data: keyPEM, err: pki.ErrKeyOnly},
		{name: "csr", data: []byte(csr), err: pki.ErrCSROnly},
		{name: "bad base64 in block", data: []byte("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"), err: pki.ErrTruncated},
		{name: "bad der in block", data: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), errText: "certificate 1:"},
		{name: "trailing junk", data: append(append([]byte{}, certPEM...), "junk after"...), format: pki.FormatPEM, certs: 1, warning: "trailing data"},
		{name: "trailing truncated block", data: append(append([]byte{}, certPEM...), certPEM[:40]...), format: pki.FormatPEM, certs: 1, warning: "truncated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := pki.ParseBundle(tc.data)
			if tc.err != nil || tc.errText != "" {
				if err == nil {
					t.Fatalf("want error, got %+v", b)
				}
				if tc.err != nil && !errors.Is(err, tc.err) {
					t.Fatalf("error = %v, want %v", err, tc.err)
				}
				if !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b.Format != tc.format || len(b.Certs) != tc.certs {
				t.Fatalf("format %s with %d certs, want %s with %d", b.Format, len(b.Certs), tc.format, tc.certs)
			}
			if got := pki.KeyMatches(b.Certs[0], b.Key); got != tc.keyMatch {
				t.Errorf("key matches = %v, want %v", got, tc.keyMatch)
			}
			switch {
			case tc.warning == "" && b.Warning != nil:
				t.Errorf("unexpected warning %v", b.Warning)
			case tc.warning != "" && (b.Warning == nil || !strings.Contains(b.Warning.Error(), tc.warning)):
				t.Errorf("warning = %v, want %q", b.Warning, tc.warning)
			}
		})
	}
}

func TestSignedBy(t *testing.T) {
	ca := testCA(t)
	other := testCA(t) // same subject "test-ca", different key
	cert, _, err := ca.Issue(pkitest.Spec{CommonName: "leaf"})
	if err != nil {
		t.Fatal(err)
	}
	if !pki.SignedBy(cert, ca.Cert) {
		t.Error("leaf not recognised as signed by its CA")
	}
	if pki.SignedBy(cert, other.Cert) {
		t.Error("a CA with the same name but another key was taken for the issuer")
	}
	// Without key identifiers the name preselects and the signature decides.
	stripped := *cert
	stripped.AuthorityKeyId = nil
	if !pki.SignedBy(&stripped, ca.Cert) || pki.SignedBy(&stripped, other.Cert) {
		t.Error("signature check without key identifiers is wrong")
	}
}

func TestDescribeKey(t *testing.T) {
	for _, kt := range []pkitest.KeyType{pkitest.ECDSA, pkitest.RSA} {
		k, err := pkitest.NewKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		alg, bits := pki.DescribeKey(k.Public())
		want := map[pkitest.KeyType]string{pkitest.ECDSA: "ECDSA/256", pkitest.RSA: "RSA/2048"}[kt]
		if got := fmt.Sprintf("%s/%d", alg, bits); got != want {
			t.Errorf("DescribeKey(%s) = %s, want %s", kt, got, want)
		}
	}
}

// encryptedKeys are private keys protected by a passphrase, in the two
// PEM forms: the legacy OpenSSL header on a PKCS#1 or SEC 1 block, and a
// PKCS#8 "ENCRYPTED PRIVATE KEY" block. The ciphertext does not matter:
// certagent must recognise them from the PEM alone.
func encryptedKeys() map[string][]byte {
	ct := bytes.Repeat([]byte{0x5a, 0xc3, 0x11, 0x7e}, 32)
	legacy := func(typ string) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: ct,
			Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF"}})
	}
	return map[string][]byte{
		"legacy RSA":  legacy("RSA PRIVATE KEY"),
		"legacy EC":   legacy("EC PRIVATE KEY"),
		"PKCS#8":      pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: ct}),
		"legacy DES3": bytes.Replace(legacy("RSA PRIVATE KEY"), []byte("AES-256-CBC,00112233445566778899AABBCCDDEEFF"), []byte("DES-EDE3-CBC,0011223344556677"), 1),
	}
}

// TestEncryptedKeys: a passphrase-protected key is reported as such, not
// as "not a valid RSA or ECDSA private key", alone, next to a certificate
// or in a combined file.
func TestEncryptedKeys(t *testing.T) {
	ca := testCA(t)
	cert, _, err := ca.Issue(pkitest.Spec{CommonName: "leaf"})
	if err != nil {
		t.Fatal(err)
	}
	for name, keyPEM := range encryptedKeys() {
		t.Run(name, func(t *testing.T) {
			_, err := pki.ParseKeyPEM(keyPEM)
			if !errors.Is(err, pki.ErrEncryptedKey) || !strings.Contains(err.Error(), "encrypted private key") || !strings.Contains(err.Error(), "passphrase") {
				t.Errorf("ParseKeyPEM = %v, want %v", err, pki.ErrEncryptedKey)
			}
			if _, err := pki.ParseBundle(keyPEM); !errors.Is(err, pki.ErrKeyOnly) {
				t.Errorf("key alone: ParseBundle = %v, want %v", err, pki.ErrKeyOnly)
			}
			combined := append(pkitest.CertPEM(cert), keyPEM...)
			if _, err := pki.ParseBundle(combined); !errors.Is(err, pki.ErrEncryptedKey) {
				t.Errorf("combined: ParseBundle = %v, want %v", err, pki.ErrEncryptedKey)
			}
		})
	}
}
