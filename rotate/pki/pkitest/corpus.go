package pkitest

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// WriteCorpus writes n PEM certificates signed by ca into dir, for scale
// benchmarks. They share one key pair (generating n keys would dominate the
// set-up) and differ in subject, SANs, serial and validity.
func WriteCorpus(dir string, ca *CA, n int, now time.Time) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	key, err := NewKey(ECDSA)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		s := Spec{
			CommonName: fmt.Sprintf("svc-%05d.example.internal", i),
			DNSNames:   []string{fmt.Sprintf("svc-%05d.example.internal", i), "svc.example.internal"},
			NotBefore:  now.Add(-time.Duration(i%365) * 24 * time.Hour),
			NotAfter:   now.Add(time.Duration(1+i%400) * 24 * time.Hour),
		}
		c, err := ca.Sign(s, key.Public())
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("cert-%05d.pem", i)), CertPEM(c), 0o644); err != nil {
			return err
		}
	}
	return nil
}
