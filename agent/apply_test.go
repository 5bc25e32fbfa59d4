package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// scriptedCSR answers CSR jobs from a script: each call takes the next
// answer; past the script, a job waits until the agent stops.
type scriptedCSR struct {
	mu      sync.Mutex
	answers []func(job renewal.CSRJob) renewal.Result
}

func (s *scriptedCSR) RenewCSR(ctx context.Context, job renewal.CSRJob) renewal.Result {
	s.mu.Lock()
	var next func(renewal.CSRJob) renewal.Result
	if len(s.answers) > 0 {
		next, s.answers = s.answers[0], s.answers[1:]
	}
	s.mu.Unlock()
	if next == nil {
		<-ctx.Done()
		return renewal.Failed(job.Cert, "csr", ctx.Err())
	}
	return next(job)
}

// events records Events and the Node condition.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) Event(typ, reason, message string) {
	e.mu.Lock()
	e.log = append(e.log, typ+" "+reason+" "+message)
	e.mu.Unlock()
}
func (e *events) Condition(bool, string, string) {}
func (e *events) SetNode(string)                 {}
func (e *events) Err() string                    { return "" }
func (e *events) find(prefix string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, l := range e.log {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// TestApplyCSRResults: a CSR job's results go through the same apply as
// the local transaction's: a request that can never be issued is a
// failure with backoff, a journal line, an Event and its pending request
// forgotten; the retry's success is recorded, logged with the job's
// request count and reported.
func TestApplyCSRResults(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	dir := t.TempDir()
	l := pkitest.Layout{Now: t0, LeafLifetime: 10 * 24 * time.Hour, ExternalCA: true, KubeletConfReference: true,
		NotAfter: map[string]time.Time{"kubelet-client-current": t0.Add(time.Hour)}}
	if _, err := l.Write(dir); err != nil {
		t.Fatal(err)
	}
	csr := &scriptedCSR{answers: []func(renewal.CSRJob) renewal.Result{
		func(job renewal.CSRJob) renewal.Result {
			job.Waiting("certagent-first")
			r := renewal.Failed(job.Cert, "csr", fmt.Errorf("CSR certagent-first: %w", rotate.ErrCSRGone))
			r.CSR = "certagent-first"
			return r
		},
		func(job renewal.CSRJob) renewal.Result {
			return renewal.Result{Cert: job.Cert, Method: "csr", How: "(csr)", CSR: "certagent-second", Requests: 4,
				Started: clk.Now(), Finished: clk.Now().Add(time.Second), OldSerial: job.Cert.Serial, NewSerial: "NEW1", NotAfter: t0.Add(48 * time.Hour)}
		},
	}}
	ev := &events{}
	h := newHarnessWith(t, dir, clk, "", func(o *Options) { o.CSR, o.Reporter = csr, ev })
	s := h.waitFor("the failed CSR", func(s *api.Status) bool { return cert(s, "kubelet-client-current").Renewal.State == api.StateFailed })
	r := cert(s, "kubelet-client-current").Renewal
	if r.Failures != 1 || !strings.Contains(r.LastError, "deleted before it was issued") || r.NextActionAt == nil {
		t.Errorf("after the failure: %+v", r)
	}
	if h.events(logfields.MsgRenewalFailed) != 1 || ev.find("Warning CertificateRenewalFailed certagent could not renew kubelet-client-current (csr, 1 failures") == "" {
		t.Errorf("failure not logged or reported: events %q", ev.log)
	}
	// Saved before the status was published: the request is forgotten.
	data, err := os.ReadFile(filepath.Join(dir, "var/lib/certagent/state.json"))
	if err != nil || strings.Contains(string(data), `"pendingCSR"`) || !strings.Contains(string(data), "deleted before it was issued") {
		t.Errorf("state after the failure (%v): %s", err, data)
	}
	advance(h, clk, r.NextActionAt.Sub(clk.Now())+time.Second)
	s = h.waitFor("the renewal", func(s *api.Status) bool { return cert(s, "kubelet-client-current").Renewal.LastRenewal != nil })
	r = cert(s, "kubelet-client-current").Renewal
	if !strings.HasSuffix(r.LastResult, "-> NEW1 (csr)") || s.Daemon.LastCSR == nil || s.Daemon.LastCSR.Requests != 4 {
		t.Errorf("after the renewal: %+v, last CSR %+v", r, s.Daemon.LastCSR)
	}
	renewed := false
	for _, e := range h.log.AllEntries() {
		if e.Data["MESSAGE_ID"] == logfields.MsgRenewed && e.Data["METHOD"] == "csr" && e.Data["NEW_SERIAL"] == "NEW1" && e.Data["CSR_REQUESTS"] == int64(4) && e.Data["CERT_NAME"] == "kubelet-client-current" {
			renewed = true
		}
	}
	if !renewed || ev.find("Normal CertificateRenewed certagent renewed kubelet-client-current (csr): serial ") == "" {
		t.Errorf("renewal not logged or reported: events %q", ev.log)
	}
	h.stop()
}

// TestOwnRenewalNeedsNoPass: the files a renewal writes change the watched
// directories, but the pass right after the renewal scans them already:
// their events bring no further "change on disk" pass (which, arriving
// after a later rescan, would also hide that rescan from the status).
func TestOwnRenewalNeedsNoPass(t *testing.T) {
	h := newHarness(t, "", clock.RealClock{}, "")
	defer h.stop()
	out, err := h.a.Renew(context.Background(), api.RenewRequest{Names: []string{"etcd-peer"}})
	if err != nil || out.Failed {
		t.Fatalf("renew: %v %+v", err, out)
	}
	h.a.Rescan("rescan request")
	s := h.waitFor("the rescan", func(s *api.Status) bool { return s.Daemon.LastScanReason == "rescan request" })
	scans := s.Daemon.Scans
	// Ten debounce periods for a pass that must not come.
	time.Sleep(10 * h.a.opts.Debounce)
	if s = h.status(); s.Daemon.Scans != scans || s.Daemon.LastScanReason != "rescan request" {
		t.Errorf("after the rescan: %d scans (want %d), the last for %q", s.Daemon.Scans, scans, s.Daemon.LastScanReason)
	}
}
