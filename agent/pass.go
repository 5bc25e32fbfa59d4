package agent

import (
	"context"
	"strings"

	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/certagent/certagent/rotate"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/schedule"
	"github.com/certagent/certagent/agent/state"
)

// pass is one look at the node: scan, decide, renew what is due, publish.
// Every decision is recomputed from the wall clock.
func (a *Agent) pass(ctx context.Context, reason string) {
	start := a.opts.Clock.Now()
	rep, err := inventory.Scan(ctx, inventory.Options{Root: a.opts.Root, Config: a.cfg, Now: start})
	if err != nil {
		return // cancelled
	}
	a.watch.Set(a.watchDirs(rep))
	a.opts.Metrics.scanned(rep, a.opts.Clock.Since(start))
	statuses, due := a.decide(rep, start)
	for _, c := range a.dueCSR {
		a.startCSR(ctx, c, rep, 0)
	}
	a.dueCSR = nil
	if len(due) > 0 && ctx.Err() == nil {
		a.publish(a.build(rep, statuses, reason, start)) // status shows "renewing" meanwhile
		a.renewDue(ctx, due)
		if rep2, err := inventory.Scan(ctx, inventory.Options{Root: a.opts.Root, Config: a.cfg, Now: a.opts.Clock.Now()}); err == nil {
			rep = rep2
			a.opts.Metrics.scanned(rep, 0)
			statuses, _ = a.decide(rep, a.opts.Clock.Now())
			a.dueCSR = nil
		}
	}
	keep := map[string]bool{}
	for _, c := range rep.Certificates {
		keep[c.Name] = true
	}
	a.state.Forget(keep)
	if err := a.state.Save(); err != nil {
		a.opts.Log.WithField("REASON", err.Error()).Error("saving state failed")
	}
	if a.opts.Restarter != nil {
		comps := a.opts.Restarter.Check(ctx, a.cfg, rep, a.mismatch)
		for _, cs := range comps {
			for _, sv := range cs.Served {
				if sv.State == "stale" {
					a.onceKey("stale/"+sv.Address, sv.DiskSerial, func() {
						a.opts.Log.WithFields(logrus.Fields{"MESSAGE_ID": MsgStale, "COMPONENT": cs.Name, "CERT_NAME": sv.Certificate,
							"SERIAL": sv.DiskSerial, "SERVED_SERIAL": sv.ServedSerial, "ADDRESS": sv.Address,
							"REASON": "renewed on disk but not reloaded: restart " + cs.Name}).Warn("served certificate is stale")
						a.opts.Reporter.Event(corev1.EventTypeWarning, "ServedCertificateStale",
							fmt.Sprintf("%s serves %s serial %s at %s, but the disk has %s: restart it", cs.Name, sv.Certificate, sv.ServedSerial, sv.Address, sv.DiskSerial))
					})
				}
			}
		}
		a.mu.Lock()
		a.health.Components = comps
		a.mu.Unlock()
		a.opts.Metrics.served(comps)
	}
	a.mu.Lock()
	a.health.LastScan, a.health.LastScanReason = timePtr(start), reason
	a.health.LastScanSeconds = a.opts.Clock.Since(start).Seconds()
	a.health.Scans++
	a.mu.Unlock()
	a.publish(a.build(rep, statuses, reason, start))
	a.report(rep, statuses)
	a.nextPass = a.next(statuses)
	if a.opts.Notifier != nil && a.ready {
		a.opts.Notifier.Status(a.summary())
	}
}

// next is the earliest of the next action and the periodic resync.
func (a *Agent) next(statuses map[string]*api.RenewalStatus) time.Time {
	n := a.opts.Clock.Now().Add(a.cfg.Agent.ResyncDuration)
	for _, s := range statuses {
		if s.NextAction != "none" && s.NextActionAt != nil && s.NextActionAt.Before(n) {
			n = *s.NextActionAt
		}
	}
	return n
}

