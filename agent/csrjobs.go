package agent

import (
	"context"
	"errors"
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/agent/renewal"
)

// csrUpdate tells the loop the name of the request a job waits for.
type csrUpdate struct{ name, csr string }

// startCSR runs one CSR renewal in the background; the loop hears back on
// csrDone. At most one job runs per certificate. timeout, when positive,
// replaces the configured wait for approval (a renew request's).
func (a *Agent) startCSR(ctx context.Context, c *inventory.Certificate, rep *inventory.Report, timeout time.Duration) {
	if _, running := a.csrJobs[c.Name]; running {
		return
	}
	a.csrJobs[c.Name] = ""
	job := renewal.CSRJob{Config: a.cfg, Cert: c, Report: rep, Timeout: timeout,
		PendingDir: a.state.Dir(), ReusePending: a.state.Get(c.Name).PendingCSR != "",
		Waiting: func(csr string) {
			select {
			case a.csrPending <- csrUpdate{name: c.Name, csr: csr}:
			case <-ctx.Done():
			}
		}, NotFrom: a.ca.retiring()}
	csr := a.opts.CSR
	go func() {
		var r renewal.Result
		if csr == nil {
			r = renewal.Failed(c, "csr", errNoCSR)
		} else {
			r = csr.RenewCSR(ctx, job)
		}
		select {
		case a.csrDone <- r:
		case <-ctx.Done():
		}
	}()
}

// errNoCSR: the agent was built without a CSR renewer.
var errNoCSR = errors.New("no CSR renewer configured")

// csrWaiting records the request a job waits for and says how to approve it.
func (a *Agent) csrWaiting(u csrUpdate) {
	if _, ok := a.csrJobs[u.name]; !ok {
		return
	}
	a.csrJobs[u.name] = u.csr
	st := a.state.Get(u.name)
	st.PendingCSR = u.csr
	a.state.Put(u.name, st)
	a.opts.Log.WithFields(map[string]any{"MESSAGE_ID": logfields.MsgCSRPending, "CERT_NAME": u.name, "CSR_NAME": u.csr,
		"REASON": "kubectl certificate approve " + u.csr}).Info("waiting for the certificate signing request")
}

// csrFinished ends a CSR job: its record in the daemon's health and the
// wait metric, then apply like any renewal; renew requests waiting for it
// hear the end after the restarts.
func (a *Agent) csrFinished(ctx context.Context, r renewal.Result) {
	name := r.Name()
	delete(a.csrJobs, name)
	rec := &api.CSRRecord{Name: name, Method: r.Method, Seconds: r.Finished.Sub(r.Started).Seconds(), Requests: r.Requests}
	if r.Err != nil {
		rec.Error = r.Err.Error()
	} else {
		a.opts.Metrics.CSRWaited(r.Finished.Sub(r.Started))
	}
	a.mu.Lock()
	a.health.LastCSR = rec
	a.mu.Unlock()
	a.apply(ctx, []renewal.Result{r}, a.opts.Clock.Now())
	for _, ch := range a.csrWaiters[name] {
		ch <- r
	}
	delete(a.csrWaiters, name)
}
