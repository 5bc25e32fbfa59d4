package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestChangedScanMatchesFullScan: a scan narrowed to the changed paths
// reports what a cold full scan reports, after each kind of change: a new
// certificate, a key appearing beside one, a file removed, a CA replaced
// by another of the same name (its leaves' issuer is found again by
// signature), the first CA back, a CA's key appearing (its leaves, whose
// files did not change, are renewed from it now), a kubeconfig's
// referenced file swapped by a symlink, and nothing changed but the time
// (every residual moves: no Certificate of the previous scan is reported
// unchanged).
func TestChangedScanMatchesFullScan(t *testing.T) {
	dir, c, ca := confNodeWithCorpus(t)
	root, _ := pki.NewRoot(dir)
	cfg := mustConfig(t, "paths: [/opt/c]")
	cache := settledCache()
	at := now
	scan := func(ch *Changed) string {
		t.Helper()
		rep, err := Scan(context.Background(), Options{Root: root, Config: cfg, Now: at, Cache: cache, Changed: ch})
		must(t, err)
		b, _ := json.Marshal(atScanTime(rep))
		return string(b)
	}
	scan(nil)
	watched := map[string]bool{c: true, filepath.Join(dir, "etc/kubernetes"): true, filepath.Join(dir, "etc/kubernetes/pki"): true,
		filepath.Join(dir, "etc/kubernetes/pki/etcd"): true, filepath.Join(dir, "var/lib/kubelet/pki"): true}
	kp := filepath.Join(dir, "var/lib/kubelet/pki")
	other := sameNamedCA(t, ca)
	leaf, key, err := other.Issue(pkitest.Spec{CommonName: "new", NotBefore: now.Add(-1e9), NotAfter: now.Add(1e15)})
	must(t, err)
	steps := []struct {
		what    string
		change  func()
		changed map[string]bool
	}{
		{"a new certificate", func() { must(t, os.WriteFile(filepath.Join(c, "new.pem"), pkitest.CertPEM(leaf), 0o644)) },
			map[string]bool{filepath.Join(c, "new.pem"): true}},
		{"its key appearing", func() { must(t, os.WriteFile(filepath.Join(c, "new.key"), pkitest.KeyPEM(key), 0o600)) },
			map[string]bool{filepath.Join(c, "new.key"): true}},
		{"a file removed", func() { must(t, os.Remove(filepath.Join(c, "cert-00002.pem"))) },
			map[string]bool{filepath.Join(c, "cert-00002.pem"): true}},
		{"the CA replaced by one of the same name", func() {
			must(t, os.WriteFile(filepath.Join(c, "ca.crt"), pkitest.CertPEM(other.Cert), 0o644))
		}, map[string]bool{filepath.Join(c, "ca.crt"): false}},
		{"the first CA back", func() {
			must(t, os.WriteFile(filepath.Join(c, "ca.crt"), pkitest.CertPEM(ca.Cert), 0o644))
		}, map[string]bool{filepath.Join(c, "ca.crt"): false}},
		{"the CA's key appearing", func() {
			must(t, os.WriteFile(filepath.Join(c, "ca.key"), pkitest.KeyPEM(ca.Key), 0o600))
		}, map[string]bool{filepath.Join(c, "ca.key"): true}},
		{"an hour later", func() { at = at.Add(time.Hour + time.Second) }, map[string]bool{}},
		{"the kubelet's symlink swapped", func() {
			must(t, os.WriteFile(filepath.Join(kp, "kubelet-client-2099.pem"), append(pkitest.CertPEM(leaf), pkitest.KeyPEM(key)...), 0o600))
			must(t, os.Symlink(filepath.Join("/var/lib/kubelet/pki", "kubelet-client-2099.pem"), filepath.Join(kp, ".tmp")))
			must(t, os.Rename(filepath.Join(kp, ".tmp"), filepath.Join(kp, "kubelet-client-current.pem")))
		}, map[string]bool{filepath.Join(kp, "kubelet-client-2099.pem"): true, filepath.Join(kp, ".tmp"): true, filepath.Join(kp, "kubelet-client-current.pem"): true}},
	}
	for _, st := range steps {
		st.change()
		got := scan(&Changed{Paths: st.changed, Watched: watched})
		rep, err := Scan(context.Background(), Options{Root: root, Config: cfg, Now: at})
		must(t, err)
		want, _ := json.Marshal(rep)
		if got != string(want) {
			t.Errorf("%s: the narrowed scan differs from a full one:\n got %s\nwant %s", st.what, got, want)
		}
	}
}

// confNodeWithCorpus is a kubeadm node whose kubelet.conf refers to the kubelet's
// client certificate, with five leaves of a CA and the CA's certificate
// in the configured directory c (/opt/c).
func confNodeWithCorpus(t *testing.T) (dir, c string, ca *pkitest.CA) {
	t.Helper()
	dir, _ = layout(t, pkitest.Layout{KubeletConfReference: true})
	c = filepath.Join(dir, "opt/c")
	ca = newCA(t, "extra-ca")
	must(t, pkitest.WriteCorpus(c, ca, 5, now))
	must(t, os.WriteFile(filepath.Join(c, "ca.crt"), pkitest.CertPEM(ca.Cert), 0o644))
	return dir, c, ca
}

