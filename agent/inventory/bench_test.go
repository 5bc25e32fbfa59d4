package inventory

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// BenchmarkScanKubeadmLayout: one in-process scan of a full control-plane
// node (3 CAs, 11 kubeadm leaves and kubeconfigs, kubelet store).
func BenchmarkScanKubeadmLayout(b *testing.B) {
	dir, _ := layout(b, pkitest.Layout{KeyType: pkitest.RSA})
	root, _ := pki.NewRoot(dir)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rep, err := Scan(context.Background(), Options{Root: root, Now: now})
		if err != nil || len(rep.Certificates) != 14 {
			b.Fatalf("%v %d", err, len(rep.Certificates))
		}
	}
}

// BenchmarkScan10k: the kubeadm layout plus a configured directory of
// 10,000 PEM certificates signed by the cluster CA, so that each needs a
// signature check to name its issuer. kubeadm's CAs are RSA-2048 by default;
// the ECDSA case is slower to verify.
func BenchmarkScan10k(b *testing.B) {
	for _, kt := range []pkitest.KeyType{pkitest.RSA, pkitest.ECDSA} {
		b.Run("ca="+string(kt), func(b *testing.B) {
			dir, n := layout(b, pkitest.Layout{KeyType: kt})
			if err := pkitest.WriteCorpus(dir+"/opt/corpus", n.CA, 10000, now); err != nil {
				b.Fatal(err)
			}
			root, _ := pki.NewRoot(dir)
			cfg := mustConfig(b, "paths: [/opt/corpus]")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rep, err := Scan(context.Background(), Options{Root: root, Config: cfg, Now: time.Now()})
				if err != nil || len(rep.Certificates) != 10014 {
					b.Fatalf("%v %d", err, len(rep.Certificates))
				}
			}
		})
	}
}

// corpus10k is a monitored directory as users have them: 10,000 PEM
// leaves signed by an ECDSA P-256 CA whose certificate (no key) is in the
// same directory, under the root dir+"/with-ca"; dir+"/no-ca" holds the
// same leaves without the CA. Made once per test binary.
var corpus10k = struct {
	once sync.Once
	dir  string
	ca   *pkitest.CA
	made time.Time
	err  error
}{}

func corpus(b *testing.B) (string, *pkitest.CA) {
	b.Helper()
	c := &corpus10k
	c.once.Do(func() {
		c.dir, c.err = os.MkdirTemp("", "certagent-bench-")
		if c.err != nil {
			return
		}
		if c.ca, c.err = pkitest.NewCA("corpus-ca", now.Add(-time.Hour), now.Add(10*365*24*time.Hour), pkitest.ECDSA); c.err != nil {
			return
		}
		if c.err = pkitest.WriteCorpus(filepath.Join(c.dir, "with-ca/opt/corpus"), c.ca, 10000, now); c.err != nil {
			return
		}
		if c.err = os.WriteFile(filepath.Join(c.dir, "with-ca/opt/corpus/ca.crt"), pkitest.CertPEM(c.ca.Cert), 0o644); c.err != nil {
			return
		}
		c.err = os.Rename(filepath.Join(c.dir, "with-ca/opt/corpus"), filepath.Join(c.dir, "no-ca-tmp"))
		if c.err == nil {
			c.err = copyDir(filepath.Join(c.dir, "no-ca-tmp"), filepath.Join(c.dir, "with-ca/opt/corpus"))
		}
		if c.err == nil {
			os.Remove(filepath.Join(c.dir, "no-ca-tmp/ca.crt"))
			os.MkdirAll(filepath.Join(c.dir, "no-ca/opt"), 0o755)
			c.err = os.Rename(filepath.Join(c.dir, "no-ca-tmp"), filepath.Join(c.dir, "no-ca/opt/corpus"))
		}
		c.made = time.Now()
	})
	if c.err != nil {
		b.Fatal(c.err)
	}
	// Files changed within the cache's racy window are read again; let
	// the corpus settle so that a warm cache is warm.
	time.Sleep(time.Until(c.made.Add(racyWindow + 100*time.Millisecond)))
	return c.dir, c.ca
}

func copyDir(from, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		return err
	}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// TestMain removes the shared corpus.
