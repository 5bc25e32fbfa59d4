package inventory

import (
	"testing"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestRotatingCA: mid-rotation, once ca.crt is [new, old] and ca.key the
// new key, what the old CA issued is still renewed from the local CA (the
// new key re-signs it), and the staged CA is named, not a stray file.
func TestRotatingCA(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	dir := t.TempDir()
	n, err := pkitest.Layout{Now: now}.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := pki.NewRoot(dir)
	next, key, _ := ca.NewCA(n.CA.Cert, n.CA.Key, now)
	if err := ca.Stage(root, "/etc/kubernetes/pki", "ca", next, key); err != nil {
		t.Fatal(err)
	}
	before := scan(t, dir, config.Default(), now)
	if c := certNamed(before, "apiserver"); c == nil || c.CAName != "ca" || c.RenewalPath != RenewLocalCA {
		t.Fatalf("before the switch: %+v", c)
	}
	if _, err := ca.Switch(rotate.Options{Root: root, Now: now}, "/etc/kubernetes/pki", "ca", next); err != nil {
		t.Fatal(err)
	}
	rep := scan(t, dir, config.Default(), now)
	c := certNamed(rep, "apiserver")
	if c == nil || c.CAName != "ca#1" || c.RenewalPath != RenewLocalCA || !c.CAKeyPresent || c.ExternallyManaged {
		t.Errorf("issued by the old CA after the switch: %+v", c)
	}
	names := map[string]bool{}
	for _, a := range rep.Authorities {
		names[a.Name] = true
	}
	if !names["ca"] || !names["ca#1"] || !names["ca-next"] || len(rep.Problems) > 0 {
		t.Errorf("authorities %v, problems %v", names, rep.Problems)
	}
}

func certNamed(rep *Report, name string) *Certificate {
	for _, c := range rep.Certificates {
		if c.Name == name {
			return c
		}
	}
	return nil
}
