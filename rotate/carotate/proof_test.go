package carotate

import (
	"crypto/x509"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestProof: a proof verifies against the old CA that made it only, for
// the new CA it names only, and authenticates nobody (valid for no time).
func TestProof(t *testing.T) {
	old, _ := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(3650*24*time.Hour), pkitest.ECDSA)
	next, _, err := NewCA(old.Cert, old.Key, now)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := Prove(old.Cert, old.Key, next, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckProof(proof, old.Cert, next); err != nil {
		t.Fatal(err)
	}
	other, _, _ := NewCA(old.Cert, old.Key, now)
	impostor, _ := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(time.Hour), pkitest.ECDSA)
	if err := CheckProof(proof, old.Cert, other); err == nil || !strings.Contains(err.Error(), "not for newCA") {
		t.Errorf("a proof for another new CA: %v", err)
	}
	if err := CheckProof(proof, impostor.Cert, next); err == nil || !strings.Contains(err.Error(), "not signed by the old CA") {
		t.Errorf("another old CA: %v", err)
	}
	if _, err := Prove(old.Cert, impostor.Key, next, now); err == nil {
		t.Error("a proof made without the old CA's key")
	}
	pb, err := pki.ParseBundle(proof)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pb.Certs[0].Verify(x509.VerifyOptions{Roots: pool(old.Cert), CurrentTime: now.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("the proof authenticates")
	}
}

// TestCheckLifetime: a new CA not valid now, with too little left, or
// with a weaker key is refused.
func TestCheckLifetime(t *testing.T) {
	old, _ := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(3650*24*time.Hour), pkitest.ECDSA)
	mk := func(from, to time.Time, kt pkitest.KeyType) *x509.Certificate {
		c, err := pkitest.NewCA("kubernetes", from, to, kt)
		if err != nil {
			t.Fatal(err)
		}
		return c.Cert
	}
	year := 365 * 24 * time.Hour
	if err := CheckLifetime(old.Cert, mk(now.Add(-time.Hour), now.Add(10*year), pkitest.ECDSA), now); err != nil {
		t.Errorf("a good new CA: %v", err)
	}
	for _, tc := range []struct {
		name string
		next *x509.Certificate
		want string
	}{
		{"expired", mk(now.Add(-2*year), now.Add(-time.Hour), pkitest.ECDSA), "expired"},
		{"not yet valid", mk(now.Add(time.Hour), now.Add(10*year), pkitest.ECDSA), "not valid yet"},
		{"a month left", mk(now.Add(-time.Hour), now.Add(30*24*time.Hour), pkitest.ECDSA), "less than"},
		{"weaker key", mk(now.Add(-time.Hour), now.Add(10*year), pkitest.RSA), "weaker"},
	} {
		if err := CheckLifetime(old.Cert, tc.next, now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// A short-lived old CA asks for half its lifetime, not a year.
	short, _ := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(47*time.Hour), pkitest.ECDSA)
	if err := CheckLifetime(short.Cert, mk(now.Add(-time.Hour), now.Add(30*time.Hour), pkitest.ECDSA), now); err != nil {
		t.Errorf("a short-lived CA's successor: %v", err)
	}
}

func pool(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// TestBundledCAIsNotPrevious: a CA of the same subject bundled in a CA
// file gets none of what it issued re-signed by the real key, unless a
// rotation retires it (Retire) and it is in the file.
func TestBundledCAIsNotPrevious(t *testing.T) {
	root, n, _ := layout(t)
	stranger, _ := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(3650*24*time.Hour), pkitest.ECDSA)
	data := append(pkitest.CertPEM(n.CA.Cert), pkitest.CertPEM(stranger.Cert)...)
	if err := os.WriteFile(root.HostPath(pkiDir+"/ca.crt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	leaf, _, _ := stranger.Issue(pkitest.Spec{CommonName: "system:admin", Organization: []string{"system:masters"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	lc := caOf(t, root)
	if lc.Issued(leaf) || len(lc.Previous) != 0 {
		t.Fatal("the real CA key would re-sign what a bundled stranger issued")
	}
	if _, err := lc.Reissue(leaf, leaf.PublicKey, now, time.Hour); err == nil {
		t.Fatal("re-signed a stranger's certificate")
	}
	other, _ := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(time.Hour), pkitest.ECDSA)
	if lc.Retire(other.Cert) || lc.Retire(lc.Cert) {
		t.Error("retired a CA that is not in the file, or the CA itself")
	}
}
