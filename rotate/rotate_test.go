package rotate

import (
	"bytes"
	"context"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func TestReissueKeepsIdentity(t *testing.T) {
	ca, err := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(10*365*24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://cluster.local/ns/kube-system/sa/apiserver")
	old, _, err := ca.Issue(pkitest.Spec{
		CommonName: "kube-apiserver", Organization: []string{"a", "b"},
		DNSNames: []string{"kubernetes", "node1"}, IPs: []net.IP{net.ParseIP("10.96.0.1")},
		URIs: []*url.URL{u}, Emails: []string{"ops@example.com"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		NotBefore:   now.Add(-300 * 24 * time.Hour), NotAfter: now.Add(65 * 24 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	lca := &LocalCA{Name: "ca", Cert: ca.Cert, Key: ca.Key}
	key, err := NewKey(old.PublicKey, "")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := lca.Reissue(old, key.Public(), now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameIdentity(old, cert); err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != u.String() || len(cert.EmailAddresses) != 1 {
		t.Errorf("URI and e-mail SANs must survive: %v %v", cert.URIs, cert.EmailAddresses)
	}
	if cert.SerialNumber.Cmp(old.SerialNumber) == 0 || !pki.KeyMatches(cert, key) || !pki.SignedBy(cert, ca.Cert) {
		t.Error("serial, key or signature wrong")
	}
	if !cert.NotBefore.Equal(now.Add(-Backdate)) || cert.NotAfter.Sub(cert.NotBefore) != old.NotAfter.Sub(old.NotBefore) {
		t.Errorf("validity %s..%s, want the old lifetime from now-5m", cert.NotBefore, cert.NotAfter)
	}
	if alg, bits := pki.DescribeKey(cert.PublicKey); alg != "ECDSA" || bits != 256 {
		t.Errorf("key type changed: %s %d", alg, bits)
	}
	// Never past the CA.
	short := &LocalCA{Name: "ca", Cert: ca.Cert, Key: ca.Key}
	cert, err = short.Reissue(old, key.Public(), ca.Cert.NotAfter.Add(-24*time.Hour), 0)
	if err != nil || !cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("capped validity: %v %v", cert.NotAfter, err)
	}
	// A certificate of another CA is refused.
	other, _ := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(time.Hour*24), pkitest.ECDSA)
	if _, err := (&LocalCA{Name: "other", Cert: other.Cert, Key: other.Key}).Reissue(old, key.Public(), now, 0); err == nil {
		t.Error("re-signed a certificate another CA issued")
	}
}

func TestNewKeyAlgorithms(t *testing.T) {
	for _, a := range KeyAlgorithms {
		if a == "rsa-4096" || a == "rsa-3072" {
			continue // slow; same code path as rsa-2048
		}
		k, err := NewKey(nil, a)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		b, err := pki.EncodeKeyPEM(k, "")
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		if back, err := pki.ParseKeyPEM(b); err != nil || !pki.PublicKeyMatches(back.Public(), k.Public()) {
			t.Fatalf("%s does not round-trip: %v", a, err)
		}
	}
	if _, err := NewKey(nil, "dsa"); err == nil {
		t.Error("unknown algorithm accepted")
	}
}

// node writes a pkitest layout and returns its root and the local CA.
func node(t *testing.T) (*pki.Root, *LocalCA, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := (pkitest.Layout{Now: now}).Write(dir); err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := LoadLocalCA(root, "ca", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	return root, ca, dir
}

func TestRenewPairAndKubeconfig(t *testing.T) {
	root, ca, dir := node(t)
	// A looser old key mode is tightened; an odd owner is kept.
	os.Chmod(filepath.Join(dir, "etc/kubernetes/pki/apiserver.key"), 0o644)
	if os.Geteuid() == 0 {
		os.Chown(filepath.Join(dir, "etc/kubernetes/pki/apiserver.crt"), 1234, 1234)
	}
	// Comments and a second user in a kubeconfig must survive.
	admin := filepath.Join(dir, "etc/kubernetes/admin.conf")
	orig, _ := os.ReadFile(admin)
	withComment := append([]byte("# managed by kubeadm; renewed by certagent\n"), orig...)
	os.WriteFile(admin, withComment, 0o600)
	before := map[string][]byte{}
	for _, f := range []string{"etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/pki/apiserver.key", "etc/kubernetes/admin.conf"} {
		before[f], _ = os.ReadFile(filepath.Join(dir, f))
	}

	targets := []Target{
		{Name: "apiserver", Storage: StoragePair, CertPath: "/etc/kubernetes/pki/apiserver.crt", KeyPath: "/etc/kubernetes/pki/apiserver.key", CA: ca},
		{Name: "admin.conf", Storage: StorageKubeconfig, CertPath: "/etc/kubernetes/admin.conf", User: "kubernetes-admin", CA: ca},
	}
	results, err := Renew(context.Background(), Options{Root: root, Now: now}, targets)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Err != nil || r.NewSerial == "" || r.NewSerial == r.OldSerial {
			t.Fatalf("%s: %+v", r.Name, r)
		}
	}
	crt, _ := os.Stat(filepath.Join(dir, "etc/kubernetes/pki/apiserver.crt"))
	key, _ := os.Stat(filepath.Join(dir, "etc/kubernetes/pki/apiserver.key"))
	if crt.Mode().Perm() != 0o644 || key.Mode().Perm() != 0o600 {
		t.Errorf("modes %v %v, want 0644 and 0600", crt.Mode(), key.Mode())
	}
	if f, _ := root.ReadFile("/etc/kubernetes/pki/apiserver.crt"); os.Geteuid() == 0 && f.UID != 1234 {
		t.Errorf("owner not kept: uid %d", f.UID)
	}
	after, _ := os.ReadFile(admin)
	if !bytes.HasPrefix(after, []byte("# managed by kubeadm")) || bytes.Equal(after, withComment) {
		t.Error("kubeconfig comment lost or file not renewed")
	}
	// The backup holds the old bytes, the journal says done.
	for f, data := range before {
		got, err := os.ReadFile(filepath.Join(dir, "etc/kubernetes/tmp", filepath.Base(results[0].Backup), "files", f))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("backup of %s: %v", f, err)
		}
	}
	j, err := loadJournal(root, results[0].Backup)
	if err != nil || j.State != stateDone {
		t.Fatalf("journal: %+v %v", j, err)
	}
	if fi, _ := os.Stat(root.HostPath(results[0].Backup)); fi.Mode().Perm() != 0o700 {
		t.Errorf("backup dir mode %v", fi.Mode())
	}
	assertNoStaged(t, dir)
}

func assertNoStaged(t *testing.T, dir string) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), ".") && !fi.IsDir() {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func TestUnsafeCAKeyRefused(t *testing.T) {
	root, _, dir := node(t)
	caKey := filepath.Join(dir, "etc/kubernetes/pki/ca.key")
	os.Chmod(caKey, 0o640)
	if _, err := LoadLocalCA(root, "ca", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key"); err == nil || !strings.Contains(err.Error(), "mode 0640") {
		t.Errorf("group-readable CA key: %v", err)
	}
	os.Chmod(caKey, 0o600)
	if os.Geteuid() == 0 {
		os.Chown(caKey, 1000, 1000)
		if _, err := LoadLocalCA(root, "ca", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key"); err == nil || !strings.Contains(err.Error(), "owned by uid 1000") {
			t.Errorf("foreign-owned CA key: %v", err)
		}
		os.Chown(caKey, 0, 0)
	}
	// The front-proxy CA's key in place of the cluster CA's.
	other, _ := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/front-proxy-ca.key"))
	os.WriteFile(caKey, other, 0o600)
	if _, err := LoadLocalCA(root, "ca", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key"); err == nil || !strings.Contains(err.Error(), "is not the key of") {
		t.Errorf("mismatched CA key: %v", err)
	}
	os.Remove(caKey)
	if _, err := LoadLocalCA(root, "ca", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key"); err == nil || !strings.Contains(err.Error(), "externally managed") {
		t.Errorf("missing CA key: %v", err)
	}
}

// TestRepair stages transactions as a crash leaves them and repairs them.
func TestRepair(t *testing.T) {
	for _, stop := range []string{"staged", "backed-up", "committing", "renamed-one", "renamed", "synced"} {
		t.Run(stop, func(t *testing.T) {
			root, ca, dir := node(t)
			targets := []Target{
				{Name: "apiserver", Storage: StoragePair, CertPath: "/etc/kubernetes/pki/apiserver.crt", KeyPath: "/etc/kubernetes/pki/apiserver.key", CA: ca},
				{Name: "scheduler.conf", Storage: StorageKubeconfig, CertPath: "/etc/kubernetes/scheduler.conf", User: "system:kube-scheduler", CA: ca},
			}
			func() {
				defer func() { recover() }()
				Renew(context.Background(), Options{Root: root, Now: now, Hooks: panicAt(stop)}, targets)
			}()
			if len(Interrupted(root, DefaultBackupDir)) != 1 {
				t.Fatalf("interrupted transaction not detected after %s", stop)
			}
			reports := Repair(root, DefaultBackupDir)
			if len(reports) != 1 || reports[0].Err != nil {
				t.Fatalf("repair: %+v", reports)
			}
			for _, tg := range targets {
				cur, err := load(root, tg)
				if err != nil || !pki.KeyMatches(cur.cert, cur.key) || !pki.SignedBy(cur.cert, ca.Cert) {
					t.Errorf("%s after repair at %s: %v", tg.Name, stop, err)
				}
			}
			if len(Interrupted(root, DefaultBackupDir)) != 0 {
				t.Error("still interrupted after repair")
			}
			assertNoStaged(t, dir)
		})
	}
}

// panicAt stops a transaction in its tracks, leaving the disk as a crash
// would (the transaction defers no clean-up).
type panicAt string

func (p panicAt) Step(name string) {
	if string(p) == name {
		panic("crash at " + name)
	}
}
