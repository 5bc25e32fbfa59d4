package canode

import (
	"crypto"
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
}
