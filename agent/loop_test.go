package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/rotate/pki/pkitest"
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

// asideRestarter restarts nothing but restores manifests as the real one.
type asideRestarter struct {
	gateRestarter
	*restart.Restarter
}

func (a asideRestarter) Restart(ctx context.Context, cfg *config.Config, r []restart.Renewed, ping func()) map[string]error {
	return a.gateRestarter.Restart(ctx, cfg, r, ping)
}

func (a asideRestarter) Check(ctx context.Context, cfg *config.Config, rep *inventory.Report, m map[string]time.Time) []api.ComponentStatus {
	return a.gateRestarter.Check(ctx, cfg, rep, m)
}

// TestStartPutsBackManifestLeftAside: a daemon killed mid-restart left
// kube-apiserver.yaml moved aside; the next start puts it back before
// its first scan.
func TestStartPutsBackManifestLeftAside(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	dir := t.TempDir()
	if _, err := (pkitest.Layout{Now: t0, LeafLifetime: 10 * 24 * time.Hour}).Write(dir); err != nil {
		t.Fatal(err)
	}
	man := filepath.Join(dir, "etc/kubernetes/manifests")
	os.MkdirAll(man, 0o755)
	if err := os.WriteFile(filepath.Join(man, ".certagent-kube-apiserver.yaml"), []byte("kind: Pod\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, dir, clk, "", func(o *Options) {
		o.Restarter = asideRestarter{Restarter: &restart.Restarter{Root: o.Root}}
	})
	defer h.stop()
	if b, err := os.ReadFile(filepath.Join(man, "kube-apiserver.yaml")); err != nil || string(b) != "kind: Pod\n" {
		t.Fatalf("kube-apiserver.yaml not put back: %v", err)
	}
	if h.events(logfields.MsgRepaired) == 0 {
		t.Error("no journal entry for the restored manifest")
	}
}