// decide works out every certificate's renewal status and which are due.
func (a *Agent) decide(rep *inventory.Report, now time.Time) (map[string]*api.RenewalStatus, []*inventory.Certificate) {
	policy := schedule.Policy{RenewBefore: a.cfg.RenewBeforeDuration}
	out := map[string]*api.RenewalStatus{}
	var due []*inventory.Certificate
	for _, c := range rep.Certificates {
		st := a.state.Get(c.Name)
		if st.Serial != c.Serial {
			if st.Serial != "" && st.LastResult != "" && !endsWith(st.LastResult, c.Serial) {
				a.opts.Log.WithFields(certFields(MsgChangedOnDisk, c, "", "serial "+st.Serial+" replaced on disk")).Info("certificate changed on disk")
			}
			st = state.Cert{Serial: c.Serial, LastRenewal: st.LastRenewal, LastResult: st.LastResult}
			a.state.Put(c.Name, st)
		}
		rs := &api.RenewalStatus{Failures: st.Failures, LastError: st.LastError, LastResult: st.LastResult}
		rs.LastAttempt, rs.LastRenewal = timePtr(st.LastAttempt), timePtr(st.LastRenewal)
		expired := now.After(c.NotAfter)
		if c.RenewalPath == inventory.RenewCSR {
			if csr, running := a.csrJobs[c.Name]; running {
				rs.State, rs.NextAction, rs.NextActionAt, rs.PendingCSR = api.StateRenewing, "wait", timePtr(now), csr
				rs.Reason = "requesting a certificate from the cluster"
				if csr != "" {
					rs.Reason = fmt.Sprintf("waiting for CSR %s to be issued; to approve it: kubectl certificate approve %s", csr, csr)
				}
				out[c.Name] = rs
				continue
			}
		}
		if c.RenewalPath != inventory.RenewLocalCA && c.RenewalPath != inventory.RenewCSR && c.RenewalPath != inventory.RenewSelfSigned {
			rs.NextAction, rs.State = "none", api.StateOK
			rs.Reason = map[inventory.RenewalPath]string{
				inventory.RenewExternal: "its CA key is not on this node",
				inventory.RenewNone:     "not renewable (a CA or self-signed)",
				inventory.RenewRefused:  "left alone: " + c.LeftAlone,
			}[c.RenewalPath]
			if c.RenewalPath == inventory.RenewRefused {
				a.once("left-alone", c, func() {
					a.opts.Log.WithFields(certFields(MsgLeftAlone, c, string(c.RenewalPath), c.LeftAlone)).Warn("certificate left alone: certagent will not re-sign it")
				})
			}
			if expired {
				rs.State = api.StateExpired
				a.once("expired", c, func() {
					a.opts.Log.WithFields(certFields(MsgExpired, c, string(c.RenewalPath), rs.Reason)).Error("certificate expired and certagent cannot renew it")
				})
			}
			if c.State == inventory.StateRenewalDue || expired {
				a.once("unrenewable", c, func() {
					a.opts.Reporter.Event(corev1.EventTypeWarning, "CertificateExpiringUnrenewable",
						fmt.Sprintf("%s expires %s and certagent cannot renew it here: %s", c.Name, c.NotAfter.UTC().Format(time.RFC3339), rs.Reason))
				})
			}
			out[c.Name] = rs
			continue
		}
		deadline := schedule.Deadline(c.NotBefore, c.NotAfter, policy, schedule.Source(c.Serial, a.node))
		kubeletOwns, why := false, ""
		if c.RenewalPath == inventory.RenewCSR {
			kind, _ := kindOf(c, a.cfg)
			var stepIn time.Time
			if kubeletOwns, stepIn, why = a.csrOwner(c, kind); kubeletOwns {
				deadline = stepIn
			}
		}
		// A renewBefore as long as the lifetime would make every renewed
		// certificate due at once: never renew the same certificate again
		// within a tenth of its lifetime.
		life := c.NotAfter.Sub(c.NotBefore)
		if held, ok := schedule.HoldBack(deadline, st.LastRenewal, life); ok {
			deadline = held
			a.once("floor", c, func() {
				a.opts.Log.WithFields(certFields(MsgRenewalScheduled, c, string(c.RenewalPath),
					fmt.Sprintf("renewBefore (%s) leaves no room in a %s lifetime: renewing at most every %s", a.cfg.RenewBefore, inventory.Human(life), inventory.Human(life/10)))).Warn("renewal held back")
			})
		}
		if expired {
			deadline = now
		}
		switch {
		case st.Failures > 0 && now.Before(st.NextAttempt):
			rs.State, rs.NextAction, rs.NextActionAt, rs.Reason = api.StateFailed, "retry", timePtr(st.NextAttempt), st.LastError
			if expired {
				rs.State = api.StateExpired
			}
		case !now.Before(deadline):
			rs.State, rs.NextAction, rs.NextActionAt = api.StateRenewing, "renew", timePtr(now)
			if c.RenewalPath == inventory.RenewCSR {
				if kubeletOwns {
					rs.Reason = "the kubelet did not rotate it in its window: certagent steps in"
					a.once("stepin", c, func() {
						a.opts.Log.WithFields(certFields(MsgSteppedIn, c, "csr", why+", but the certificate is past 95 % of its lifetime: certagent steps in")).Warn("kubelet did not rotate its certificate")
					})
				}
				a.dueCSR = append(a.dueCSR, c)
			} else {
				due = append(due, c)
			}
		case kubeletOwns:
			rs.State, rs.NextAction, rs.NextActionAt = api.StateOK, "step-in", timePtr(deadline)
			rs.Reason = why + "; certagent steps in then if it has not"
		default:
			rs.State, rs.NextAction, rs.NextActionAt = api.StateOK, "renew", timePtr(deadline)
			if c.State == inventory.StateRenewalDue {
				rs.State = api.StateScheduled
			}
			a.once("scheduled", c, func() {
				a.opts.Log.WithFields(certFields(MsgRenewalScheduled, c, string(c.RenewalPath), "at "+deadline.UTC().Format(time.RFC3339))).Info("renewal scheduled")
			})
		}
		out[c.Name] = rs
	}
	return out, due
}

