package carotate

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestPhaseProof: a phase proof verifies for the CA, rotation and phase
// it was signed for, with the new CA's key only, for each key type a CA
// may have.
func TestPhaseProof(t *testing.T) {
	for _, kt := range []string{"ecdsa", "rsa", "ed25519"} {
		t.Run(kt, func(t *testing.T) {
			next, key := phaseCA(t, kt)
			other, otherKey := phaseCA(t, kt)
			id := strings.Repeat("ab", 32)
			proof, err := ProvePhase(next, key, "ca", id, "trust")
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckPhaseProof(proof, next, "ca", id, "trust"); err != nil {
				t.Fatalf("the proof as signed: %v", err)
			}
			forged, err := ProvePhase(other, otherKey, "ca", id, "trust")
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct{ name, proof, ca, id, phase, want string }{
				{"another phase", proof, "ca", id, "finish", "not the new CA key's signature of rotation abababababababab of ca at phase finish"},
				{"another rotation", proof, "ca", strings.Repeat("cd", 32), "trust", "not the new CA key's signature"},
				{"another CA", proof, "etcd-ca", id, "trust", "not the new CA key's signature"},
				{"another key", forged, "ca", id, "trust", "not the new CA key's signature"},
				{"none", "", "ca", id, "trust", "no phaseProof"},
				{"not base64", "not base64!", "ca", id, "trust", "not base64"},
			} {
				if err := CheckPhaseProof(tc.proof, next, tc.ca, tc.id, tc.phase); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
				}
			}
			if _, err := ProvePhase(next, otherKey, "ca", id, "trust"); err == nil {
				t.Error("a phase proof made without the new CA's key")
			}
		})
	}
}

// phaseCA makes a CA of key type kt.
func phaseCA(t *testing.T, kt string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	if kt != "ed25519" {
		c, err := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(time.Hour), pkitest.KeyType(kt))
		if err != nil {
			t.Fatal(err)
		}
		return c.Cert, c.Key
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, NotBefore: now, NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}
