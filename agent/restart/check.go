package restart

import (
	"context"
	"sync"
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
)

// Check compares what every endpoint serves with the disk. mismatchSince
// keeps, per endpoint, when a mismatch was first seen; one older than
// staleAfter is "stale".
func (r *Restarter) Check(ctx context.Context, cfg *config.Config, rep *inventory.Report, mismatchSince map[string]time.Time) []api.ComponentStatus {
	disk := map[string]string{}
	for _, c := range rep.Certificates {
		disk[c.Name] = c.Serial
	}
	if _, ok := disk["kubelet-serving"]; !ok {
		disk["kubelet-serving"] = disk["kubelet.crt"]
	}
	now := r.Clock.Now()
	comps := components(cfg)
	// Dial every endpoint at once: a black-holed one costs its timeout once.
	type probe struct {
		serial string
		err    error
	}
	probes := map[string]*probe{}
	var wg sync.WaitGroup
	var pmu sync.Mutex
	for _, comp := range comps {
		for _, s := range comp.Served {
			if disk[s.Cert] == "" || probes[s.Address] != nil {
				continue
			}
			p := &probe{}
			probes[s.Address] = p
			client := r.clientCert(cfg, s.Client)
			wg.Add(1)
			go func(addr string) {
				defer wg.Done()
				serial, err := servedSerial(ctx, addr, client)
				pmu.Lock()
				p.serial, p.err = serial, err
				pmu.Unlock()
			}(s.Address)
		}
	}
	wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []api.ComponentStatus
	for _, comp := range comps {
		cs := api.ComponentStatus{Name: comp.Name}
		if s := r.status[comp.Name]; s != nil {
			cs.LastRestart, cs.LastResult, cs.LastAction = s.LastRestart, s.LastResult, s.LastAction
		}
		for _, s := range comp.Served {
			want := disk[s.Cert]
			if want == "" {
				continue
			}
			ss := api.ServedStatus{Address: s.Address, Certificate: s.Cert, DiskSerial: want}
			got, err := probes[s.Address].serial, probes[s.Address].err
			switch {
			case err != nil:
				ss.State, ss.Error = "not-serving", err.Error()
				delete(mismatchSince, s.Address)
			case got == want:
				ss.State, ss.ServedSerial = "match", got
				delete(mismatchSince, s.Address)
			default:
				ss.ServedSerial = got
				since, seen := mismatchSince[s.Address]
				if !seen {
					since = now
					mismatchSince[s.Address] = now
				}
				ss.State = "mismatch"
				if now.Sub(since) >= cfg.Restart.StaleAfterDuration {
					ss.State = "stale"
				}
			}
			cs.Served = append(cs.Served, ss)
		}
		if cs.LastRestart != nil || len(cs.Served) > 0 {
			out = append(out, cs)
		}
	}
	return out
}

// coordStatus is a Gate that says what it waits for (coord.Coordinator).
type coordStatus interface {
	Status() *api.CoordinationStatus
}

// Coordination says what a static pod restart waits for (nil: nothing).
// It does not take the restart lock, so it answers during a restart.
func (r *Restarter) Coordination() *api.CoordinationStatus {
	if s, ok := r.Gate.(coordStatus); ok {
		return s.Status()
	}
	return nil
}
