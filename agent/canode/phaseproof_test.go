package canode

import (
	"crypto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/certagent/certagent/agent/carotate"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestPhaseNeedsProof: a node works on a phase only when the new CA's
// key signed it for this rotation (phaseProof). A phase moved on by a
// ConfigMap writer without that key, a proof of another phase or of
// another rotation, or none (a ConfigMap of an older certagent), gets
// nothing done: blocked, naming phaseProof, and no bundle changes.
func TestPhaseNeedsProof(t *testing.T) {
	f := newFixture(t, true)
	f.cluster.Phase = carotate.Prepare
	if out := f.converge(t, &recorder{}, nil); !out.Report.Done {
		t.Fatalf("prepare, signed: %+v", out.Report)
	}
	prepareProof := f.cluster.PhaseProof
	// Another rotation of the same old CA, whose proof the command signed.
	other, otherKey, err := ca.NewCA(f.node.CA.Cert, f.node.CA.Key, now)
	if err != nil {
		t.Fatal(err)
	}
	otherCluster := *f.cluster
	otherCluster.Phase, otherCluster.ID, otherCluster.NewCA = carotate.Trust, carotate.Fingerprint(other), pkitest.CertPEM(other)
	if err := otherCluster.SignPhase(otherKey); err != nil {
		t.Fatal(err)
	}
	f.keys = nil // from here the phase is moved by someone without the key
	for _, tc := range []struct{ name, proof, want string }{
		{"moved without the key", prepareProof, "phaseProof is not the new CA key's signature of rotation " + f.cluster.ID[:16] + " of ca at phase trust"},
		{"another rotation's proof", otherCluster.PhaseProof, "phaseProof is not the new CA key's signature"},
		{"none", "", "no phaseProof"},
		{"not base64", "%%%", "phaseProof is not base64"},
	} {
		f.cluster.Phase, f.cluster.PhaseProof = carotate.Trust, tc.proof
		out := f.converge(t, &recorder{}, nil)
		if out.Report.Done || !strings.Contains(out.Report.Blocked, tc.want) || out.Status.State != "blocked" {
			t.Errorf("%s: %+v", tc.name, out.Report)
		}
		if holdsCert(f.caCrt(t), f.next) {
			t.Fatalf("%s: ca.crt trusts the new CA in a phase the operator did not publish", tc.name)
		}
	}
	// The operator's command signs trust: the node goes on.
	f.keys = []crypto.Signer{f.next.Key}
	out := f.converge(t, &recorder{}, nil)
	if !out.Report.Done || !holdsCert(f.caCrt(t), f.next) {
		t.Errorf("trust, signed by the command: %+v", out.Report)
	}
	// A phase done here asks for nothing: without its proof (a finished
	// rotation's ConfigMap of an older certagent) it is no block.
	f.keys, f.cluster.PhaseProof = nil, ""
	if out := f.converge(t, &recorder{}, nil); !out.Report.Done || out.Report.Blocked != "" {
		t.Errorf("trust done here, no proof: %+v", out.Report)
	}
}

// TestOtherRotationWaits: a node in the middle of a phase of rotation A
// (restarts pending) takes no rotation B: blocked, naming A and the
// record to clear, and A's record (its pending restarts) is kept. Once
// A's phase is done here, or the operator removed the record, B goes on.
func TestOtherRotationWaits(t *testing.T) {
	f := newFixture(t, true)
	a := &Intent{ID: strings.Repeat("a", 64), CA: "ca", Phase: carotate.Reissue, Since: now, Pending: []string{"kubelet"},
		PhasesDone: []carotate.Phase{carotate.Prepare, carotate.Trust}}
	if err := a.save(f.state); err != nil {
		t.Fatal(err)
	}
	out := f.converge(t, &recorder{}, nil)
	if out.Report.Done || !strings.Contains(out.Report.Blocked, "in the middle of phase reissue of another rotation of ca (id aaaaaaaaaaaaaaaa; restarts pending: kubelet)") ||
		!strings.Contains(out.Report.Blocked, filepath.Join(f.state, IntentFile)) {
		t.Fatalf("rotation B over A mid-phase: %+v", out.Report)
	}
	it, err := loadIntent(f.state)
	if err != nil || it.ID != a.ID || !slices.Equal(it.Pending, []string{"kubelet"}) {
		t.Fatalf("A's record replaced: %+v %v", it, err)
	}
	if holdsCert(f.caCrt(t), f.next) {
		t.Fatal("B's new CA trusted while A was mid-phase")
	}
	// A done here (nothing pending): B may replace it.
	a.Done, a.Pending = true, nil
	if err := a.save(f.state); err != nil {
		t.Fatal(err)
	}
	if out := f.converge(t, &recorder{}, nil); !out.Report.Done {
		t.Fatalf("B after A's phase was done: %+v", out.Report)
	}
	// The record removed by the operator.
	g := newFixture(t, true)
	a.Done, a.Pending = false, []string{"kubelet"}
	if err := a.save(g.state); err != nil {
		t.Fatal(err)
	}
	if out := g.converge(t, &recorder{}, nil); out.Report.Blocked == "" {
		t.Fatalf("B over A mid-phase: %+v", out.Report)
	}
	if err := os.Remove(filepath.Join(g.state, IntentFile)); err != nil {
		t.Fatal(err)
	}
	if out := g.converge(t, &recorder{}, nil); !out.Report.Done {
		t.Fatalf("B after the record was removed: %+v", out.Report)
	}
}

// TestFinishUnreadableLeafBlocks: a certificate that cannot be read in
// finish (it may come from the old CA) blocks the phase, naming it, and
// the old CA stays in the bundles.
func TestFinishUnreadableLeafBlocks(t *testing.T) {
	f := newFixture(t, true)
	if out := f.converge(t, &recorder{}, nil); !out.Report.Done {
		t.Fatalf("trust: %+v", out.Report)
	}
	it := &Intent{ID: f.cluster.ID, CA: "ca", Phase: carotate.Reissue, Done: true, OldCA: pkitest.CertPEM(f.node.CA.Cert),
		PhasesDone: []carotate.Phase{carotate.Prepare, carotate.Trust, carotate.Reissue}}
	if err := it.save(f.state); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "etc/webhook.crt"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.cluster.Phase = carotate.Finish
	out := f.converge(t, &recorder{}, nil, Leaf{Leaf: ca.Leaf{Name: "webhook", Path: "/etc/webhook.crt"}})
	if out.Report.Done || out.Status.State != "blocked" || !strings.Contains(out.Report.Blocked, "cannot tell whether webhook: ") {
		t.Fatalf("finish with an unreadable certificate: %+v", out.Report)
	}
	if !holdsCert(f.caCrt(t), f.node.CA) {
		t.Fatal("the old CA left ca.crt while a certificate here could not be read")
	}
}

// TestUnsignedPhaseSteersNothing: the CA being replaced reaches the
// node's CSR renewals (Outcome.Retiring: certificates it issues are
// thrown away) only from a reissue phase the command signed; a ConfigMap
// moved to reissue without the key (oldCA is public) must not make every
// node discard the live CA's certificates.
func TestUnsignedPhaseSteersNothing(t *testing.T) {
	f := newFixture(t, true)
	for _, p := range []carotate.Phase{carotate.Prepare, carotate.Trust} {
		f.cluster.Phase = p
		if out := f.converge(t, &recorder{}, nil); !out.Report.Done || out.Retiring != nil {
			t.Fatalf("%s: %+v, retiring %v", p, out.Report, out.Retiring != nil)
		}
	}
	keys := f.keys
	f.keys = nil
	f.cluster.Phase = carotate.Reissue // the proof stays trust's
	if out := f.converge(t, &recorder{}, nil); out.Report.Blocked == "" || out.Retiring != nil {
		t.Fatalf("reissue unsigned: %+v, retiring %v", out.Report, out.Retiring != nil)
	}
	f.keys = keys
	if out := f.converge(t, &recorder{}, nil); out.Retiring == nil || !out.Retiring.Equal(f.node.CA.Cert) {
		t.Fatalf("reissue signed: %+v, retiring %v", out.Report, out.Retiring)
	}
}

// TestUpgradeMidPhase: a node whose record says it began a phase goes on
// with it under a ConfigMap without phaseProof (written by an older
// certagent): its pending restarts run; the next phase needs the proof.
func TestUpgradeMidPhase(t *testing.T) {
	f := newFixture(t, true)
	f.cluster.Phase = carotate.Prepare
	if out := f.converge(t, &recorder{}, nil); !out.Report.Done {
		t.Fatalf("prepare: %+v", out.Report)
	}
	it, err := loadIntent(f.state)
	if err != nil {
		t.Fatal(err)
	}
	// Killed in trust after its edits, before the kubelet's restart.
	it.Phase, it.Since, it.Done, it.DoneAt, it.Pending = carotate.Trust, now, false, nil, []string{"kubelet"}
	if err := it.save(f.state); err != nil {
		t.Fatal(err)
	}
	f.keys, f.cluster.Phase, f.cluster.PhaseProof = nil, carotate.Trust, ""
	r := &recorder{}
	if out := f.converge(t, r, nil); !out.Report.Done || !slices.Contains(r.done, "kubelet") {
		t.Fatalf("trust begun here, no proof: %+v, restarted %v", out.Report, r.done)
	}
	f.cluster.Phase = carotate.Reissue
	if out := f.converge(t, &recorder{}, nil); !strings.Contains(out.Report.Blocked, "no phaseProof") {
		t.Fatalf("reissue, not begun here, no proof: %+v", out.Report)
	}
}

// TestFinishedRotationNotReplayed: once rotation A is done here and
// rotation B has begun, A's ConfigMap put back (every phase of it validly
// signed) is refused, and B's record stays.
func TestFinishedRotationNotReplayed(t *testing.T) {
	f := newFixture(t, true)
	for _, p := range carotate.Phases {
		f.cluster.Phase = p
		if out := f.converge(t, &recorder{}, nil); !out.Report.Done {
			t.Fatalf("A %s: %+v", p, out.Report)
		}
	}
	a := *f.cluster
	// B: the same CA rotated again, from A's new CA.
	next, key, err := ca.NewCA(f.next.Cert, f.next.Key, now)
	if err != nil {
		t.Fatal(err)
	}
	b := *f.cluster
	b.ID, b.OldCA, b.NewCA, b.Phase = carotate.Fingerprint(next), pkitest.CertPEM(f.next.Cert), pkitest.CertPEM(next), carotate.Prepare
	if b.Proof, err = ca.Prove(f.next.Cert, f.next.Key, next, now); err != nil {
		t.Fatal(err)
	}
	if err := b.SignPhase(key); err != nil {
		t.Fatal(err)
	}
	f.keys, f.cluster = nil, &b
	if out := f.converge(t, &recorder{}, nil); !out.Report.Done {
		t.Fatalf("B prepare: %+v", out.Report)
	}
	f.cluster = &a
	if out := f.converge(t, &recorder{}, nil); !strings.Contains(out.Report.Blocked, "finished on this node already") {
		t.Fatalf("A put back: %+v", out.Report)
	}
	if it, err := loadIntent(f.state); err != nil || it.ID != b.ID || !slices.Contains(it.PhasesDone, carotate.Prepare) {
		t.Fatalf("B's record: %+v %v", it, err)
	}
}
