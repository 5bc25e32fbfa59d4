package canode

import (
	"slices"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/config"
	ca "github.com/certagent/certagent/rotate/carotate"
)

// confirming is a recorder whose Restarter says it restarted some
// components (ok) after the renewals.
type confirming struct {
	recorder
	restarted []string
}

func (c *confirming) Results(*config.Config) []api.ComponentStatus {
	at := now.Add(time.Second)
	var out []api.ComponentStatus
	for _, n := range c.restarted {
		out = append(out, api.ComponentStatus{Name: n, LastRestart: &at, LastResult: "ok"})
	}
	return out
}

// TestReissueRestartsSurviveKill: the restarts that reissue's renewals
// need are in the intent record before the renewals: a daemon killed
// after a renewal and before its restart restarts its user when it
// starts again; one whose renewal restart was confirmed does not restart
// it twice.
func TestReissueRestartsSurviveKill(t *testing.T) {
	apiserver := Leaf{Leaf: ca.Leaf{Name: "apiserver", Path: "/etc/kubernetes/pki/apiserver.crt"}}
	for _, tc := range []struct {
		name string
		r    Restarter
		want bool // kube-apiserver restarted by the phase
	}{{"killed", &recorder{}, true}, {"renewal restarted it", &confirming{restarted: []string{"kube-apiserver"}}, false}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, false)
			if out := f.converge(t, &recorder{}, nil); !out.Report.Done {
				t.Fatalf("trust: %+v", out.Report)
			}
			f.cluster.Phase = carotate.Reissue
			out := f.converge(t, &recorder{}, nil, apiserver)
			if out.Report.Done || !slices.Equal(out.Renew, []string{"apiserver"}) {
				t.Fatalf("reissue: %+v", out)
			}
			// The renewal is on disk (the scan finds nothing of the old
			// CA); its restart is known only from the record.
			out = f.converge(t, tc.r, nil)
			var done []string
			switch r := tc.r.(type) {
			case *recorder:
				done = r.done
			case *confirming:
				done = r.done
			}
			if !out.Report.Done || slices.Contains(done, "kube-apiserver") != tc.want || !slices.Contains(done, "kube-controller-manager") {
				t.Errorf("after the renewal: done %v, restarts %v (kube-apiserver wanted: %v)", out.Report.Done, done, tc.want)
			}
		})
	}
}