// once logs an event a single time per certificate serial.
func (a *Agent) once(kind string, c *inventory.Certificate, log func()) {
	a.onceKey(kind+"/"+c.Name, c.Serial, log)
}

func (a *Agent) onceKey(key, value string, log func()) {
	if a.logged[key] != value {
		a.logged[key] = value
		log()
	}
}

// renewDue renews due certificates in one transaction.
func (a *Agent) renewDue(ctx context.Context, due []*inventory.Certificate) {
	var names []string
	for _, c := range due {
		names = append(names, c.Name)
	}
	now := a.opts.Clock.Now()
	out, err := RenewOnce(ctx, a.opts.Root, a.cfg, api.RenewRequest{Names: names}, RenewOptions{LockTimeout: 30 * time.Second, Now: now, Hooks: a.opts.Hooks})
	a.record(ctx, due, out, err, now)
}

// record keeps the outcome of a renewal (the agent's own, or one asked for
// over the API) per certificate: state, journal events, backoff; then it
// restarts what uses the renewed certificates.
func (a *Agent) record(ctx context.Context, certs []*inventory.Certificate, out *Outcome, err error, now time.Time) {
	byName := map[string]*inventory.Certificate{}
	for _, c := range certs {
		byName[c.Name] = c
	}
	failures := map[string]error{}
	var renewed []Renewed
	switch {
	case err != nil:
		for n := range byName {
			failures[n] = err
		}
	case out != nil && out.Plan != nil:
		for _, it := range out.Plan.Items {
			if it.Err != nil {
				failures[it.Name] = it.Err
			}
		}
		for _, r := range out.Results {
			c := byName[r.Name]
			if c == nil {
				continue
			}
			if r.Err != nil {
				failures[r.Name] = r.Err
				continue
			}
			method, how := localMethod(c)
			a.state.Put(r.Name, stateRenewed(r.NewSerial, r.OldSerial, method, now))
			a.opts.Metrics.renewed(r.Name, method, now)
			f := certFields(MsgRenewed, c, method, "")
			f["NEW_SERIAL"], f["NEW_NOT_AFTER"], f["BACKUP"] = r.NewSerial, r.NotAfter.UTC().Format(time.RFC3339), r.Backup
			a.opts.Log.WithFields(f).Info("certificate renewed")
			a.opts.Reporter.Event(corev1.EventTypeNormal, "CertificateRenewed", fmt.Sprintf("certagent renewed %s %s: serial %s -> %s, valid until %s", r.Name, how, r.OldSerial, r.NewSerial, r.NotAfter.UTC().Format(time.RFC3339)))
			backup, name := r.Backup, r.Name
			renewed = append(renewed, Renewed{Cert: c, NewSerial: r.NewSerial,
				Rollback: func() error { return rotate.Restore(a.opts.Root, backup, name) }})
		}
	}
	for name, ferr := range failures {
		if c := byName[name]; c != nil {
			st := a.state.Get(name)
			method, _ := localMethod(c)
			a.fail(c, &st, ferr, now, method)
		}
	}
	a.restart(ctx, renewed, now)
}

// localMethod names how the transaction renewed c: from the local CA, or
// as a new self-signed pair (kubelet.crt).
func localMethod(c *inventory.Certificate) (method, how string) {
	if c.RenewalPath == inventory.RenewSelfSigned {
		return string(inventory.RenewSelfSigned), "as a new self-signed pair"
	}
	return string(inventory.RenewLocalCA), "from the local CA"
}

