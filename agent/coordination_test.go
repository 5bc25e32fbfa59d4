package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/restart"
)

// waitingRestarter waits in Restart, pinging, until released, and says
// meanwhile that another node holds the restart Lease.
type waitingRestarter struct {
	mu      sync.Mutex
	waiting *api.CoordinationStatus
	release chan struct{}
}

func (w *waitingRestarter) Restart(_ context.Context, _ *config.Config, _ []restart.Renewed, ping func()) map[string]error {
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w.mu.Lock()
	w.waiting = &api.CoordinationStatus{Component: "kube-apiserver", State: "waiting", Holder: "node2", HolderSince: &since, Since: since}
	w.mu.Unlock()
	for {
		ping()
		select {
		case <-w.release:
			w.mu.Lock()
			w.waiting = nil
			w.mu.Unlock()
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (w *waitingRestarter) Check(context.Context, *config.Config, *inventory.Report, map[string]time.Time) []api.ComponentStatus {
	return nil
}

func (w *waitingRestarter) Coordination() *api.CoordinationStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.waiting
}

// TestStatusWhileRestartWaitsItsTurn: while a restart waits for the
// restart Lease the loop runs no pass, yet status says who holds it.
func TestStatusWhileRestartWaitsItsTurn(t *testing.T) {
	w := &waitingRestarter{release: make(chan struct{})}
	h := newHarnessWith(t, "", clock.RealClock{}, "", func(o *Options) { o.Restarter = w })
	defer h.stop()
	var once sync.Once
	free := func() { once.Do(func() { close(w.release) }) }
	defer free() // before stop: a failed wait must not leave the loop waiting
	done := make(chan error, 1)
	go func() {
		_, err := h.a.Renew(context.Background(), api.RenewRequest{Names: []string{"apiserver"}, Force: true})
		done <- err
	}()
	h.waitFor("the coordination in status", func(s *api.Status) bool {
		c := s.Daemon.Coordination
		return c != nil && c.Holder == "node2" && c.State == "waiting" && c.HolderSince != nil
	})
	free()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h.waitFor("the coordination gone", func(s *api.Status) bool { return s.Daemon.Coordination == nil })
}
