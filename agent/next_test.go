package agent

import (
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
)

// TestNoPassLoopWhileACSRWaits: a CSR job in progress (status "wait",
// at now) is no deadline for the next pass (its end wakes the loop): a
// worker whose CSR the cluster does not answer ran ~108 passes a second.
// The next pass is the resync, or the next action of another
// certificate.
func TestNoPassLoopWhileACSRWaits(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	a := &Agent{opts: Options{Clock: testingclock.NewFakeClock(now)}, cfg: config.Default()}
	at := now
	statuses := []*api.RenewalStatus{{State: api.StateRenewing, NextAction: "wait", NextActionAt: &at}, nil}
	if got := a.next(statuses); got.Sub(now) != a.cfg.Agent.ResyncDuration {
		t.Errorf("next pass %s after now with a CSR waiting, want the resync (%s)", got.Sub(now), a.cfg.Agent.ResyncDuration)
	}
	later := now.Add(time.Minute)
	statuses[1] = &api.RenewalStatus{NextAction: "renew", NextActionAt: &later}
	if got := a.next(statuses); !got.Equal(later) {
		t.Errorf("next pass at %s, want another certificate's renewal at %s", got, later)
	}
}
