package restart

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
)

// TestRestartConfirmedOnlyWhenItStaysUp: a component whose health URL
// answers once and then fails (the controller manager's /healthz before
// a controller fails to start, a crash loop) is not confirmed; one that
// stays up is.
func TestRestartConfirmedOnlyWhenItStaysUp(t *testing.T) {
	for _, tc := range []struct {
		name    string
		healthy int64 // answers 200 this many times, then 500; <0: always
		ok      bool
	}{{"crash loop", 2, false}, {"stays up", -1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				if c := n.Add(1); tc.healthy >= 0 && c > tc.healthy {
					w.WriteHeader(http.StatusInternalServerError)
				}
			}))
			defer srv.Close()
			cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nrestart: {timeout: 1s}\n"))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Restart.KubeletHealthz = srv.URL
			root, _ := pki.NewRoot(t.TempDir())
			var mu sync.Mutex
			var events []string
			log := logrus.New()
			log.SetOutput(os.Stderr)
			r := &Restarter{Root: root, Units: fakeUnits{&mu, &events}, Clock: clock.RealClock{}, Log: log}
			err = r.RestartComponents(context.Background(), cfg, []string{"kubelet"}, nil)["kubelet"]
			if (err == nil) != tc.ok {
				t.Fatalf("confirmed %v (%v), want %v; %d health checks", err == nil, err, tc.ok, n.Load())
			}
		})
	}
}
