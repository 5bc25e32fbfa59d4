package carotate

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

var now = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func oldCA(t *testing.T, kt pkitest.KeyType) *pkitest.CA {
	t.Helper()
	ca, err := pkitest.NewCA("kubernetes", now.AddDate(-9, 0, 0), now.AddDate(1, 0, 0), kt)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestNewCA(t *testing.T) {
	for _, kt := range []pkitest.KeyType{pkitest.ECDSA, pkitest.RSA} {
		old := oldCA(t, kt)
		c, key, err := NewCA(old.Cert, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckPair(c, key, old.Cert); err != nil {
			t.Errorf("%s: %v", kt, err)
		}
		oa, ob := pki.DescribeKey(old.Cert.PublicKey)
		na, nb := pki.DescribeKey(c.PublicKey)
		if oa != na || ob != nb || c.SerialNumber.Cmp(old.Cert.SerialNumber) == 0 {
			t.Errorf("%s: key %s %d, want %s %d; serial %s", kt, na, nb, oa, ob, c.SerialNumber)
		}
		if life := c.NotAfter.Sub(c.NotBefore); life != old.Cert.NotAfter.Sub(old.Cert.NotBefore) || c.NotBefore.After(now) {
			t.Errorf("%s: lifetime %s from %s", kt, life, c.NotBefore)
		}
	}
}

func TestCheckPair(t *testing.T) {
	old := oldCA(t, pkitest.ECDSA)
	good, goodKey, _ := NewCA(old.Cert, now)
	other, _ := pkitest.NewCA("another", now, now.AddDate(1, 0, 0), pkitest.ECDSA)
	leaf, leafKey, _ := old.Issue(pkitest.Spec{CommonName: "kubernetes"})
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"other key", CheckPair(good, other.Key, old.Cert)},
		{"other subject", CheckPair(other.Cert, other.Key, old.Cert)},
		{"the old CA", CheckPair(old.Cert, old.Key, old.Cert)},
		{"a leaf", CheckPair(leaf, leafKey, old.Cert)},
	} {
		if tc.err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if err := CheckPair(good, goodKey, nil); err != nil {
		t.Error(err)
	}
}

func TestStageAndLoad(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "etc/kubernetes/pki/etcd"), 0o755)
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := FilesFor("/etc/kubernetes/pki", "etcd-ca")
	if err != nil || f.NextKey != "/etc/kubernetes/pki/etcd/ca.next.key" || f.Cert != "/etc/kubernetes/pki/etcd/ca.crt" {
		t.Fatalf("%+v %v", f, err)
	}
	if _, err := FilesFor("/etc/kubernetes/pki", "sa"); err == nil {
		t.Error("sa is no CA to rotate")
	}
	old := oldCA(t, pkitest.ECDSA)
	if c, _, err := LoadStaged(root, f, old.Cert); c != nil || err != nil {
		t.Fatalf("nothing staged: %v %v", c, err)
	}
	c, key, _ := NewCA(old.Cert, now)
	if err := Stage(root, f, c, key, "EC PRIVATE KEY"); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, f.NextKey))
	kd, _ := os.ReadFile(filepath.Join(dir, f.NextKey))
	if fi.Mode().Perm() != 0o600 || !bytes.Contains(kd, []byte("BEGIN EC PRIVATE KEY")) {
		t.Errorf("key mode %v:\n%s", fi.Mode(), kd)
	}
	got, _, err := LoadStaged(root, f, old.Cert)
	if err != nil || !got.Equal(c) {
		t.Fatalf("load: %v", err)
	}
	os.Chmod(filepath.Join(dir, f.NextKey), 0o644)
	if _, _, err := LoadStaged(root, f, old.Cert); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a readable key: %v", err)
	}
	os.Remove(filepath.Join(dir, f.NextCert))
	if _, _, err := LoadStaged(root, f, old.Cert); err == nil {
		t.Error("a key without its certificate loads")
	}
	// A link planted where the key goes is replaced, not followed.
	os.Remove(filepath.Join(dir, f.NextKey))
	outside := filepath.Join(t.TempDir(), "stolen")
	os.Symlink(outside, filepath.Join(dir, f.NextKey))
	if err := Stage(root, f, c, key, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(outside); err == nil {
		t.Error("the key was written through a link outside the root")
	}
}
