package agent

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/state"
	"github.com/certagent/certagent/agent/watch"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// deciderNode is a kubeadm node's layout and an agent that can decide on
// it, with its first scan.
func deciderNode(t *testing.T) (*Agent, *pki.Root, *config.Config, *inventory.Report) {
	t.Helper()
	dir := t.TempDir()
	if _, err := (pkitest.Layout{Now: t0, LeafLifetime: 10 * 24 * time.Hour}).Write(dir); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nagent: {nodeName: node1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := inventory.Scan(context.Background(), inventory.Options{Root: root, Config: cfg, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	return builder(t, root, cfg), root, cfg, rep
}

// builder is a decider that can also build status documents.
func builder(t *testing.T, root *pki.Root, cfg *config.Config) *Agent {
	t.Helper()
	a := decider(t, root, cfg)
	w, err := watch.New(a.opts.Clock, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	a.watch = w
	return a
}

// TestBuildFollowsRenewalStatus: a certificate whose renewal status
// changed (a renewal failed) while its Certificate is the very one of the
// previous document is built with the new status: the document's
// certificates are those a first build of the same pass gives.
func TestBuildFollowsRenewalStatus(t *testing.T) {
	a, root, cfg, rep := deciderNode(t)
	statuses, _, _ := a.decide(rep, t0, nil, false)
	a.build(rep, statuses, "start", t0)
	c := localCA(t, rep)
	a.state.Put(c.Name, state.Cert{Serial: c.Serial, Failures: 1, NextAttempt: t0.Add(5 * time.Hour), LastError: "refused"})
	now := t0.Add(time.Minute)
	statuses, _, _ = a.decide(rep, now, nil, true)
	got := a.build(rep, statuses, "changed", now)

	fresh := builder(t, root, cfg)
	want := fresh.build(rep, statuses, "changed", now)
	g, _ := json.Marshal(got.Certificates)
	w, _ := json.Marshal(want.Certificates)
	if string(g) != string(w) {
		t.Errorf("the certificates built differ from a first build:\n got %s\nwant %s", g, w)
	}
	for i, cs := range got.Certificates {
		if cs.Name == c.Name && cs.Renewal.Failures != 1 {
			t.Errorf("%s (entry %d): renewal %+v, want the failure", c.Name, i, cs.Renewal)
		}
	}
}

// TestForgetAfterRecordAdded: a record added while the certificates keep
// the names the previous pass kept is forgotten when its certificate is
// not on the node, as a first pass forgets it.
func TestForgetAfterRecordAdded(t *testing.T) {
	a, _, _, rep := deciderNode(t)
	a.forget(rep.Certificates)
	a.state.Put("/opt/gone.pem", state.Cert{Serial: "0ABC", Failures: 1})
	a.forget(rep.Certificates)
	if r := a.state.Get("/opt/gone.pem"); r.Serial != "" {
		t.Errorf("the record of a certificate gone is kept: %+v", r)
	}
	if r := a.state.Get(rep.Certificates[0].Name); r.Serial != "" {
		t.Errorf("%s: a record where none was put: %+v", rep.Certificates[0].Name, r)
	}
}