// atScanTime is rep with every certificate's residual seconds taken at
// its scan time, as the daemon's status document writes them (a cached
// scan hands out unchanged certificates with an earlier scan's).
func atScanTime(rep *Report) *Report {
	out := *rep
	out.Certificates = make([]*Certificate, len(rep.Certificates))
	for i, c := range rep.Certificates {
		cc := *c
		cc.ResidualSeconds = Residual(c.NotAfter, rep.ScannedAt)
		out.Certificates[i] = &cc
	}
	return &out
}

// TestChangedTooManyPathsScansAll: a change naming more than maxChanged
// paths is a full scan (a file it does not name is read again), while one
// naming maxChanged is narrowed (a file it does not name is taken from the
// cache unread).
func TestChangedTooManyPathsScansAll(t *testing.T) {
	c, ca, root, cfg := corpusNode(t, 2)
	cache := settledCache()
	leaf, _, err := ca.Issue(pkitest.Spec{CommonName: "replaced", NotBefore: now.Add(-1e9), NotAfter: now.Add(1e15)})
	must(t, err)
	serialOf := func(ch *Changed) string {
		t.Helper()
		rep, err := Scan(context.Background(), Options{Root: root, Config: cfg, Now: now, Cache: cache, Changed: ch})
		must(t, err)
		for _, cert := range rep.Certificates {
			if cert.Path == "/opt/c/cert-00001.pem" {
				return cert.Serial
			}
		}
		t.Fatal("cert-00001.pem not in the report")
		return ""
	}
	before := serialOf(nil)
	must(t, os.WriteFile(filepath.Join(c, "cert-00001.pem"), pkitest.CertPEM(leaf), 0o644))
	others := func(n int) *Changed {
		ch := &Changed{Paths: map[string]bool{}, Watched: map[string]bool{c: true}}
		for i := range n {
			ch.Paths[filepath.Join(c, fmt.Sprintf("gone-%d.pem", i))] = true
		}
		return ch
	}
	if got := serialOf(others(maxChanged)); got != before {
		t.Errorf("%d other paths changed: the scan was not narrowed (serial %s, cached %s)", maxChanged, got, before)
	}
	if got := serialOf(others(maxChanged + 1)); got == before {
		t.Errorf("%d other paths changed: not a full scan, the replaced file still has serial %s", maxChanged+1, got)
	}
}

// TestChangedScanNeverTrustsAStaleReading: a file changed just now is read
// again but not cached (it may change again within the clock's tick); the
// reading cached before must not stay behind, or a later scan narrowed to
// other paths would trust it by path and report the old certificate.
func TestChangedScanNeverTrustsAStaleReading(t *testing.T) {
	c, ca, root, cfg := corpusNode(t, 3)
	cache := settledCache()
	watched := map[string]bool{c: true}
	serial := func(ch *Changed) string {
		t.Helper()
		rep, err := Scan(context.Background(), Options{Root: root, Config: cfg, Now: now, Cache: cache, Changed: ch})
		must(t, err)
		return cert(t, rep, "/opt/c/cert-00001.pem").Serial
	}
	serial(nil)          // settled: every reading cached
	cache.now = time.Now // from now on, what was just written is not cached
	leaf, _, err := ca.Issue(pkitest.Spec{CommonName: "replaced", NotBefore: now.Add(-1e9), NotAfter: now.Add(1e15)})
	must(t, err)
	target := filepath.Join(c, "cert-00001.pem")
	must(t, os.WriteFile(target, pkitest.CertPEM(leaf), 0o644))
	want := serialOf(t, pkitest.CertPEM(leaf))
	if got := serial(&Changed{Paths: map[string]bool{target: false}, Watched: watched}); got != want {
		t.Fatalf("the changed file: serial %s, want %s", got, want)
	}
	if got := serial(&Changed{Paths: map[string]bool{filepath.Join(c, "cert-00002.pem"): false}, Watched: watched}); got != want {
		t.Errorf("a scan narrowed to another file: serial %s, want %s (the stale reading was trusted)", got, want)
	}
}

// corpusNode is a kubeadm node with n leaves of a CA (not on the node) in
// the configured directory /opt/c, whose host path it returns.
func corpusNode(t *testing.T, n int) (string, *pkitest.CA, *pki.Root, *config.Config) {
	t.Helper()
	dir, _ := layout(t, pkitest.Layout{})
	c := filepath.Join(dir, "opt/c")
	ca := newCA(t, "extra-ca")
	must(t, pkitest.WriteCorpus(c, ca, n, now))
	root, err := pki.NewRoot(dir)
	must(t, err)
	return c, ca, root, mustConfig(t, "paths: [/opt/c]")
}