func TestMain(m *testing.M) {
	code := m.Run()
	if corpus10k.dir != "" {
		os.RemoveAll(corpus10k.dir)
	}
	os.Exit(code)
}

// BenchmarkFloor10k is the floor a scan is measured against: read and
// parse every file of the corpus on one thread, nothing else.
func BenchmarkFloor10k(b *testing.B) {
	dir, _ := corpus(b)
	for _, d := range []string{"with-ca", "no-ca"} {
		b.Run(d, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if n := floor(b, filepath.Join(dir, d, "opt/corpus")); n < 10000 {
					b.Fatalf("%d certificates", n)
				}
			}
		})
	}
}

func floor(b *testing.B, dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		for {
			var blk *pem.Block
			if blk, data = pem.Decode(data); blk == nil {
				break
			}
			if _, err := x509.ParseCertificate(blk.Bytes); err == nil {
				n++
			}
		}
	}
	return n
}

// BenchmarkScanCorpus10k: certagent's scan of the floor's corpus, with
// the CA in the directory (every leaf's signature checked) and without.
func BenchmarkScanCorpus10k(b *testing.B) {
	dir, _ := corpus(b)
	cfg := mustConfig(b, "paths: [/opt/corpus]")
	for _, d := range []string{"with-ca", "no-ca"} {
		b.Run(d, func(b *testing.B) {
			root, _ := pki.NewRoot(filepath.Join(dir, d))
			for i := 0; i < b.N; i++ {
				rep, err := Scan(context.Background(), Options{Root: root, Config: cfg, Now: now})
				if err != nil || len(rep.Certificates) != 10000 {
					b.Fatalf("%v %d", err, len(rep.Certificates))
				}
			}
		})
	}
}

// BenchmarkRescanOneChanged10k: a rescan with a warm cache after one leaf
// of the 10,000 was replaced: every file looked at (full, the daemon's
// resync), or only the path a watcher named (narrowed, the daemon's file
// event), at the same scan time or each a second after the previous
// (next-second: every residual moved, as between a node's changes);
// reads/op and checks/op are the files read and the signatures checked
// per rescan, cpu-ms/op the process's CPU time (user and system, every
// thread) per rescan.
func BenchmarkRescanOneChanged10k(b *testing.B) {
	b.Run("full", func(b *testing.B) { rescanOneChanged(b, false, 0) })
	b.Run("narrowed", func(b *testing.B) { rescanOneChanged(b, true, 0) })
	b.Run("narrowed-next-second", func(b *testing.B) { rescanOneChanged(b, true, time.Second) })
}

func rescanOneChanged(b *testing.B, narrowed bool, step time.Duration) {
	dir, ca := corpus(b)
	root, _ := pki.NewRoot(filepath.Join(dir, "with-ca"))
	cfg := mustConfig(b, "paths: [/opt/corpus]")
	cache := NewCache()
	if _, err := Scan(context.Background(), Options{Root: root, Config: cfg, Now: now, Cache: cache}); err != nil {
		b.Fatal(err)
	}
	target := filepath.Join(dir, "with-ca/opt/corpus/cert-05000.pem")
	original, _ := os.ReadFile(target)
	defer os.WriteFile(target, original, 0o644)
	leaves := make([][]byte, 8)
	for i := range leaves {
		leaves[i] = leafPEM(b, ca, "svc-05000.example.internal")
	}
	before := cache.Stats()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := os.WriteFile(target, leaves[i%len(leaves)], 0o644); err != nil {
			b.Fatal(err)
		}
		var changed *Changed
		if narrowed {
			changed = &Changed{Paths: map[string]bool{target: false}, Watched: map[string]bool{filepath.Dir(target): true}}
		}
		at := now.Add(time.Duration(i+1) * step)
		rep, err := Scan(context.Background(), Options{Root: root, Config: cfg, Now: at, Cache: cache, Changed: changed})
		if err != nil || len(rep.Certificates) != 10000 {
			b.Fatalf("%v %d", err, len(rep.Certificates))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	after := cache.Stats()
	b.ReportMetric(float64(after.Reads-before.Reads)/float64(b.N), "reads/op")
	b.ReportMetric(float64(after.Verifications-before.Verifications)/float64(b.N), "checks/op")
	b.ReportMetric(float64(after.Patches-before.Patches)/float64(b.N), "patches/op")
}

// cpuTime is the process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
