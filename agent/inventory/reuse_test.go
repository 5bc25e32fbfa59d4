package inventory

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// A cached leaf is reported as the very Certificate of the previous scan
// when nothing about it changed but the residual seconds (the scan time
// moved), so that the daemon compares pointers; any other change (its
// issuer's key) gives a new one, as a scan without a cache reports it,
// and a report once returned is never changed by later scans.
func TestCachedLeafReportedAgainOnlyWhenSame(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "cluster-ca")
	put(t, dir, "opt/c/ca.crt", pkitest.CertPEM(ca.Cert), 0o644)
	put(t, dir, "opt/c/ca.key", pkitest.KeyPEM(ca.Key), 0o600)
	put(t, dir, "opt/c/leaf.pem", leafPEM(t, ca, "leaf.example"), 0o644)
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustConfig(t, "paths: [/opt/c]")
	cache := settledCache()
	// Each scan is narrowed to the changed paths, as a file event's.
	scan := func(at time.Time, cache *Cache, changed ...string) *Report {
		t.Helper()
		ch := &Changed{Paths: map[string]bool{}, Watched: map[string]bool{filepath.Join(dir, "opt/c"): true}}
		for _, p := range changed {
			ch.Paths[filepath.Join(dir, p)] = true
		}
		rep, err := Scan(context.Background(), Options{Root: root, Config: cfg, Now: at, Cache: cache, Changed: ch})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	first := scan(now, cache)
	frozen, _ := json.Marshal(first)
	second := scan(now, cache)
	if cert(t, second, "/opt/c/leaf.pem") != cert(t, first, "/opt/c/leaf.pem") {
		t.Error("an unchanged leaf at the same residual seconds: a new Certificate, want the previous one")
	}
	later := now.Add(time.Minute)
	third := scan(later, cache)
	if c := cert(t, third, "/opt/c/leaf.pem"); c != cert(t, first, "/opt/c/leaf.pem") || Residual(c.NotAfter, third.ScannedAt) != c.ResidualSeconds-60 {
		t.Errorf("a minute later: residual %d at the scan time, the same Certificate %v", Residual(c.NotAfter, third.ScannedAt), c == cert(t, first, "/opt/c/leaf.pem"))
	}
	// The CA's key goes: the leaf's file is the same, its renewal is not.
	if err := os.Remove(filepath.Join(dir, "opt/c/ca.key")); err != nil {
		t.Fatal(err)
	}
	fourth := scan(later, nil)
	cached := scan(later, cache, "opt/c/ca.key")
	got, want := cert(t, cached, "/opt/c/leaf.pem"), cert(t, fourth, "/opt/c/leaf.pem")
	if got == cert(t, third, "/opt/c/leaf.pem") || got.CAKeyPresent || !SameButResidual(got, want) {
		t.Errorf("after the CA key went: caKeyPresent %v, renewal %s; without the cache: %v, %s", got.CAKeyPresent, got.RenewalPath, want.CAKeyPresent, want.RenewalPath)
	}
	if again, _ := json.Marshal(first); string(again) != string(frozen) {
		t.Error("a later scan changed the first scan's report")
	}
}
