package canode

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// caCrt reads the node's ca.crt.
func (f *fixture) caCrt(t *testing.T) *pki.Bundle {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(f.dir, "etc/kubernetes/pki/ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := pki.ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func holdsCert(b *pki.Bundle, c *pkitest.CA) bool {
	for _, x := range b.Certs {
		if x.Equal(c.Cert) {
			return true
		}
	}
	return false
}

// TestForgedRotationIsRefused: a ConfigMap that is consistent with
// itself but whose new CA the old CA's key did not choose (anyone who
// may write ConfigMaps in kube-system can make one) gets nothing trusted
// on a worker or a control-plane node; neither does a rotation that
// names one CA and replaces another, nor a control-plane node's trust
// before the new CA is staged there.
func TestForgedRotationIsRefused(t *testing.T) {
	for _, worker := range []bool{true, false} {
		f := newFixture(t, worker)
		// A CA of the same subject, not chosen by the old CA's key.
		evilCA := impostor(t)
		evil := evilCA.Cert
		for _, tc := range []struct {
			name  string
			proof []byte
			want  string
		}{
			{"no proof", nil, "newCAProof: "},
			{"self-made proof", prove(t, evilCA, evil), "not signed by the old CA"},
		} {
			f.cluster.NewCA, f.cluster.ID, f.cluster.Proof = pkitest.CertPEM(evil), carotate.Fingerprint(evil), tc.proof
			out := f.converge(t, &recorder{}, nil)
			if !strings.Contains(out.Report.Blocked, tc.want) || out.Report.Done {
				t.Errorf("worker %v, %s: %+v", worker, tc.name, out.Report)
			}
			if holdsCert(f.caCrt(t), evilCA) {
				t.Fatalf("worker %v, %s: ca.crt trusts the forged CA", worker, tc.name)
			}
		}
	}
	// ca named, the etcd CA replaced (with a proof its key signed).
	g := newFixture(t, true)
	enext, _, _ := ca.NewCA(g.node.EtcdCA.Cert, g.node.EtcdCA.Key, now)
	g.cluster.OldCA, g.cluster.NewCA, g.cluster.ID = pkitest.CertPEM(g.node.EtcdCA.Cert), pkitest.CertPEM(enext), carotate.Fingerprint(enext)
	g.cluster.Proof = prove(t, g.node.EtcdCA, enext)
	if out := g.converge(t, &recorder{}, nil); !strings.Contains(out.Report.Blocked, "is the CA of etcd-ca (/etc/kubernetes/pki/etcd/ca.crt), not of ca") {
		t.Errorf("ca named, etcd CA replaced: %+v", out.Report)
	}
	// A control-plane node without the new CA staged trusts nothing.
	h := newFixture(t, false)
	os.Remove(filepath.Join(h.dir, "etc/kubernetes/pki/ca.next.crt"))
	os.Remove(filepath.Join(h.dir, "etc/kubernetes/pki/ca.next.key"))
	out := h.converge(t, &recorder{}, nil)
	if !strings.Contains(out.Report.Blocked, "this node holds the CA key (/etc/kubernetes/pki/ca.key) but /etc/kubernetes/pki/ca.next.crt is not the rotation's new CA") || holdsCert(h.caCrt(t), h.next) {
		t.Errorf("control plane, nothing staged: %+v", out.Report)
	}
}

func impostor(t *testing.T) *pkitest.CA {
	t.Helper()
	c, err := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(3650*24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPhasesInOrder: a node enters a phase only once the one before is
// done here. A ConfigMap moved from trust to finish does not take the old
// CA out of a worker's bundles while its kubelet's certificate still
// comes from it: the node does reissue first, and finish itself refuses
// while a certificate here is from the old CA.
func TestPhasesInOrder(t *testing.T) {
	f := newFixture(t, true)
	leaves := []Leaf{{Leaf: ca.Leaf{Name: "kubelet-client-current", Path: "/var/lib/kubelet/pki/kubelet-client-current.pem"}, CSR: true}}
	if out := f.converge(t, &recorder{}, nil, leaves...); !out.Report.Done || out.Report.Phase != carotate.Trust {
		t.Fatalf("trust: %+v", out.Report)
	}
	f.cluster.Phase = carotate.Finish
	out := f.converge(t, &recorder{}, nil, leaves...)
	if out.Report.Done || out.Report.Phase != carotate.Reissue || out.Status.NodePhase != "reissue" || out.Status.Phase != "finish" {
		t.Errorf("a jump to finish: report %+v, status phase %s nodePhase %s", out.Report, out.Status.Phase, out.Status.NodePhase)
	}
	if !holdsCert(f.caCrt(t), &pkitest.CA{Cert: f.node.CA.Cert}) {
		t.Fatal("the old CA left ca.crt while the kubelet's certificate comes from it")
	}
	// Even with reissue recorded done, finish removes nothing while a
	// certificate here is from the old CA.
	it := &Intent{ID: f.cluster.ID, CA: "ca", Phase: carotate.Reissue, Done: true,
		PhasesDone: []carotate.Phase{carotate.Prepare, carotate.Trust, carotate.Reissue}}
	data, _ := json.Marshal(it)
	if err := os.WriteFile(filepath.Join(f.state, IntentFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	out = f.converge(t, &recorder{}, nil, leaves...)
	if !strings.Contains(out.Report.Blocked, "still issued by the old CA: kubelet-client-current") || out.Report.Phase != carotate.Finish {
		t.Errorf("finish with a certificate of the old CA: %+v", out.Report)
	}
	if !holdsCert(f.caCrt(t), &pkitest.CA{Cert: f.node.CA.Cert}) {
		t.Fatal("finish took the old CA out while a certificate here comes from it")
	}
}

// TestNoRestartBlocks: a phase that changed what components read is not
// done until they are restarted; with restarts off it is blocked, saying
// why, and done once they are on.
func TestNoRestartBlocks(t *testing.T) {
	f := newFixture(t, false)
	f.cfg.Agent.NoRestart = true
	r := &recorder{}
	for range 2 {
		out := f.converge(t, r, nil)
		if out.Report.Done || !strings.Contains(out.Report.Blocked, "restarts are off on this node (agent.noRestart)") || len(r.done) != 0 {
			t.Fatalf("noRestart: %+v, restarts %v", out.Report, r.done)
		}
	}
	f.cfg.Agent.NoRestart = false
	if out := f.converge(t, nil, nil); out.Report.Done || !strings.Contains(out.Report.Blocked, "cannot restart them") {
		t.Errorf("no restarter: %+v", out.Report)
	}
	if out := f.converge(t, r, nil); !out.Report.Done || len(r.done) == 0 {
		t.Errorf("restarts on again: %+v, restarts %v", out.Report, r.done)
	}
}

// TestSwitchFromFiles: the signer switch is decided from the files, not
// from a record: CA files restored to the old CA (from a backup) after
// the switch are switched again.
func TestSwitchFromFiles(t *testing.T) {
	f := newFixture(t, false)
	pkiDir := filepath.Join(f.dir, "etc/kubernetes/pki")
	oldCrt, _ := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
	oldKey, _ := os.ReadFile(filepath.Join(pkiDir, "ca.key"))
	f.cluster.Phase = carotate.Reissue
	if out := f.converge(t, &recorder{}, nil); !out.Report.Done {
		t.Fatalf("reissue: %+v", out.Report)
	}
	if err := os.WriteFile(filepath.Join(pkiDir, "ca.crt"), oldCrt, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pkiDir, "ca.key"), oldKey, 0o600); err != nil {
		t.Fatal(err)
	}
	// The intent as the previous code wrote it: the switch recorded.
	data, _ := os.ReadFile(filepath.Join(f.state, IntentFile))
	var rec map[string]any
	json.Unmarshal(data, &rec)
	rec["switched"], rec["done"], rec["phasesDone"] = true, false, []string{"prepare", "trust"}
	data, _ = json.Marshal(rec)
	os.WriteFile(filepath.Join(f.state, IntentFile), data, 0o600)
	f.converge(t, &recorder{}, nil)
	lc, err := rotate.LoadLocalCA(f.root, "ca", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key")
	if err != nil || !lc.Cert.Equal(f.next.Cert) {
		t.Fatalf("the restored old CA was not switched again: %v", err)
	}
}

// TestFinishKeepsStagedCopies: a daemon killed in finish after the
// bundles changed and before the staged CA files went still keeps a copy
// of them when it finishes.
func TestFinishKeepsStagedCopies(t *testing.T) {
	f := newFixture(t, false)
	r := &recorder{}
	for _, p := range []carotate.Phase{carotate.Trust, carotate.Reissue} {
		f.cluster.Phase = p
		if out := f.converge(t, r, nil); !out.Report.Done {
			t.Fatalf("%s: %+v", p, out.Report)
		}
	}
	key, _ := os.ReadFile(filepath.Join(f.dir, "etc/kubernetes/pki/ca.next.key"))
	f.cluster.Phase = carotate.Finish
	f.survive(t, r, panicAt("synced"))
	rotate.Repair(f.root, rotate.DefaultBackupDir)
	if out := f.converge(t, r, nil); !out.Report.Done {
		t.Fatalf("finish: %+v", out.Report)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "etc/kubernetes/pki/ca.next.key")); !os.IsNotExist(err) {
		t.Fatal("ca.next.key left behind")
	}
	keep := filepath.Join(f.dir, rotate.DefaultBackupDir, "ca-rotation-"+f.cluster.ID[:16], "files/etc/kubernetes/pki/ca.next.key")
	got, err := os.ReadFile(keep)
	if err != nil || string(got) != string(key) {
		t.Fatalf("no copy of the new CA key at %s: %v", keep, err)
	}
}

// TestShortLivedNewCA: a new CA that would expire before the leaves it
// signs is not trusted.
func TestShortLivedNewCA(t *testing.T) {
	f := newFixture(t, true)
	short, err := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(30*24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	f.cluster.NewCA, f.cluster.ID, f.cluster.Proof = pkitest.CertPEM(short.Cert), carotate.Fingerprint(short.Cert), prove(t, f.node.CA, short.Cert)
	f.keys = append(f.keys, short.Key)
	out := f.converge(t, &recorder{}, nil)
	if !strings.Contains(out.Report.Blocked, "less than") || holdsCert(f.caCrt(t), short) {
		t.Errorf("a new CA with a month left: %+v", out.Report)
	}
}
