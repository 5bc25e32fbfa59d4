package carotate

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestPhasesSigned: every phase the command publishes carries a proof
// the new CA's key signed for it; a rerun on a node without that key is
// refused before it writes anything.
func TestPhasesSigned(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true))
	r := f.rotator(nil)
	r.Until = Trust
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := f.state()
	if err := c.CheckPhase(f.newCA); err != nil || c.Phase != Trust {
		t.Fatalf("phase %s: %v", c.Phase, err)
	}
	before := f.writes
	r = f.rotator(nil)
	r.NewKey = func(*x509.Certificate) (crypto.Signer, error) { return nil, errors.New("no .next.key here") }
	if _, err := r.Run(context.Background()); !IsRefused(err) || !strings.Contains(err.Error(), "the new CA's key, which signs each phase (phaseProof), is not on this node (no .next.key here)") {
		t.Fatalf("a rerun without the new key: %v", err)
	}
	if f.writes != before {
		t.Errorf("%d writes by a refused rerun", f.writes-before)
	}
	if _, err := f.rotator(nil).Run(context.Background()); err != nil || f.state().Phase != Done || f.state().CheckPhase(f.newCA) != nil {
		t.Fatalf("to the end: %v, phase %s", err, f.state().Phase)
	}
}

// TestDoneWaitsForNodes: the command reports the rotation done only once
// every node is done with the done phase too (its signer flag put back),
// and a rerun after a kill in that wait waits again.
func TestDoneWaitsForNodes(t *testing.T) {
	f, out, done := startHeld(t, Done)
	select {
	case err := <-done:
		t.Fatalf("the command ended (%v) before w1 was done with done:\n%s", err, out.String())
	default:
	}
	c := f.state()
	if c.Over() || !slices.Equal(c.NodesDone, []string{"cp1"}) {
		t.Fatalf("over %v, nodesDone %v; want not over, [cp1]", c.Over(), c.NodesDone)
	}
	f.report("w1", NodeReport{ID: c.ID, Phase: Done, Done: true})
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
	if c := f.state(); !c.Over() || !strings.Contains(out.String(), "phase done done on every node") {
		t.Fatalf("over %v, phaseTimes %v:\n%s", c.Over(), c.PhaseTimes, out.String())
	}
}

// TestRerunWaitsForRecordedPhase: a rerun waits for the nodes even when
// phaseTimes records the phase as done (another ConfigMap writer may add
// a line; phaseTimes is not signed), and records it only once.
func TestRerunWaitsForRecordedPhase(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true), node("w1", false))
	f.held["w1"] = Trust
	r := f.rotator(nil)
	r.Until = Prepare
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The command moved on to trust, then was killed; a line for trust
	// was added by someone else.
	c := f.state()
	c.Phase = Trust
	if err := c.SignPhase(f.newKey); err != nil {
		t.Fatal(err)
	}
	c.PhaseTimes = append(c.PhaseTimes, PhaseTime{Phase: Trust, Start: t0, End: t0}.Line())
	f.setData(c.Data())
	done := run(f.rotator(nil))
	f.waitWatch(Trust)
	if got := f.state(); got.Phase != Trust {
		t.Fatalf("the rerun went on to %s while w1 is not done with trust", got.Phase)
	}
	f.report("w1", NodeReport{ID: c.ID, Phase: Trust, Done: true})
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
	if got := f.state(); !got.Over() || len(got.PhaseTimes) != 5 {
		t.Fatalf("phase %s, phaseTimes %v", got.Phase, got.PhaseTimes)
	}
}
