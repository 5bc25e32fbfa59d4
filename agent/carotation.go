package agent

import (
	"context"
	"crypto/x509"
	"maps"
	"slices"
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/canode"
	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/inventory"
)

// While a rotation needs this node, the agent reads the ConfigMap this
// often; otherwise once per resync. A certificate re-requested because it
// still comes from the old CA waits caRetryMin, doubling up to caRetryMax.
const (
	caActivePoll = 10 * time.Second
	caRetryMin   = 10 * time.Second
	caRetryMax   = 5 * time.Minute
)

// caRotation keeps the loop's part of a CA rotation.
type caRotation struct {
	node    *canode.Node
	pollAt  time.Time // the next read of the ConfigMap
	cluster *carotate.Cluster
	// tries are the certificates renewed for the rotation: how often, and
	// when the next attempt may run.
	tries  map[string]caTry
	status *api.CARotationStatus
	active bool // the node is not done with the cluster's phase
	// retiringCA is the node's last verified view of the CA being
	// replaced (canode.Outcome.Retiring).
	retiringCA *x509.Certificate
}

type caTry struct {
	n    int
	next time.Time
}

// conditionSetter sets a Node condition of another type than
// certagent's health (report.Reporter).
type conditionSetter interface {
	SetCondition(typ string, status bool, reason, message string)
}

// rotateCA reads the rotation when due, converges the node, and returns
// the certificates to renew now because their issuer is being replaced.
// Without a rotation it costs at most one read of the ConfigMap per resync.
func (a *Agent) rotateCA(ctx context.Context, rep *inventory.Report, now time.Time) map[string]string {
	if a.opts.CARotation == nil {
		return nil
	}
	r := &a.ca
	if !a.ready {
		// Not in the start pass: its restarts would hold READY back
		// (past a unit's start timeout); the first pass after READY, at
		// once, converges.
		r.active, r.pollAt = true, time.Time{}
		return nil
	}
	if r.node == nil {
		r.node = &canode.Node{Root: a.opts.Root, StateDir: a.opts.StateDir, Log: a.opts.Log, Hooks: a.opts.Hooks}
		if rs, ok := a.opts.Restarter.(canode.Restarter); ok {
			r.node.Restarter = rs
		}
		r.tries = map[string]caTry{}
	}
	if !now.Before(r.pollAt) {
		c, err := a.opts.CARotation.Rotation(ctx)
		if err != nil {
			// The rotation last read stands until the API answers again.
			a.opts.Log.WithField("REASON", err.Error()).Debug("CA rotation: cannot read the ConfigMap")
		} else {
			r.cluster = c
		}
		r.pollAt = now.Add(a.cfg.Agent.ResyncDuration)
	}
	if r.cluster == nil {
		r.status, r.active, r.retiringCA = nil, false, nil
		return nil
	}
	busy := slices.Sorted(maps.Keys(a.csrJobs))
	out := r.node.Converge(ctx, canode.Input{Cluster: r.cluster, Config: a.cfg, Leaves: canode.LeavesOf(rep), Now: now, Ping: a.ping, Busy: busy})
	r.status, r.retiringCA = out.Status, out.Retiring
	r.active = !out.Report.Done
	if r.active {
		r.pollAt = minTime(r.pollAt, now.Add(caActivePoll))
	}
	if cs, ok := a.opts.Reporter.(conditionSetter); ok {
		status, reason, message := out.Report.Condition()
		cs.SetCondition(carotate.ConditionType, status, reason, message)
	}
	return r.force(out.Renew, now)
}

// force picks, of the certificates to renew for the rotation, those whose
// backoff has passed: a certificate asked for again (a CSR answered from
// the old CA) waits caRetryMin, doubling up to caRetryMax.
func (r *caRotation) force(names []string, now time.Time) map[string]string {
	out := map[string]string{}
	keep := map[string]caTry{}
	for _, name := range names {
		t := r.tries[name]
		if !now.Before(t.next) {
			out[name] = canode.RenewReason
			wait := caRetryMin << min(t.n, 5)
			if wait > caRetryMax {
				wait = caRetryMax
			}
			t = caTry{n: t.n + 1, next: now.Add(wait)}
		}
		keep[name] = t
	}
	r.tries = keep
	return out
}

// retiring is the CA a rotation replaces, from its reissue phase until
// it is done (nil otherwise): a certificate it issues then is of no use.
// It is the node's verified view (canode.Outcome.Retiring), never the
// ConfigMap's word alone.
func (r *caRotation) retiring() *x509.Certificate {
	if r.cluster == nil {
		return nil
	}
	return r.retiringCA
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
