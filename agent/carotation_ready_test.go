package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/config"
)

// blockingRestarter's restarts for a rotation wait until released (or
// the daemon stops); entered says one began.
type blockingRestarter struct {
	rotationRestarter
	release, entered chan struct{}
}

func (b *blockingRestarter) RestartComponents(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return b.rotationRestarter.RestartComponents(ctx, cfg, names, ping)
}

// TestRotationRestartsAfterReady: a daemon that starts in the middle of
// a rotation says READY before the rotation's restarts (which take
// minutes on a control plane: a unit's start timeout, and the E2E's wait
// for READY, ran out), and converges at once after it.
func TestRotationRestartsAfterReady(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	dir := t.TempDir()
	_, next, cluster := controlPlane(t, dir)
	cluster.Phase = carotate.Trust
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rs := &blockingRestarter{rotationRestarter: rotationRestarter{onSigner: func() {}}, release: release, entered: make(chan struct{}, 1)}
	h := newHarnessWith(t, dir, clk, "", func(o *Options) {
		o.CARotation, o.Restarter = &fakeRotation{c: cluster, key: next.Key}, rs
	})
	defer h.stop()
	ready := func() bool {
		return slices.ContainsFunc(h.notes.all(), func(s string) bool { return strings.HasPrefix(s, "READY") })
	}
	for deadline := time.Now().Add(10 * time.Second); !ready(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no READY while the rotation's restarts wait: %q", h.notes.all())
		}
	}
	select {
	case <-rs.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the rotation's restarts did not begin after READY")
	}
}

// ConfirmRestarted blocks like RestartComponents.
func (b *blockingRestarter) ConfirmRestarted(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error {
	return b.RestartComponents(ctx, cfg, names, ping)
}

// ReloadTrust blocks like RestartComponents.
func (b *blockingRestarter) ReloadTrust(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error {
	return b.RestartComponents(ctx, cfg, names, ping)
}
