package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/csrrenew"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/agent/schedule"
	"github.com/certagent/certagent/agent/state"
)

// renewDue renews due certificates in one transaction.
func (a *Agent) renewDue(ctx context.Context, due []*inventory.Certificate) {
	var names []string
	for _, c := range due {
		names = append(names, c.Name)
	}
	now := a.opts.Clock.Now()
	out, err := renewal.RenewOnce(ctx, a.opts.Root, a.cfg, api.RenewRequest{Names: names}, renewal.RenewOptions{LockTimeout: 30 * time.Second, Now: now, Hooks: a.opts.Hooks})
	var results []renewal.Result
	switch {
	case err != nil:
		for _, c := range due {
			method, _ := renewal.LocalMethod(c)
			results = append(results, renewal.Failed(c, method, err))
		}
	default:
		isDue := map[string]*inventory.Certificate{}
		for _, c := range due {
			isDue[c.Name] = c
		}
		for _, it := range out.Plan.Items {
			if c := isDue[it.Name]; c != nil && it.Err != nil {
				method, _ := renewal.LocalMethod(c)
				results = append(results, renewal.Failed(c, method, it.Err))
			}
		}
		for _, r := range out.Results {
			if isDue[r.Name()] != nil {
				results = append(results, r)
			}
		}
	}
	a.apply(ctx, results, now)
}

// renewRequested runs a renewal asked for over the API and applies it
// like the agent's own. Certificates renewed through a CSR become the
// agent's own CSR jobs (the loop never waits for an approval); the reply
// is sent when they end, with the lines `certagent renew` prints offline.
func (a *Agent) renewRequested(ctx context.Context, c renewCall) {
	now := a.opts.Clock.Now()
	out, err := renewal.RenewOnce(c.ctx, a.opts.Root, a.cfg, c.req, renewal.RenewOptions{LockTimeout: time.Minute, Hooks: a.opts.Hooks, Now: now, DeferCSR: true})
	if err != nil || len(out.CSR) == 0 {
		c.reply <- renewReply{out, err}
	} else {
		var waits []chan renewal.Result
		for _, cert := range out.CSR {
			ch := make(chan renewal.Result, 1)
			a.csrWaiters[cert.Name] = append(a.csrWaiters[cert.Name], ch)
			a.startCSR(ctx, cert, out.Report, time.Duration(c.req.TimeoutSeconds)*time.Second)
			waits = append(waits, ch)
		}
		// Lines are added here only; apply below reads Results.
		go func() {
			for _, ch := range waits {
				select {
				case r := <-ch:
					out.AddCSR(r)
				case <-c.ctx.Done():
					c.reply <- renewReply{nil, c.ctx.Err()}
					return
				}
			}
			c.reply <- renewReply{out, nil}
		}()
	}
	if err != nil || ctx.Err() != nil || c.req.DryRun {
		return
	}
	// The results are those of the transaction's own scan: no scan here.
	a.apply(ctx, out.Results, now)
}

// apply keeps the results of renewals, whichever way they were made: the
// state, the backoff of failures, the metrics, the journal line and the
// Event; then it restarts what uses the renewed certificates.
func (a *Agent) apply(ctx context.Context, results []renewal.Result, now time.Time) {
	var renewed []restart.Renewed
	for _, r := range results {
		c := r.Cert
		if r.Err != nil {
			st := a.state.Get(c.Name)
			if csrrenew.Unissuable(r.Err) {
				st.PendingCSR = "" // never issued: the next attempt makes a new request
			}
			a.fail(c, &st, r.Err, now, r.Method)
			continue
		}
		a.state.Put(c.Name, state.Cert{Serial: r.NewSerial, LastAttempt: now, LastRenewal: now,
			LastResult: fmt.Sprintf("renewed %s -> %s (%s)", r.OldSerial, r.NewSerial, r.Method)})
		a.opts.Metrics.Renewed(c.Name, r.Method, now)
		f := logfields.Cert(logfields.MsgRenewed, c, r.Method, "")
		f["SERIAL"], f["NEW_SERIAL"], f["NEW_NOT_AFTER"] = r.OldSerial, r.NewSerial, r.NotAfter.UTC().Format(time.RFC3339)
		if r.Backup != "" {
			f["BACKUP"] = r.Backup
		}
		if !r.Started.IsZero() { // a CSR job's, as every CSR job's line had
			f["CSR_REQUESTS"] = r.Requests
		}
		a.opts.Log.WithFields(f).Info("certificate renewed")
		a.opts.Reporter.Event(corev1.EventTypeNormal, "CertificateRenewed", fmt.Sprintf("certagent renewed %s %s: serial %s -> %s, valid until %s",
			c.Name, r.How, r.OldSerial, r.NewSerial, r.NotAfter.UTC().Format(time.RFC3339)))
		renewed = append(renewed, r.Renewed())
	}
	a.restart(ctx, renewed, now)
}

// restart reloads what uses renewed certificates; those whose component
// did not come up with them were rolled back and count as failed, with
// backoff, so the same thing is not tried again at once.
func (a *Agent) restart(ctx context.Context, renewed []restart.Renewed, now time.Time) {
	if len(renewed) == 0 || a.opts.Restarter == nil || a.cfg.Agent.NoRestart {
		return
	}
	for name, err := range a.opts.Restarter.Restart(ctx, a.cfg, renewed, a.ping) {
		for _, rn := range renewed {
			if rn.Cert.Name == name {
				st := a.state.Get(name)
				st.Serial = rn.Cert.Serial // the old certificate is back
				a.fail(rn.Cert, &st, err, now, "restart")
			}
		}
	}
}

// fail records a failed attempt, schedules the retry with jittered backoff
// and logs it; a node that cannot authenticate any more is logged critical.
func (a *Agent) fail(c *inventory.Certificate, st *state.Cert, err error, now time.Time, method string) {
	st.Failures++
	st.LastAttempt, st.LastError = now, err.Error()
	backoff := schedule.Backoff(st.Failures, a.cfg.Agent.RetryInitialDuration, a.cfg.Agent.RetryMaxDuration)
	st.NextAttempt = now.Add(schedule.Jitter(backoff, schedule.RetrySource(c.Serial, a.node, st.Failures)))
	st.LastResult = "failed: " + err.Error()
	a.state.Put(c.Name, *st)
	a.opts.Metrics.Failed(method)
	f := logfields.Cert(logfields.MsgRenewalFailed, c, method, err.Error())
	f["FAILURES"], f["NEXT_ATTEMPT"] = st.Failures, st.NextAttempt.UTC().Format(time.RFC3339)
	msg := "certificate renewal failed"
	if errors.Is(err, csrrenew.ErrNoCredential) {
		// Critical: the node is cut off from the cluster. The recovery
		// steps go in MESSAGE too, which `journalctl` shows by default.
		f["PRIORITY"] = "2"
		msg += ": " + err.Error()
	}
	a.opts.Log.WithFields(f).Error(msg)
	a.opts.Reporter.Event(corev1.EventTypeWarning, "CertificateRenewalFailed", fmt.Sprintf("certagent could not renew %s (%s, %d failures, next try %s): %v", c.Name, method, st.Failures, st.NextAttempt.UTC().Format(time.RFC3339), err))
}
