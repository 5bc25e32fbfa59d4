package inventory

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// settledCache is a cache whose clock runs an hour ahead, so files the
// test just wrote count as settled (not changed within the racy window).
func settledCache() *Cache {
	c := NewCache()
	c.now = func() time.Time { return time.Now().Add(time.Hour) }
	return c
}

func scanWith(t testing.TB, dir string, cache *Cache, workers int) *Report {
	t.Helper()
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Scan(context.Background(), Options{Root: root, Config: mustConfig(t, "paths: [/opt/c]"), Now: now,
		Cache: cache, Workers: workers})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func newCA(t testing.TB, cn string) *pkitest.CA {
	t.Helper()
	ca, err := pkitest.NewCA(cn, now.Add(-time.Hour), now.Add(10*365*24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// sameNamedCA makes another CA with old's subject and subject key
// identifier but its own key: only a signature check tells them apart.
func sameNamedCA(t testing.TB, old *pkitest.CA) *pkitest.CA {
	t.Helper()
	key, err := pkitest.NewKey(pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := *old.Cert
	tmpl.SerialNumber = new(big.Int).Add(tmpl.SerialNumber, big.NewInt(1))
	tmpl.PublicKey = key.Public()
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.String() != old.Cert.Subject.String() || !bytes.Equal(cert.SubjectKeyId, old.Cert.SubjectKeyId) {
		t.Fatal("not same-named")
	}
	return &pkitest.CA{Cert: cert, Key: key}
}

func leafPEM(t testing.TB, ca *pkitest.CA, cn string) []byte {
	t.Helper()
	c, _, err := ca.Issue(pkitest.Spec{CommonName: cn, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(300 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return pkitest.CertPEM(c)
}

// leafOfSize issues leaves until one encodes to exactly size bytes.
func leafOfSize(t testing.TB, ca *pkitest.CA, cn string, size int) []byte {
	t.Helper()
	for range 200 {
		if b := leafPEM(t, ca, cn); len(b) == size {
			return b
		}
	}
	t.Fatalf("no leaf of %d bytes", size)
	return nil
}

func cert(t testing.TB, rep *Report, name string) *Certificate {
	t.Helper()
	c := byName(rep)[name]
	if c == nil {
		t.Fatalf("%s not in report: %v", name, names(rep.Certificates))
	}
	return c
}

func serialOf(t testing.TB, pemData []byte) string {
	t.Helper()
	b, err := pki.ParseBundle(pemData)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ToUpper(b.Certs[0].SerialNumber.Text(16))
}

// A file replaced by one of the same size and modification time (as
// `touch -r` leaves it), in place or by rename, is read again: its change
// time or inode differ. Files that did not change are not read again.
func TestCacheSeesSameSizeSameMtimeReplacement(t *testing.T) {
	for _, how := range []string{"in-place", "rename"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			ca := newCA(t, "corpus-ca")
			put(t, dir, "opt/c/ca.crt", pkitest.CertPEM(ca.Cert), 0o644)
			for _, n := range []string{"a", "b", "c"} {
				put(t, dir, "opt/c/"+n+".pem", leafPEM(t, ca, n+".example"), 0o644)
			}
			target := filepath.Join(dir, "opt/c/b.pem")
			old, _ := os.ReadFile(target)
			fi, _ := os.Stat(target)
			cache := settledCache()
			rep := scanWith(t, dir, cache, 2)
			if got := cert(t, rep, "/opt/c/b.pem").Serial; got != serialOf(t, old) {
				t.Fatalf("first scan: serial %s", got)
			}
			before := cache.Stats()

			repl := leafOfSize(t, ca, "b.example", len(old))
			if how == "rename" {
				put(t, dir, "opt/c/.b.tmp", repl, 0o644)
				if err := os.Chtimes(filepath.Join(dir, "opt/c/.b.tmp"), fi.ModTime(), fi.ModTime()); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(filepath.Join(dir, "opt/c/.b.tmp"), target); err != nil {
					t.Fatal(err)
				}
			} else {
				f, err := os.OpenFile(target, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteAt(repl, 0)
				f.Close()
				if err := os.Chtimes(target, fi.ModTime(), fi.ModTime()); err != nil {
					t.Fatal(err)
				}
			}
			if nfi, _ := os.Stat(target); nfi.Size() != fi.Size() || !nfi.ModTime().Equal(fi.ModTime()) {
				t.Fatal("replacement differs in size or mtime: the test proves nothing")
			}
			rep = scanWith(t, dir, cache, 2)
			b := cert(t, rep, "/opt/c/b.pem")
			if b.Serial != serialOf(t, repl) {
				t.Errorf("after replacement: serial %s, want %s (the cache hid the change)", b.Serial, serialOf(t, repl))
			}
			if b.CAPath != "/opt/c/ca.crt" {
				t.Errorf("replaced leaf: CA %q", b.CAPath)
			}
			after := cache.Stats()
			if reads := after.Reads - before.Reads; reads != 1 {
				t.Errorf("second scan read %d files, want 1 (only the replaced one)", reads)
			}
			if v := after.Verifications - before.Verifications; v != 1 {
				t.Errorf("second scan checked %d signatures, want 1", v)
			}
		})
	}
}

// The CA replaced by a different CA with the same name and key identifier
// (a rotation): the cached verdict of the old CA must not carry over.
func TestCacheCAReplacedBySameNamedCA(t *testing.T) {
	dir := t.TempDir()
	oldCA := newCA(t, "cluster-ca")
	newCA := sameNamedCA(t, oldCA)
	put(t, dir, "opt/c/ca.crt", pkitest.CertPEM(oldCA.Cert), 0o644)
	put(t, dir, "opt/c/old.pem", leafPEM(t, oldCA, "old.example"), 0o644)
	put(t, dir, "opt/c/new.pem", leafPEM(t, newCA, "new.example"), 0o644)
	cache := settledCache()
	rep := scanWith(t, dir, cache, 2)
	if c := cert(t, rep, "/opt/c/old.pem"); c.CAPath != "/opt/c/ca.crt" {
		t.Fatalf("old leaf before: CA %q", c.CAPath)
	}
	if c := cert(t, rep, "/opt/c/new.pem"); c.CAPath != "" {
		t.Fatalf("new leaf before: CA %q, want none", c.CAPath)
	}
	put(t, dir, "opt/c/ca.crt", pkitest.CertPEM(newCA.Cert), 0o644)
	rep = scanWith(t, dir, cache, 2)
	if c := cert(t, rep, "/opt/c/old.pem"); c.CAPath != "" {
		t.Errorf("old leaf after the CA changed: CA %q, want none (a cached verdict of the old CA)", c.CAPath)
	}
	if c := cert(t, rep, "/opt/c/new.pem"); c.CAPath != "/opt/c/ca.crt" {
		t.Errorf("new leaf after the CA changed: CA %q", c.CAPath)
	}
}

// Two CAs with the same subject and key identifier side by side (a CA
// rotation): each leaf is linked with the CA that signed it, with or
// without a cache, on one worker or two, and the report does not depend
// on which. The CAs are named like CAs (read first) or not (read last, so
// that the leaves' issuers are found in the second phase).
func TestTwoSameNamedCAs(t *testing.T) {
	for _, ca := range [][2]string{{"ca-old.crt", "ca-new.crt"}, {"zz-old-root.pem", "zz-new-root.pem"}} {
		t.Run(ca[0], func(t *testing.T) { twoSameNamedCAs(t, ca[0], ca[1]) })
	}
}

func twoSameNamedCAs(t *testing.T, oldFile, newFile string) {
	dir := t.TempDir()
	oldCA := newCA(t, "cluster-ca")
	newCA := sameNamedCA(t, oldCA)
	put(t, dir, "opt/c/"+oldFile, pkitest.CertPEM(oldCA.Cert), 0o644)
	put(t, dir, "opt/c/"+newFile, pkitest.CertPEM(newCA.Cert), 0o644)
	for i := range 20 {
		put(t, dir, filepath.Join("opt/c", "old-"+string(rune('a'+i))+".pem"), leafPEM(t, oldCA, "old.example"), 0o644)
		put(t, dir, filepath.Join("opt/c", "new-"+string(rune('a'+i))+".pem"), leafPEM(t, newCA, "new.example"), 0o644)
	}
	var first []byte
	cache := settledCache()
	for _, run := range []struct {
		cache   *Cache
		workers int
	}{{nil, 1}, {nil, 2}, {cache, 2}, {cache, 2}, {cache, 1}} {
		rep := scanWith(t, dir, run.cache, run.workers)
		for _, c := range rep.Certificates {
			want := "/opt/c/" + oldFile
			if strings.HasPrefix(filepath.Base(c.Path), "new-") {
				want = "/opt/c/" + newFile
			}
			if c.CAPath != want {
				t.Errorf("cache %v, %d workers: %s issued by %q, want %q", run.cache != nil, run.workers, c.Path, c.CAPath, want)
			}
		}
		var buf bytes.Buffer
		rep.WriteJSON(&buf)
		if first == nil {
			first = buf.Bytes()
		} else if !bytes.Equal(first, buf.Bytes()) {
			t.Errorf("cache %v, %d workers: report differs from the first", run.cache != nil, run.workers)
		}
	}
}

// A warm cache and an unchanged tree: nothing is read or checked again,
// and the report is the same as a scan without a cache.
func TestCacheUnchangedTreeCostsNothing(t *testing.T) {
	dir, n := layout(t, pkitest.Layout{})
	if err := pkitest.WriteCorpus(filepath.Join(dir, "opt/c"), n.CA, 50, now); err != nil {
		t.Fatal(err)
	}
	cache := settledCache()
	want, _ := json.Marshal(scanWith(t, dir, nil, 2))
	scanWith(t, dir, cache, 2)
	before := cache.Stats()
	got, _ := json.Marshal(scanWith(t, dir, cache, 2))
	after := cache.Stats()
	if after.Reads != before.Reads || after.Verifications != before.Verifications {
		t.Errorf("unchanged tree: %d reads, %d checks, want none", after.Reads-before.Reads, after.Verifications-before.Verifications)
	}
	if !bytes.Equal(got, want) {
		t.Error("a scan from the cache differs from a scan without one")
	}
	if after.Files < 50 {
		t.Errorf("cache holds %d files", after.Files)
	}
}

// Files changed within the racy window are not trusted: the next scan
// reads them again.
func TestCacheDoesNotTrustJustChangedFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "corpus-ca")
	put(t, dir, "opt/c/a.pem", leafPEM(t, ca, "a.example"), 0o644)
	cache := NewCache() // the real clock: a.pem changed just now
	scanWith(t, dir, cache, 1)
	r0 := cache.Stats().Reads
	scanWith(t, dir, cache, 1)
	if cache.Stats().Reads == r0 {
		t.Error("a file changed just now was trusted from the cache")
	}
}

// Scans sharing one cache at the same time agree with a scan without one.
func TestCacheConcurrentScans(t *testing.T) {
	dir, n := layout(t, pkitest.Layout{})
	if err := pkitest.WriteCorpus(filepath.Join(dir, "opt/c"), n.CA, 30, now); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(scanWith(t, dir, nil, 2))
	cache := settledCache()
	got := make([][]byte, 4)
	done := make(chan struct{})
	for i := range got {
		go func() {
			defer func() { done <- struct{}{} }()
			root, _ := pki.NewRoot(dir)
			rep, err := Scan(context.Background(), Options{Root: root, Config: mustConfig(t, "paths: [/opt/c]"), Now: now, Cache: cache})
			if err == nil {
				got[i], _ = json.Marshal(rep)
			}
		}()
	}
	for range got {
		<-done
	}
	for i, g := range got {
		if !bytes.Equal(g, want) {
			t.Errorf("scan %d with a shared cache differs from a scan without one", i)
		}
	}
}
