package rotate

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	certutil "k8s.io/client-go/util/cert"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

var kubeletCrt = Target{Name: "kubelet.crt", Storage: StoragePair, SelfSigned: true,
	CertPath: "/var/lib/kubelet/pki/kubelet.crt", KeyPath: "/var/lib/kubelet/pki/kubelet.key"}

// selfSignedNode is a node whose kubelet.crt the kubelet made itself, with
// an IP and a second DNS name. It is made now: client-go's generator reads
// the real clock.
func selfSignedNode(t *testing.T) (*pki.Root, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := (pkitest.Layout{}).Write(dir); err != nil {
		t.Fatal(err)
	}
	crt, key, err := certutil.GenerateSelfSignedCertKey("node1", []net.IP{net.ParseIP("10.0.0.5")}, []string{"node1.example"})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "var/lib/kubelet/pki/kubelet.crt"), crt, 0o644)
	os.WriteFile(filepath.Join(dir, "var/lib/kubelet/pki/kubelet.key"), key, 0o600)
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return root, dir
}

// loadSelfSigned reads kubelet.crt back and checks it is a matched pair
// that chains to the CA bundled in it.
func loadSelfSigned(t *testing.T, root *pki.Root) (*x509.Certificate, *x509.Certificate) {
	t.Helper()
	f, err := root.ReadFile(kubeletCrt.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	k, err := root.ReadFile(kubeletCrt.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	cert, bundled, key, err := parseRendered(kubeletCrt, map[string][]byte{kubeletCrt.CertPath: f.Data, kubeletCrt.KeyPath: k.Data})
	if err != nil {
		t.Fatal(err)
	}
	if !pki.KeyMatches(cert, key) || len(bundled) != 1 || !pki.SignedBy(cert, bundled[0]) {
		t.Fatalf("kubelet.crt/kubelet.key: not a matched pair chaining to its bundled CA")
	}
	return cert, bundled[0]
}

func TestSelfSignedReissue(t *testing.T) {
	root, _ := selfSignedNode(t)
	old, oldCA := loadSelfSigned(t, root)
	res, err := Renew(context.Background(), Options{Root: root, Now: time.Now()}, []Target{kubeletCrt})
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("renew: %v %+v", err, res)
	}
	cert, ca := loadSelfSigned(t, root)
	if cert.Equal(old) || ca.Equal(oldCA) {
		t.Error("the certificate and its CA must both be new")
	}
	if !slices.Equal(cert.DNSNames, []string{"node1", "node1.example"}) || len(cert.IPAddresses) != 1 || !cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.5")) {
		t.Errorf("names not kept: %v %v", cert.DNSNames, cert.IPAddresses)
	}
	if !strings.HasPrefix(cert.Subject.CommonName, "node1@") || !strings.HasPrefix(ca.Subject.CommonName, "node1-ca@") {
		t.Errorf("not the kubelet's subjects: %s, %s", cert.Subject, ca.Subject)
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("usages %v", cert.ExtKeyUsage)
	}
	if res[0].NewSerial != serialHex(cert) || !res[0].NotAfter.Equal(cert.NotAfter) {
		t.Errorf("result %+v does not describe what was written", res[0])
	}
	for p, want := range map[string]os.FileMode{kubeletCrt.CertPath: 0o644, kubeletCrt.KeyPath: 0o600} {
		if f, _ := root.ReadFile(p); f.Mode != want {
			t.Errorf("%s: mode %04o, want %04o", p, f.Mode, want)
		}
	}
}

// TestSelfSignedVerifyIsNarrow: the self-signed mode accepts a new subject
// and CA but nothing else.
func TestSelfSignedVerifyIsNarrow(t *testing.T) {
	root, _ := selfSignedNode(t)
	old, _ := loadSelfSigned(t, root)
	gen := func(host string, ips []net.IP, dns []string) (*x509.Certificate, []*x509.Certificate) {
		crt, _, err := certutil.GenerateSelfSignedCertKey(host, ips, dns)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pki.ParseBundle(crt)
		return b.Certs[0], b.Certs[1:]
	}
	ip := []net.IP{net.ParseIP("10.0.0.5")}
	good, goodCA := gen("node1", ip, []string{"node1.example"})
	_, otherCA := gen("node1", ip, []string{"node1.example"})
	moved, movedCA := gen("node1", []net.IP{net.ParseIP("10.0.0.6")}, []string{"node1.example"})
	renamed, renamedCA := gen("node2", ip, []string{"node1.example"})
	for _, tc := range []struct {
		name    string
		cert    *x509.Certificate
		bundled []*x509.Certificate
		want    string
	}{
		{"new pair, same names", good, goodCA, ""},
		{"no CA bundled", good, nil, "no CA bundled"},
		{"another CA bundled", good, otherCA, "chain to its bundled CA"},
		{"leaf bundled as CA", good, []*x509.Certificate{good}, "not a self-signed CA"},
		{"IP changed", moved, movedCA, "IP addresses changed"},
		{"host changed", renamed, renamedCA, "DNS names changed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifySelfSigned(kubeletCrt, old, tc.cert, tc.bundled, time.Now())
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// TestSelfSignedRepair: a re-issue killed at any step is repaired to a
// matched pair that chains to its bundled CA (old or new), never a mix.
func TestSelfSignedRepair(t *testing.T) {
	for _, stop := range []string{"staged", "backed-up", "committing", "renamed-one", "renamed", "synced"} {
		t.Run(stop, func(t *testing.T) {
			root, dir := selfSignedNode(t)
			func() {
				defer func() { recover() }()
				Renew(context.Background(), Options{Root: root, Now: time.Now(), Hooks: panicAt(stop)}, []Target{kubeletCrt})
			}()
			if len(Interrupted(root, DefaultBackupDir)) != 1 {
				t.Fatalf("interrupted transaction not detected after %s", stop)
			}
			if r := Repair(root, DefaultBackupDir); len(r) != 1 || r[0].Err != nil {
				t.Fatalf("repair: %+v", r)
			}
			loadSelfSigned(t, root)
			if len(Interrupted(root, DefaultBackupDir)) != 0 {
				t.Error("still interrupted after repair")
			}
			assertNoStaged(t, dir)
		})
	}
}
