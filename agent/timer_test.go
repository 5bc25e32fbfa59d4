package agent

import (
	"context"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/restart"
)

// gateRestarter holds the loop inside a pass (in Check) until released.
type gateRestarter struct {
	entered chan struct{}
	release chan struct{}
}

func (g *gateRestarter) Restart(context.Context, *config.Config, []restart.Renewed, func()) map[string]error {
	return nil
}

func (g *gateRestarter) Check(context.Context, *config.Config, *inventory.Report, map[string]time.Time) []api.ComponentStatus {
	select {
	case g.entered <- struct{}{}:
		<-g.release
	default: // not armed: pass straight through
	}
	return nil
}

// TestDeadlinePassedDuringAPass: when the clock passes the next deadline
// while a pass runs, the loop must run the timer pass at once instead of
// arming a timer for a time already gone (which a clock may never fire).
func TestDeadlinePassedDuringAPass(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	g := &gateRestarter{entered: make(chan struct{}), release: make(chan struct{})}
	// The harness's leaves live ten days from t0: due at 70-90 % of that.
	h := newHarnessWith(t, "", clk, "", func(o *Options) { o.Restarter = g })
	defer h.stop()
	scans := h.status().Daemon.Scans

	go h.a.Rescan("test") // a pass that stops in Check
	<-g.entered
	// Every renewal deadline passes while the pass runs (not yet expiry).
	clk.Step(9*24*time.Hour + 12*time.Hour)
	close(g.release)

	h.waitFor("a pass for the deadlines gone by", func(s *api.Status) bool { return s.Daemon.Scans >= scans+2 })
}
