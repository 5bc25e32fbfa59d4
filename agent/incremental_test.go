package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestChangedFilesThroughTheCache: the daemon rescans only what a file
// event names, through a cache of what it read before; no change may hide
// behind it. A file rewritten in place with the same size and modification
// time (touch -r), a file renamed over another, a new file and a removed
// one all show in the status, each read alone.
func TestChangedFilesThroughTheCache(t *testing.T) {
	now := time.Now()
	dir, ca := nodeWithCorpus(t, "/opt/certs", 20)
	certs := filepath.Join(dir, "opt/certs")
	first := sameSize(t, ca, nil)
	a := filepath.Join(certs, "a.pem")
	must(t, os.WriteFile(a, first.pem, 0o644))
	old := now.Add(-time.Hour)
	must(t, os.Chtimes(a, old, old))
	// Files changed within the cache's racy window are read again anyway:
	// let them settle, so that the cache is what decides.
	time.Sleep(2100 * time.Millisecond)
	h := newHarness(t, dir, clock.RealClock{}, "paths: [/opt/certs]\n")
	defer h.stop()
	h.waitFor("a.pem", func(s *api.Status) bool { return serialIs(s, "/opt/certs/a.pem", first.serial) })

	reads := h.a.cache.Stats().Reads
	second := sameSize(t, ca, first.pem)
	must(t, os.WriteFile(a, second.pem, 0o644)) // in place: the same inode
	must(t, os.Chtimes(a, old, old))
	h.waitFor("a.pem rewritten in place, touch -r", func(s *api.Status) bool {
		return serialIs(s, "/opt/certs/a.pem", second.serial) && s.Daemon.LastScanReason == "change on disk"
	})
	sameAsCold(t, h, "paths: [/opt/certs]\n")

	third := sameSize(t, ca, first.pem)
	must(t, os.WriteFile(filepath.Join(certs, ".a.tmp"), third.pem, 0o644))
	must(t, os.Chtimes(filepath.Join(certs, ".a.tmp"), old, old))
	must(t, os.Rename(filepath.Join(certs, ".a.tmp"), a))
	h.waitFor("a.pem renamed over", func(s *api.Status) bool { return serialIs(s, "/opt/certs/a.pem", third.serial) })
	sameAsCold(t, h, "paths: [/opt/certs]\n")

	must(t, os.WriteFile(filepath.Join(certs, "b.pem"), first.pem, 0o644))
	must(t, os.Remove(filepath.Join(certs, "cert-00003.pem")))
	h.waitFor("b.pem new, cert-00003.pem gone", func(s *api.Status) bool {
		return serialIs(s, "/opt/certs/b.pem", first.serial) && cert(s, "/opt/certs/cert-00003.pem") == nil
	})
	sameAsCold(t, h, "paths: [/opt/certs]\n")
	s := h.status()
	if n := len(s.Certificates); n != 14+20+1 {
		t.Errorf("%d certificates, want %d", n, 14+20+1)
	}
	if r := h.a.cache.Stats().Reads - reads; r > 6 {
		t.Errorf("%d files read for three changes: the rescans were not narrowed to them", r)
	}

	// The corpus's CA appears: the leaves, whose files did not change,
	// are matched with it by signature in a pass narrowed to it.
	must(t, os.WriteFile(filepath.Join(certs, "ca.crt"), pkitest.CertPEM(ca.Cert), 0o644))
	h.waitFor("the corpus CA", func(s *api.Status) bool {
		c := cert(s, "/opt/certs/cert-00005.pem")
		return c != nil && c.CAPath == "/opt/certs/ca.crt" && s.Daemon.LastScanReason == "change on disk"
	})
	sameAsCold(t, h, "paths: [/opt/certs]\n")
}

// sameAsCold checks the daemon's status document, after passes narrowed
// to what changed, against a new daemon's first full pass with nothing
// cached: the same certificates, authorities, key pairs, problems and
// renewal statuses (residual seconds aside: the two scans are moments
// apart).
func sameAsCold(t *testing.T, h *harness, cfgText string) {
	t.Helper()
	cold := newHarnessWith(t, h.dir, clock.RealClock{}, cfgText, func(o *Options) {
		o.Socket, o.StateDir = filepath.Join(t.TempDir(), "cold.sock"), t.TempDir()
	})
	want := h.status()
	got := cold.status()
	cold.stop()
	if a, b := agreed(t, got), agreed(t, want); a != b {
		t.Fatalf("the narrowed passes' status differs from a full pass's:\n%s\nfull:\n%s", b, a)
	}
}

// agreed is the part of a status document two scans of the same files
// agree on.
func agreed(t *testing.T, s *api.Status) string {
	for _, l := range [][]*inventory.Certificate{s.Authorities, certsOf(s)} {
		for _, c := range l {
			c.ResidualSeconds = 0
		}
	}
	data, err := json.MarshalIndent(struct {
		C []*api.CertStatus
		A []*inventory.Certificate
		K []*inventory.KeyPair
		P []inventory.Problem
	}{s.Certificates, s.Authorities, s.KeyPairs, s.Problems}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func certsOf(s *api.Status) []*inventory.Certificate {
	out := make([]*inventory.Certificate, len(s.Certificates))
	for i, c := range s.Certificates {
		out[i] = c.Certificate
	}
	return out
}

type issued struct {
	pem    []byte
	serial string
}

// sameSize issues a leaf of ca whose PEM is as long as like (any when nil).
func sameSize(t *testing.T, ca *pkitest.CA, like []byte) issued {
	t.Helper()
	for range 500 {
		c, _, err := ca.Issue(pkitest.Spec{CommonName: "a.example.internal", NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(300 * 24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if p := pkitest.CertPEM(c); like == nil || len(p) == len(like) {
			return issued{p, strings.ToUpper(c.SerialNumber.Text(16))}
		}
	}
	t.Fatal("no leaf of the same size")
	return issued{}
}

func serialIs(s *api.Status, name, serial string) bool {
	c := cert(s, name)
	return c != nil && c.Serial == serial
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// nodeWithCorpus writes a kubeadm node with n leaves of an ECDSA CA (whose
// key is not on the node) in the node directory corpus.
func nodeWithCorpus(t testing.TB, corpus string, n int) (string, *pkitest.CA) {
	t.Helper()
	now := time.Now()
	dir := t.TempDir()
	if _, err := (pkitest.Layout{Now: now}).Write(dir); err != nil {
		t.Fatal(err)
	}
	ca, err := pkitest.NewCA("corpus-ca", now.Add(-time.Hour), now.Add(10*365*24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	if err := pkitest.WriteCorpus(filepath.Join(dir, corpus), ca, n, now); err != nil {
		t.Fatal(err)
	}
	return dir, ca
}
