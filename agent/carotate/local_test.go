package carotate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cafiles "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

func newLocal(t *testing.T, l pkitest.Layout) (*Local, *pkitest.Node) {
	t.Helper()
	dir := t.TempDir()
	n, err := l.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := NewLocal(root, "/etc/kubernetes/pki", "front-proxy-ca")
	if err != nil {
		t.Fatal(err)
	}
	return loc, n
}

func TestLocalExternalCA(t *testing.T) {
	l, _ := newLocal(t, pkitest.Layout{})
	os.Remove(filepath.Join(l.Root.Dir(), l.Files.Key))
	_, refusal := l.Current()
	if refusal != "external CA: /etc/kubernetes/pki/front-proxy-ca.crt has no key (/etc/kubernetes/pki/front-proxy-ca.key); certagent does not rotate a CA it cannot sign with" {
		t.Fatalf("%q", refusal)
	}
	os.Chmod(filepath.Join(l.Root.Dir(), l.Files.Cert), 0o644)
	os.WriteFile(filepath.Join(l.Root.Dir(), l.Files.Key), pkitest.KeyPEM(mustCA(t).Key), 0o600)
	if _, refusal = l.Current(); !strings.Contains(refusal, "is not the key of") {
		t.Errorf("a wrong key: %q", refusal)
	}
}

func mustCA(t *testing.T) *pkitest.CA {
	ca, err := pkitest.NewCA("x", t0, t0.Add(time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestLocalPrepare(t *testing.T) {
	l, n := newLocal(t, pkitest.Layout{})
	cur, refusal := l.Current()
	if refusal != "" || !cur.Cert.Equal(n.FrontProxy.Cert) {
		t.Fatalf("%q", refusal)
	}
	first, err := l.Prepare(cur, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	// A rerun takes what is staged.
	again, err := l.Prepare(cur, nil, t0)
	if err != nil || !again.Equal(first) {
		t.Fatalf("rerun made another CA: %v", err)
	}
	// A crash between the key and the certificate: made again.
	os.Remove(filepath.Join(l.Root.Dir(), l.Files.NextCert))
	third, err := l.Prepare(cur, nil, t0)
	if err != nil || third.Equal(first) {
		t.Fatalf("half-staged: %v", err)
	}
	// A staged pair that does not match is never overwritten.
	os.WriteFile(filepath.Join(l.Root.Dir(), l.Files.NextKey), pkitest.KeyPEM(mustCA(t).Key), 0o600)
	if _, err := l.Prepare(cur, nil, t0); err == nil || !strings.Contains(err.Error(), "remove both files") {
		t.Fatalf("mismatched staged pair: %v", err)
	}
	// Nor by a supplied pair: it is removed first.
	c, key, _ := cafiles.NewCA(cur.Cert, cur.Key, t0)
	supplied := &Pair{CertPEM: pkitest.CertPEM(c), KeyPEM: pkitest.KeyPEM(key)}
	if _, err := l.Prepare(cur, supplied, t0); err == nil || !strings.Contains(err.Error(), "first") {
		t.Fatalf("a supplied pair over a mismatched staged one: %v", err)
	}
	os.Remove(filepath.Join(l.Root.Dir(), l.Files.NextCert))
	os.Remove(filepath.Join(l.Root.Dir(), l.Files.NextKey))
	got, err := l.Prepare(cur, supplied, t0)
	if err != nil || !got.Equal(c) {
		t.Fatalf("supplied: %v", err)
	}
	if staged, _, err := cafiles.Staged(l.Root, l.PKIDir, "front-proxy-ca"); err != nil || !staged.Equal(c) {
		t.Fatalf("supplied not staged: %v", err)
	}
	other := mustCA(t)
	if _, err := l.Prepare(cur, &Pair{CertPEM: pkitest.CertPEM(other.Cert), KeyPEM: pkitest.KeyPEM(other.Key)}, t0); err == nil || !strings.Contains(err.Error(), "subject") {
		t.Fatalf("a supplied CA of another subject: %v", err)
	}
}

// TestLocalPrepareRefusesShortLived: a supplied new CA valid now but
// ending within a month is refused, and nothing is staged.
func TestLocalPrepareRefusesShortLived(t *testing.T) {
	l, n := newLocal(t, pkitest.Layout{Now: t0})
	cur, refusal := l.Current()
	if refusal != "" {
		t.Fatal(refusal)
	}
	short, err := pkitest.NewCA(n.FrontProxy.Cert.Subject.CommonName, t0.Add(-time.Hour), t0.Add(30*24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Prepare(cur, &Pair{CertPEM: pkitest.CertPEM(short.Cert), KeyPEM: pkitest.KeyPEM(short.Key)}, t0)
	if err == nil || !strings.Contains(err.Error(), "less than") {
		t.Fatalf("a new CA with a month left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(l.Root.Dir(), l.Files.NextKey)); !os.IsNotExist(err) {
		t.Error("a refused CA was staged")
	}
}