// restart reloads what uses renewed certificates; those whose component
// did not come up with them were rolled back and count as failed, with
// backoff, so the same thing is not tried again at once.
func (a *Agent) restart(ctx context.Context, renewed []Renewed, now time.Time) {
	if len(renewed) == 0 || a.opts.Restarter == nil || a.cfg.Agent.NoRestart {
		return
	}
	current := map[string]string{}
	for _, rn := range renewed {
		current[rn.Cert.Name] = rn.NewSerial
	}
	for name, err := range a.opts.Restarter.Restart(ctx, renewed, current) {
		for _, rn := range renewed {
			if rn.Cert.Name == name {
				st := a.state.Get(name)
				st.Serial = rn.Cert.Serial // the old certificate is back
				a.fail(rn.Cert, &st, err, now, "restart")
			}
		}
	}
}

// report keeps the Node condition current: unhealthy while a certificate
// failed to renew, expired, or is served stale.
func (a *Agent) report(rep *inventory.Report, statuses map[string]*api.RenewalStatus) {
	r := a.opts.Reporter
	if r == nil {
		return
	}
	for _, c := range rep.Certificates {
		if (c.Name == "kubelet-client-current" || c.Name == "kubelet.conf") && strings.HasPrefix(c.Subject, "CN=system:node:") {
			r.SetNode(nodeFromCN(strings.SplitN(strings.TrimPrefix(c.Subject, "CN="), ",", 2)[0]))
		}
	}
	healthy, reason, msg := true, "CertificatesHealthy", fmt.Sprintf("certagent watches %d certificates; none failed, expired or stale", len(rep.Certificates))
	var bad []string
	for _, c := range rep.Certificates {
		switch s := statuses[c.Name]; {
		case s == nil:
		case s.State == api.StateExpired:
			healthy, reason = false, "CertificateExpired"
			bad = append(bad, c.Name+" expired")
		case s.State == api.StateFailed:
			if healthy {
				reason = "RenewalFailed"
			}
			healthy = false
			bad = append(bad, c.Name+": "+s.LastError)
		}
	}
	a.mu.Lock()
	for _, comp := range a.health.Components {
		for _, sv := range comp.Served {
			if sv.State == "stale" {
				if healthy {
					reason = "ServedCertificateStale"
				}
				healthy = false
				bad = append(bad, comp.Name+" serves an old "+sv.Certificate)
			}
		}
	}
	a.mu.Unlock()
	if !healthy {
		msg = strings.Join(bad, "; ")
		if len(msg) > 1000 {
			msg = msg[:1000] + "…"
		}
	}
	r.Condition(healthy, reason, msg)
}

// stateRenewed is the record of a successful renewal.
func stateRenewed(serial, old, method string, now time.Time) state.Cert {
	return state.Cert{Serial: serial, LastAttempt: now, LastRenewal: now,
		LastResult: fmt.Sprintf("renewed %s -> %s (%s)", old, serial, method)}
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
	a.opts.Metrics.failed(method)
	f := certFields(MsgRenewalFailed, c, method, err.Error())
	f["FAILURES"], f["NEXT_ATTEMPT"] = st.Failures, st.NextAttempt.UTC().Format(time.RFC3339)
	if errors.Is(err, ErrNoCredential) {
		f["PRIORITY"] = "2" // critical: the node is cut off from the cluster
	}
	a.opts.Log.WithFields(f).Error("certificate renewal failed")
	a.opts.Reporter.Event(corev1.EventTypeWarning, "CertificateRenewalFailed", fmt.Sprintf("certagent could not renew %s (%s, %d failures, next try %s): %v", c.Name, method, st.Failures, st.NextAttempt.UTC().Format(time.RFC3339), err))
}

// build assembles the status document.
func (a *Agent) build(rep *inventory.Report, statuses map[string]*api.RenewalStatus, reason string, start time.Time) *api.Status {
	s := &api.Status{Kind: "AgentStatus", APIVersion: rep.APIVersion, ScannedAt: rep.ScannedAt, Root: rep.Root,
		Authorities: rep.Authorities, KeyPairs: rep.KeyPairs, Problems: rep.Problems}
	for _, c := range rep.Certificates {
		cs := &api.CertStatus{Certificate: c}
		if rs := statuses[c.Name]; rs != nil {
			cs.Renewal = *rs
		}
		s.Certificates = append(s.Certificates, cs)
	}
	if s.Certificates == nil {
		s.Certificates = []*api.CertStatus{}
	}
	s.Daemon = a.healthSnapshot()
	return s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func endsWith(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}
