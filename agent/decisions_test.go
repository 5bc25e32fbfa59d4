package agent

import (
	"context"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/state"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestNarrowedDecisionsMatchFull: a pass that reuses the decisions nothing
// can have changed decides exactly what deciding every certificate does,
// as time crosses renewal deadlines, retries and expiries, and as records
// and certificates change.
func TestNarrowedDecisionsMatchFull(t *testing.T) {
	dir := t.TempDir()
	if _, err := (pkitest.Layout{Now: t0, LeafLifetime: 10 * 24 * time.Hour}).Write(dir); err != nil {
		t.Fatal(err)
	}
	other, err := pkitest.NewCA("elsewhere", t0.Add(-time.Hour), t0.Add(10*365*24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	if err := pkitest.WriteCorpus(dir+"/opt/ext", other, 30, t0); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nagent: {nodeName: node1}\npaths: [/opt/ext]\n"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	narrowed, full := decider(t, root, cfg), decider(t, root, cfg)
	cache := inventory.NewCache()
	reused := 0
	last := map[string]*inventory.Certificate{}
	for step := range 30 {
		now := t0.Add(time.Duration(step) * 9 * time.Hour)
		rep, err := inventory.Scan(context.Background(), inventory.Options{Root: root, Config: cfg, Now: now, Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		// As a settled cache does (these files were written just now):
		// an unchanged certificate is the previous scan's Certificate.
		for i, c := range rep.Certificates {
			if p := last[c.Name]; p != nil && inventory.SameButResidual(p, c) {
				rep.Certificates[i] = p
			}
			last[c.Name] = rep.Certificates[i]
		}
		if step == 5 { // a certificate replaced on disk: a new serial
			c := *rep.Certificates[len(rep.Certificates)-1]
			c.Serial = "0ABC"
			rep.Certificates[len(rep.Certificates)-1] = &c
		}
		if step == 7 { // a renewal failed: retry in five hours
			c := localCA(t, rep)
			name := c.Name
			rec := state.Cert{Serial: c.Serial, Failures: 1, NextAttempt: now.Add(5 * time.Hour), LastError: "refused"}
			narrowed.state.Put(name, rec)
			full.state.Put(name, rec)
		}
		before := map[*api.RenewalStatus]bool{}
		for _, p := range narrowed.decisions.by {
			before[p.status] = true
		}
		got, gotDue, gotCSR := narrowed.decide(rep, now, nil, true)
		want, wantDue, wantCSR := full.decide(rep, now, nil, false)
		for i, c := range rep.Certificates {
			g, w := got[i], want[i]
			if g == nil || w == nil || !sameRenewal(g, w) {
				t.Errorf("step %d (%s), %s: narrowed %+v, full %+v", step, now.Sub(t0), c.Name, g, w)
			}
			if before[g] {
				reused++
			}
		}
		if names(gotDue) != names(wantDue) || names(gotCSR) != names(wantCSR) {
			t.Errorf("step %d: due %s and %s, want %s and %s", step, names(gotDue), names(gotCSR), names(wantDue), names(wantCSR))
		}
	}
	if reused == 0 || narrowed.decisions.quicked == 0 {
		t.Errorf("decisions reused: %d, %d of them without a look-up: the test shows nothing", reused, narrowed.decisions.quicked)
	}
}

// decider is an agent that can decide, without its loop.
func decider(t *testing.T, root *pki.Root, cfg *config.Config) *Agent {
	t.Helper()
	a, err := New(Options{Root: root, LoadConfig: func() (*config.Config, error) { return cfg, nil }, Log: quietLogger(), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if a.state, _, err = state.Open(a.opts.StateDir, t0); err != nil {
		t.Fatal(err)
	}
	a.cfg, a.node = cfg, "node1"
	return a
}

// localCA is the first certificate a local CA renews.
func localCA(t *testing.T, rep *inventory.Report) *inventory.Certificate {
	for _, c := range rep.Certificates {
		if c.RenewalPath == inventory.RenewLocalCA {
			return c
		}
	}
	t.Fatal("no certificate renewed from a local CA")
	return nil
}

func names(l []*inventory.Certificate) string {
	out := ""
	for _, c := range l {
		out += c.Name + " "
	}
	return out
}
