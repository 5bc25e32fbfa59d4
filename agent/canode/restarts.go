package canode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
)

// restart restarts the pending components, and forgets each confirmed.
func (s *step) restart(ctx context.Context) {
	cfg := s.in.Config
	switch {
	case cfg.Agent.NoRestart:
		s.problems = append(s.problems, fmt.Sprintf("CA rotation restarts components (%s); restarts are off on this node (agent.noRestart): turn them on, the phase is done only once they are restarted",
			strings.Join(s.it.Pending, " ")))
		return
	case s.n.Restarter == nil:
		s.problems = append(s.problems, fmt.Sprintf("CA rotation restarts components (%s); this node's daemon cannot restart them", strings.Join(s.it.Pending, " ")))
		return
	}
	// One at a time, in restart order, each recorded once confirmed: a
	// daemon killed meanwhile restarts only what was not.
	for _, name := range restartOrder(s.it.Pending) {
		if s.restartedSince(name) {
			s.it.confirmed(name)
			s.save()
			continue
		}
		restart := s.n.Restarter.RestartComponents
		switch {
		case slices.Contains(s.it.ReloadOnly, name):
			restart = s.n.Restarter.ReloadTrust
		case slices.Contains(s.it.ManifestChanged, name):
			restart = s.n.Restarter.ConfirmRestarted
		}
		err, ok := restart(ctx, cfg, []string{name}, s.in.Ping)[name]
		if !ok || err != nil {
			if err == nil {
				err = errors.New("not restarted")
			}
			s.problems = append(s.problems, fmt.Sprintf("restart %s: %v", name, err))
			continue
		}
		s.it.confirmed(name)
		s.save()
	}
}

// Results reports the restarts a Restarter confirmed
// (restart.Restarter.Results).
type Results interface {
	Results(cfg *config.Config) []api.ComponentStatus
}

// restartedSince: the component was pending because of renewals, and
// this daemon's Restarter has confirmed a restart of it since (the
// renewal's own): it is not restarted again.
func (s *step) restartedSince(name string) bool {
	at, ok := s.it.PendingAt[name]
	rs, isR := s.n.Restarter.(Results)
	if !ok || !isR {
		return false
	}
	for _, c := range rs.Results(s.in.Config) {
		if c.Name == name && c.LastRestart != nil && !c.LastRestart.Before(at) && c.LastResult == "ok" {
			return true
		}
	}
	return false
}

// restartOrder sorts components in the order they are restarted.
func restartOrder(names []string) []string {
	rank := func(n string) int {
		for i, sp := range staticPods {
			if sp[0] == n {
				return i
			}
		}
		if n == "kubelet" {
			return len(staticPods)
		}
		return len(staticPods) + 1
	}
	out := slices.Clone(names)
	slices.SortStableFunc(out, func(a, b string) int { return rank(a) - rank(b) })
	return out
}
