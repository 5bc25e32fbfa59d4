package plan

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func build(t *testing.T, l pkitest.Layout, sel Selection, mutate func(dir string)) *Plan {
	t.Helper()
	dir := t.TempDir()
	l.Now = now
	if _, err := l.Write(dir); err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(dir)
	}
	root, _ := pki.NewRoot(dir)
	cfg := config.Default()
	rep, err := inventory.Scan(context.Background(), inventory.Options{Root: root, Config: cfg, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	p, err := Build(root, cfg, rep, sel, now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func items(p *Plan) map[string]*Item {
	m := map[string]*Item{}
	for _, it := range p.Items {
		m[it.Name] = it
	}
	return m
}

func TestSelection(t *testing.T) {
	due := pkitest.Layout{NotAfter: map[string]time.Time{
		"apiserver": now.Add(10 * 24 * time.Hour), "admin.conf": now.Add(-time.Hour),
		"kubelet-client-current": now.Add(24 * time.Hour),
	}}
	p := build(t, due, Selection{All: true}, nil)
	m := items(p)
	if len(p.Targets()) != 2 || !m["apiserver"].Renew || !m["admin.conf"].Renew {
		t.Errorf("--all should renew exactly the two due local-CA certificates: %+v", p.Targets())
	}
	if !strings.Contains(m["admin.conf"].Reason, "expired") || !strings.Contains(m["apiserver"].Reason, "renewal window") {
		t.Errorf("reasons: %q %q", m["admin.conf"].Reason, m["apiserver"].Reason)
	}
	if k := m["kubelet-client-current"]; k == nil || k.Renew || k.Err != nil || !strings.Contains(k.Reason, "csr") {
		t.Errorf("a due kubelet client cert is skipped with a reason, not failed: %+v", k)
	}
	if m["apiserver"].Target.Storage != rotate.StoragePair || m["admin.conf"].Target.Storage != rotate.StorageKubeconfig {
		t.Error("storage kinds wrong")
	}

	p = build(t, pkitest.Layout{}, Selection{All: true, Force: true}, nil)
	if n := len(p.Targets()); n != 12 {
		t.Errorf("--all --force: %d targets, want 12", n)
	}
	p = build(t, pkitest.Layout{}, Selection{Names: []string{"etcd-peer", "ca", "nope", "kubelet-client-current"}}, nil)
	m = items(p)
	// A csr certificate asked for by name is planned for a CSR, not refused.
	if k := m["kubelet-client-current"]; !m["etcd-peer"].Renew || m["ca"].Err == nil || m["nope"].Err == nil || k.Err != nil || k.CSR == nil || k.Renew {
		t.Errorf("by name: %+v %+v %+v %+v", m["etcd-peer"], m["ca"], m["nope"], m["kubelet-client-current"])
	}
}

func TestValidityCappedByCA(t *testing.T) {
	p := build(t, pkitest.Layout{CALifetime: 100 * 24 * time.Hour}, Selection{Names: []string{"apiserver"}}, nil)
	it := p.Items[0]
	if !it.Renew || len(it.Warnings) == 0 || it.NotAfter.After(now.Add(100*24*time.Hour)) {
		t.Errorf("validity not capped with a warning: %+v", it)
	}
}

func TestUnreadableCurrentIsAFailure(t *testing.T) {
	p := build(t, pkitest.Layout{}, Selection{All: true, Force: true}, func(dir string) {
		os.WriteFile(filepath.Join(dir, "etc/kubernetes/pki/apiserver.crt"), []byte("junk"), 0o644)
	})
	if it := items(p)["apiserver"]; it == nil || it.Err == nil || !strings.Contains(it.Err.Error(), "cannot read the current certificate") {
		t.Errorf("apiserver: %+v", it)
	}
}
