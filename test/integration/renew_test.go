package integration

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate/pki"
)

// kubeadmLeaves are the leaf files kubeadm makes below pki/.
var kubeadmLeaves = []string{"apiserver", "apiserver-kubelet-client", "apiserver-etcd-client", "front-proxy-client",
	"etcd/server", "etcd/peer", "etcd/healthcheck-client"}

func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

func readCert(t testing.TB, p string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		t.Fatalf("%s: no PEM", p)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sanExt(c *x509.Certificate) []byte {
	for _, e := range c.Extensions {
		if e.Id.String() == "2.5.29.17" {
			return e.Value
		}
	}
	return nil
}

// consistent asserts that every certificate on the node has its matching
// key and chains to its CA, and that no file is unreadable.
func consistent(t testing.TB, root string) *inventory.Report {
	t.Helper()
	r, err := pki.NewRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := inventory.Scan(context.Background(), inventory.Options{Root: r})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		t.Errorf("problem: %s: %s", p.Path, p.Error)
	}
	for _, c := range rep.Certificates {
		if c.Key == nil || !c.Key.Present || !c.Key.Matches {
			t.Errorf("%s: key does not match (%+v)", c.Name, c.Key)
		}
		if c.CAName == "" && c.Name != "kubelet.crt" {
			t.Errorf("%s: does not chain to a CA on the node", c.Name)
		}
	}
	return rep
}

// TestRenewAgainstKubeadm: renew a real kubeadm PKI, then the real kubeadm
// and openssl agree it is renewed and valid, every SAN is byte-for-byte
// the same, every key matches, the CAs are untouched; and field by field
// it equals what `kubeadm certs renew all` makes, but for the documented
// differences.
func TestRenewAgainstKubeadm(t *testing.T) {
	orig := kubeadmPKI(t, "8760h")
	ours, theirs := t.TempDir(), t.TempDir()
	copyTree(t, orig, ours)
	copyTree(t, orig, theirs)
	time.Sleep(1100 * time.Millisecond) // renewed NotBefore/NotAfter must differ from the originals

	r := run(t, certagentBin, "renew", "--root", ours, "--all", "--force")
	if r.code != 0 {
		t.Fatalf("renew: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if n := strings.Count(r.stdout, "renewed "); n != 12 {
		t.Errorf("%d certificates renewed, want 12 (11 of kubeadm's and kubelet.conf):\n%s", n, r.stdout)
	}
	if k := run(t, requireKube(t, "kubeadm"), "certs", "renew", "all", "--config", "/etc/kubernetes/kubeadm.yaml", "--rootfs", theirs); k.code != 0 {
		t.Fatalf("kubeadm renew: %s", k.stderr)
	}

	before, after := kubeadmCheck(t, orig), kubeadmCheck(t, ours)
	for i, c := range after.Certificates {
		if !c.ExpirationDate.After(before.Certificates[i].ExpirationDate) {
			t.Errorf("kubeadm says %s was not renewed: %s", c.Name, c.ExpirationDate)
		}
	}
	pkiDir := func(root string) string { return filepath.Join(root, "etc/kubernetes/pki") }
	for _, leaf := range kubeadmLeaves {
		caFile := "ca.crt"
		switch {
		case strings.HasPrefix(leaf, "etcd/") || leaf == "apiserver-etcd-client":
			caFile = "etcd/ca.crt"
		case leaf == "front-proxy-client":
			caFile = "front-proxy-ca.crt"
		}
		crt := filepath.Join(pkiDir(ours), leaf+".crt")
		if out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(pkiDir(ours), caFile), crt).CombinedOutput(); err != nil {
			t.Errorf("openssl verify %s: %v %s", leaf, err, out)
		}
		old, mine, kubeadms := readCert(t, filepath.Join(pkiDir(orig), leaf+".crt")), readCert(t, crt), readCert(t, filepath.Join(pkiDir(theirs), leaf+".crt"))
		if !bytes.Equal(sanExt(old), sanExt(mine)) {
			t.Errorf("%s: SAN extension bytes changed", leaf)
		}
		compareWithKubeadm(t, leaf, mine, kubeadms)
	}
	for _, ca := range []string{"ca.crt", "ca.key", "etcd/ca.crt", "etcd/ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "sa.key", "sa.pub"} {
		a, _ := os.ReadFile(filepath.Join(pkiDir(orig), ca))
		b, _ := os.ReadFile(filepath.Join(pkiDir(ours), ca))
		if !bytes.Equal(a, b) {
			t.Errorf("%s changed", ca)
		}
	}
	consistent(t, ours)
}

// compareWithKubeadm: the documented differences (README, "Compared with
// kubeadm certs renew") are the only ones.
func compareWithKubeadm(t *testing.T, name string, mine, theirs *x509.Certificate) {
	t.Helper()
	switch {
	case mine.Subject.String() != theirs.Subject.String():
		t.Errorf("%s: subject %s, kubeadm %s", name, mine.Subject, theirs.Subject)
	case mine.Issuer.String() != theirs.Issuer.String():
		t.Errorf("%s: issuer %s, kubeadm %s", name, mine.Issuer, theirs.Issuer)
	case !bytes.Equal(sanExt(mine), sanExt(theirs)):
		t.Errorf("%s: SANs differ from kubeadm's", name)
	case mine.KeyUsage != theirs.KeyUsage:
		t.Errorf("%s: key usage %v, kubeadm %v", name, mine.KeyUsage, theirs.KeyUsage)
	case len(mine.ExtKeyUsage) != len(theirs.ExtKeyUsage):
		t.Errorf("%s: ext key usage %v, kubeadm %v", name, mine.ExtKeyUsage, theirs.ExtKeyUsage)
	case mine.PublicKeyAlgorithm != theirs.PublicKeyAlgorithm || mine.SignatureAlgorithm != theirs.SignatureAlgorithm:
		t.Errorf("%s: key %v/%v, kubeadm %v/%v", name, mine.PublicKeyAlgorithm, mine.SignatureAlgorithm, theirs.PublicKeyAlgorithm, theirs.SignatureAlgorithm)
	case mine.NotAfter.Sub(mine.NotBefore) != theirs.NotAfter.Sub(theirs.NotBefore):
		t.Errorf("%s: lifetime %s, kubeadm %s", name, mine.NotAfter.Sub(mine.NotBefore), theirs.NotAfter.Sub(theirs.NotBefore))
	case mine.NotAfter.Sub(theirs.NotAfter).Abs() > time.Minute:
		t.Errorf("%s: NotAfter %s, kubeadm %s", name, mine.NotAfter, theirs.NotAfter)
	case mine.BasicConstraintsValid != theirs.BasicConstraintsValid || mine.IsCA != theirs.IsCA:
		t.Errorf("%s: basic constraints differ", name)
	case !bytes.Equal(mine.AuthorityKeyId, theirs.AuthorityKeyId):
		t.Errorf("%s: authority key id differs", name)
	case len(mine.SubjectKeyId) == 0:
		t.Errorf("%s: no subject key id (certagent adds one; kubeadm does not)", name)
	}
}
