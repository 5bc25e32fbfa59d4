package agent

import (
	"context"
	"strings"

	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/csrrenew"
	"github.com/certagent/certagent/agent/decide"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/agent/schedule"
)

// pass is one look at the node: scan, decide, renew what is due, publish.
// Every decision is recomputed from the wall clock. changed, when set,
// narrows the scan to what the watcher saw change; nil looks at every
// file (the cache still spares reading the unchanged ones).
func (a *Agent) pass(ctx context.Context, reason string, changed *inventory.Changed) {
	start := a.opts.Clock.Now()
	if changed == nil {
		a.scanStart = start
	}
	rep, err := inventory.Scan(ctx, inventory.Options{Root: a.opts.Root, Config: a.cfg, Now: start, Cache: a.cache, Changed: changed})
	if err != nil {
		return // cancelled
	}
	a.watch.Set(a.watchDirs(rep))
	a.opts.Metrics.Scanned(rep, a.opts.Clock.Since(start))
	rotating := a.rotateCA(ctx, rep, start)
	statuses, due, dueCSR := a.decide(rep, start, rotating, changed != nil)
	for _, c := range dueCSR {
		a.startCSR(ctx, c, rep, 0)
	}
	if len(due) > 0 && ctx.Err() == nil {
		a.publish(a.build(rep, statuses, reason, start)) // status shows "renewing" meanwhile
		a.renewDue(ctx, due)
		again := a.opts.Clock.Now()
		if rep2, err := inventory.Scan(ctx, inventory.Options{Root: a.opts.Root, Config: a.cfg, Now: again, Cache: a.cache}); err == nil {
			a.scanStart = again // it sees the renewal's own writes
			rep = rep2
			a.opts.Metrics.Scanned(rep, 0)
			statuses, _, _ = a.decide(rep, a.opts.Clock.Now(), nil, false)
		}
	}
	a.forget(rep.Certificates)
	save := a.state.Save
	if changed == nil {
		save = a.state.Flush
	}
	if err := save(); err != nil {
		a.opts.Log.WithField("REASON", err.Error()).Error("saving state failed")
	}
	if a.opts.Restarter != nil {
		comps := a.opts.Restarter.Check(ctx, a.cfg, rep, a.mismatch)
		for _, cs := range comps {
			for _, sv := range cs.Served {
				if sv.State == "stale" {
					a.onceKey("stale/"+sv.Address, sv.DiskSerial, func() {
						a.opts.Log.WithFields(logrus.Fields{"MESSAGE_ID": logfields.MsgStale, "COMPONENT": cs.Name, "CERT_NAME": sv.Certificate,
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
		a.opts.Metrics.Served(comps)
	}
	a.mu.Lock()
	a.health.LastScan, a.health.LastScanReason = timePtr(start), reason
	a.health.LastScanSeconds = a.opts.Clock.Since(start).Seconds()
	a.health.Scans++
	a.mu.Unlock()
	a.publish(a.build(rep, statuses, reason, start))
	a.report(rep, statuses)
	a.nextPass = a.next(statuses)
	if changed == nil {
		a.fitMemoryLimit()
	}
	if a.opts.Notifier != nil && a.ready {
		a.opts.Notifier.Status(a.summary())
	}
}

// forget drops the records of certificates no longer found. When the
// certificates have the names the previous pass kept, in the same order,
// and no record was added since, there is nothing to drop.
func (a *Agent) forget(certs []*inventory.Certificate) {
	same := a.kept != nil && len(certs) == len(a.kept) // the first pass always forgets
	for i := 0; same && i < len(certs); i++ {
		same = certs[i].Name == a.kept[i]
	}
	if same && !a.state.Grown() {
		return
	}
	keep := make(map[string]bool, len(certs))
	a.kept = make([]string, len(certs))
	for i, c := range certs {
		keep[c.Name], a.kept[i] = true, c.Name
	}
	a.state.Forget(keep)
}

// next is the earliest of the next action and the periodic resync.
func (a *Agent) next(statuses []*api.RenewalStatus) time.Time {
	n := a.opts.Clock.Now().Add(a.cfg.Agent.ResyncDuration)
	if a.ca.active && a.ca.pollAt.Before(n) {
		n = a.ca.pollAt
	}
	for _, s := range statuses {
		if s == nil {
			continue
		}
		// A CSR job in progress ("wait", at now) wakes the loop itself
		// when it is over (csrDone): as a deadline it would run pass
		// after pass while the cluster does not answer.
		if s.NextAction != "none" && s.NextAction != "wait" && s.NextActionAt != nil && s.NextActionAt.Before(n) {
			n = *s.NextActionAt
		}
	}
	return n
}

// decide works out every certificate's renewal status (package decide),
// keeps the records, gives the notices, and returns the statuses in the
// order of rep.Certificates and the certificates due in the local
// transaction and through the cluster. With reuse, a
// certificate whose decision cannot have changed since the previous one
// keeps it (see decisions.reuse).
func (a *Agent) decide(rep *inventory.Report, now time.Time, rotating map[string]string, reuse bool) ([]*api.RenewalStatus, []*inventory.Certificate, []*inventory.Certificate) {
	policy := schedule.Policy{RenewBefore: a.cfg.RenewBeforeDuration}
	out := make([]*api.RenewalStatus, len(rep.Certificates))
	var due, dueCSR []*inventory.Certificate
	a.decisions.begin(a.cfg, len(rep.Certificates), a.state.Version())
	for i, c := range rep.Certificates {
		mayReuse := reuse && rotating[c.Name] == ""
		if mayReuse {
			if s := a.decisions.quick(i, c, now); s != nil {
				out[i] = s
				continue
			}
		}
		record := a.state.Get(c.Name)
		if mayReuse {
			if s := a.decisions.reuse(i, c, record, now); s != nil {
				out[i] = s
				continue
			}
		}
		in := decide.Input{Cert: c, Record: record, Policy: policy, RenewBefore: a.cfg.RenewBefore, Node: a.node, Now: now, Rotating: rotating[c.Name]}
		if c.RenewalPath == inventory.RenewCSR {
			in.CSRName, in.CSRJob = a.csrJobs[c.Name]
			if !in.CSRJob {
				o := csrrenew.Owner(a.opts.Root, a.cfg, c)
				in.Kubelet = decide.Ownership{Kubelet: o.Kubelet, StepIn: o.StepIn, Why: o.Why}
			}
		}
		d := decide.Decide(in)
		if d.Record != in.Record {
			a.state.Put(c.Name, d.Record)
		}
		for _, n := range d.Notices {
			a.notice(c, n)
		}
		switch d.Action {
		case decide.RenewLocal:
			due = append(due, c)
		case decide.RenewCSR:
			dueCSR = append(dueCSR, c)
		}
		out[i] = &d.Status
		a.decisions.keep(i, c, &d, in.Rotating != "", now)
	}
	a.decisions.end(a.state.Version())
	return out, due, dueCSR
}

// notice logs and reports a decision's notice; one marked Once a single
// time per certificate serial.
func (a *Agent) notice(c *inventory.Certificate, n decide.Notice) {
	give := func() {
		if n.MessageID != "" {
			a.opts.Log.WithFields(logfields.Cert(n.MessageID, c, n.Method, n.Reason)).Log(n.Level, n.Message)
		}
		if n.EventType != "" {
			a.opts.Reporter.Event(n.EventType, n.EventReason, n.EventMessage)
		}
	}
	if n.Once {
		a.once(n.Kind, c, give)
	} else {
		give()
	}
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

// report keeps the Node condition current: unhealthy while a certificate
// failed to renew, expired, or is served stale.
func (a *Agent) report(rep *inventory.Report, statuses []*api.RenewalStatus) {
	r := a.opts.Reporter
	for _, c := range rep.Certificates {
		if (c.Name == "kubelet-client-current" || c.Name == "kubelet.conf") && strings.HasPrefix(c.Subject, "CN=system:node:") {
			r.SetNode(csrrenew.NodeFromCN(strings.SplitN(strings.TrimPrefix(c.Subject, "CN="), ",", 2)[0]))
		}
	}
	healthy, reason, msg := true, "CertificatesHealthy", fmt.Sprintf("certagent watches %d certificates; none failed, expired or stale", len(rep.Certificates))
	var bad []string
	for i, c := range rep.Certificates {
		switch s := statuses[i]; {
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

// build assembles the status document. A certificate whose Certificate
// and renewal status are the very ones of the previous document, in the
// same place, is its entry again (published entries are never changed).
func (a *Agent) build(rep *inventory.Report, statuses []*api.RenewalStatus, reason string, start time.Time) *api.Status {
	s := &api.Status{Kind: "AgentStatus", APIVersion: rep.APIVersion, ScannedAt: rep.ScannedAt, Root: rep.Root,
		Authorities: rep.Authorities, KeyPairs: rep.KeyPairs, Problems: rep.Problems,
		Certificates: make([]*api.CertStatus, len(rep.Certificates))}
	prev, prevRS := a.built.certs, a.built.statuses
	var all []api.CertStatus // one allocation for what is new
	for i, c := range rep.Certificates {
		rs := statuses[i]
		if i < len(prev) && prev[i].Certificate == c && prevRS[i] == rs {
			s.Certificates[i] = prev[i]
			continue
		}
		if all == nil {
			all = make([]api.CertStatus, len(rep.Certificates)-i)
		}
		cs := &all[0]
		all = all[1:]
		cs.Certificate = c
		if rs != nil {
			cs.Renewal = *rs
		}
		s.Certificates[i] = cs
	}
	a.built.certs, a.built.statuses = s.Certificates, statuses
	s.Daemon = a.healthSnapshot()
	s.CARotation = a.ca.status
	return s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
