package inventory

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestBundledCAWithoutBasicConstraints: a leaf bundled with its CA, the CA
// made without basicConstraints (as `openssl x509 -req -signkey` makes a
// v1 CA), next to another CA of the same name. A scan through the cache
// must say what a scan without it says, and never panic.
func TestBundledCAWithoutBasicConstraints(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "opt/c")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	// testdata/v1ca: bundle.pem is a leaf and its v1 CA "v1ca" (openssl
	// x509 -req -signkey); ca3.pem a v3 CA of the same name, another key.
	for src, dst := range map[string]string{"bundle.pem": "leaf.pem", "ca3.pem": "ca.crt"} {
		b, err := os.ReadFile(filepath.Join("testdata/v1ca", src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	jsonOf := func(rep *Report) string {
		var b bytes.Buffer
		if err := rep.WriteJSON(&b); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	want := jsonOf(scanWith(t, dir, nil, 1))
	cache := settledCache()
	for i := range 2 { // a cold and a warm scan through the cache
		if got := jsonOf(scanWith(t, dir, cache, 1)); got != want {
			t.Fatalf("scan %d through the cache differs:\n%s\nwithout:\n%s", i+1, got, want)
		}
	}
}
