package inventory

import (
	"context"
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
