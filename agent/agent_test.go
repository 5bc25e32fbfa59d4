package agent

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/agent/metrics"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// harness runs an agent on a sandbox node in the background.
type harness struct {
	t      *testing.T
	dir    string
	a      *Agent
	log    *test.Hook
	cancel context.CancelFunc
	done   chan error
	cfg    func() (*config.Config, error)
	notes  *notes
}

// notes records sd_notify calls.
type notes struct {
	mu  sync.Mutex
	log []string
}

func (n *notes) add(s string) error    { n.mu.Lock(); n.log = append(n.log, s); n.mu.Unlock(); return nil }
func (n *notes) Ready(s string) error  { return n.add("READY " + s) }
func (n *notes) Status(s string) error { return n.add("STATUS " + s) }
func (n *notes) Watchdog() error       { return n.add("WATCHDOG") }
func (n *notes) Stopping() error       { return n.add("STOPPING") }
func (n *notes) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.log...)
}

func newHarness(t *testing.T, dir string, clk clock.WithTicker, cfgText string) *harness {
	t.Helper()
	return newHarnessWith(t, dir, clk, cfgText, nil)
}

func newHarnessWith(t *testing.T, dir string, clk clock.WithTicker, cfgText string, with func(*Options)) *harness {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
		if _, err := (pkitest.Layout{Now: clk.Now(), LeafLifetime: 10 * 24 * time.Hour}).Write(dir); err != nil {
			t.Fatal(err)
		}
	}
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	h := &harness{t: t, dir: dir, log: hook, notes: &notes{}}
	h.cfg = func() (*config.Config, error) {
		return config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nagent: {nodeName: node1}\n" + cfgText))
	}
	opts := Options{
		Root: root, LoadConfig: func() (*config.Config, error) { return h.cfg() },
		StateDir: filepath.Join(dir, "var/lib/certagent"), Socket: filepath.Join(dir, "run/certagent.sock"),
		Clock: clk, Log: logger, Notifier: h.notes, Version: "test", Debounce: 20 * time.Millisecond,
	}
	if with != nil {
		with(&opts)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	h.a = a
	h.start()
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.a.Run(ctx) }()
	h.waitFor("the first scan", func(s *api.Status) bool { return s != nil })
}

func (h *harness) stop() {
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) status() *api.Status {
	data := h.a.StatusJSON()
	if data == nil {
		return nil
	}
	var s api.Status
	if err := json.Unmarshal(data, &s); err != nil {
		h.t.Fatal(err)
	}
	return &s
}

// waitFor polls the published status (the loop runs in its own goroutine;
// this waits for it, it does not make time pass).
func (h *harness) waitFor(what string, ok func(*api.Status) bool) *api.Status {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if s := h.status(); ok(s) {
			return s
		}
		time.Sleep(5 * time.Millisecond)
	}
	data := h.a.StatusJSON()
	h.t.Fatalf("timed out waiting for %s; status:\n%s", what, data)
	return nil
}

func cert(s *api.Status, name string) *api.CertStatus {
	for _, c := range s.Certificates {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (h *harness) events(msgID string) int {
	n := 0
	for _, e := range h.log.AllEntries() {
		if e.Data["MESSAGE_ID"] == msgID {
			n++
		}
	}
	return n
}

// advance steps the fake clock in small steps, so that the loop's capped
// timers fire at each step, and waits until the loop is idle again.
func advance(h *harness, clk *testingclock.FakeClock, d time.Duration) {
	h.t.Helper()
	step := time.Minute
	for d > 0 {
		if d < step {
			step = d
		}
		scans := h.status().Daemon.Scans
		clk.Step(step)
		d -= step
		// Give the loop a moment to react to the timer.
		deadline := time.Now().Add(200 * time.Millisecond)
		for time.Now().Before(deadline) && h.status().Daemon.Scans == scans {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

func TestScheduleAndRenewWithFakeClock(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	h := newHarness(t, "", clk, "")
	defer h.stop()
	s := h.status()
	apiCert := cert(s, "apiserver")
	if apiCert.Renewal.State != api.StateOK || apiCert.Renewal.NextAction != "renew" || apiCert.Renewal.NextActionAt == nil {
		t.Fatalf("fresh apiserver: %+v", apiCert.Renewal)
	}
	deadline := *apiCert.Renewal.NextActionAt
	life := apiCert.NotAfter.Sub(apiCert.NotBefore)
	if f := float64(deadline.Sub(apiCert.NotBefore)) / float64(life); f < 0.7 || f > 0.9 {
		t.Errorf("deadline at %.2f of the lifetime, want 0.7-0.9", f)
	}
	if !strings.HasPrefix(h.notes.all()[0], "READY 14 certs, next renewal") {
		t.Errorf("sd_notify: %v", h.notes.all())
	}
	if h.events(logfields.MsgRenewalScheduled) == 0 {
		t.Error("no renewal-scheduled events logged")
	}
	oldSerial := apiCert.Serial
	// Jump to just past the deadline: the loop must notice within its
	// capped sleep and renew.
	clk.SetTime(deadline.Add(time.Second))
	advance(h, clk, 2*time.Minute)
	s = h.waitFor("apiserver renewed", func(s *api.Status) bool { return cert(s, "apiserver").Serial != oldSerial })
	apiCert = cert(s, "apiserver")
	if apiCert.Renewal.LastRenewal == nil || !strings.HasPrefix(apiCert.Renewal.LastResult, "renewed") || apiCert.Renewal.State != api.StateOK {
		t.Errorf("after renewal: %+v", apiCert.Renewal)
	}
	if h.events(logfields.MsgRenewed) == 0 {
		t.Error("no renewed event logged")
	}
	for _, e := range h.log.AllEntries() {
		for k, v := range e.Data {
			if strings.Contains(fmtAny(v), "PRIVATE KEY") {
				t.Errorf("key material logged in %s", k)
			}
		}
	}
}

func fmtAny(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestSuspendDoesNotHideDeadlines(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	h := newHarness(t, "", clk, "")
	defer h.stop()
	before := cert(h.status(), "etcd-peer").Serial
	// A "suspend": the wall clock leaps 9 days at once (no timer ran).
	clk.SetTime(t0.Add(9 * 24 * time.Hour))
	advance(h, clk, 2*time.Minute)
	h.waitFor("renewal after the leap", func(s *api.Status) bool { return cert(s, "etcd-peer").Serial != before })
}

func TestBackoffAndStateSurvivesRestart(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	dir := t.TempDir()
	if _, err := (pkitest.Layout{Now: t0, LeafLifetime: 10 * 24 * time.Hour,
		NotAfter: map[string]time.Time{"apiserver": t0.Add(time.Hour)}}).Write(dir); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "etc/kubernetes/pki/ca.key"), 0o640) // refuses every renewal
	h := newHarness(t, dir, clk, "")
	s := h.waitFor("a failed attempt", func(s *api.Status) bool { return cert(s, "apiserver").Renewal.State == api.StateFailed })
	r := cert(s, "apiserver").Renewal
	// Backoff 30s, jittered into [15s, 30s].
	if wait := r.NextActionAt.Sub(t0); r.Failures != 1 || r.NextAction != "retry" || wait < 15*time.Second || wait > 30*time.Second || !strings.Contains(r.LastError, "mode 0640") {
		t.Fatalf("after one failure: %+v", r)
	}
	// No hot loop: ten seconds later nothing was tried again.
	advance(h, clk, 10*time.Second)
	if r := cert(h.status(), "apiserver").Renewal; r.Failures != 1 {
		t.Fatalf("retried before the backoff: %+v", r)
	}
	advance(h, clk, 25*time.Second)
	s = h.waitFor("the second attempt", func(s *api.Status) bool { return cert(s, "apiserver").Renewal.Failures == 2 })
	// Backoff 1m after the attempt at 35s, jittered into [30s, 1m].
	if r := cert(s, "apiserver").Renewal; r.NextActionAt.Before(t0.Add(65*time.Second)) || r.NextActionAt.After(t0.Add(95*time.Second)) {
		t.Errorf("second backoff: %+v", r)
	}
	if n := h.events(logfields.MsgRenewalFailed); n != 2 {
		t.Errorf("%d failure events, want 2", n)
	}
	h.stop()

	// A new agent on the same state directory remembers.
	h2 := newHarness(t, dir, clk, "")
	defer h2.stop()
	if r := cert(h2.status(), "apiserver").Renewal; r.Failures != 2 || r.State != api.StateFailed {
		t.Errorf("after restart: %+v", r)
	}
	// Fix the key: the next retry succeeds.
	os.Chmod(filepath.Join(dir, "etc/kubernetes/pki/ca.key"), 0o600)
	advance(h2, clk, 3*time.Minute)
	h2.waitFor("recovery", func(s *api.Status) bool {
		r := cert(s, "apiserver").Renewal
		return r.State == api.StateOK && r.Failures == 0 && r.LastRenewal != nil
	})
}

func TestCorruptStateAndBadReload(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	dir := t.TempDir()
	if _, err := (pkitest.Layout{Now: t0}).Write(dir); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "var/lib/certagent"), 0o700)
	os.WriteFile(filepath.Join(dir, "var/lib/certagent/state.json"), []byte("{{{"), 0o600)
	h := newHarness(t, dir, clk, "")
	defer h.stop()
	if w := h.status().Daemon.StateWarning; !strings.Contains(w, "starting fresh") {
		t.Errorf("corrupt state not reported: %q", w)
	}
	good := h.cfg
	h.cfg = func() (*config.Config, error) { return config.Parse([]byte("kind: nope\n")) }
	h.a.Reload()
	s := h.waitFor("the reload error", func(s *api.Status) bool { return s.Daemon.ConfigError != "" })
	if !strings.Contains(s.Daemon.ConfigError, "kind") || len(s.Certificates) != 14 {
		t.Errorf("bad reload: %q, %d certs", s.Daemon.ConfigError, len(s.Certificates))
	}
	h.cfg = good
	h.a.Reload()
	h.waitFor("the good reload", func(s *api.Status) bool { return s.Daemon.ConfigError == "" })
}

func TestChangesOnDiskShowInStatus(t *testing.T) {
	h := newHarness(t, "", clock.RealClock{}, "")
	defer h.stop()
	pkiDir := filepath.Join(h.dir, "etc/kubernetes/pki")
	caData, _ := os.ReadFile(filepath.Join(pkiDir, "ca.crt"))
	keyData, _ := os.ReadFile(filepath.Join(pkiDir, "ca.key"))
	cab, _ := pki.ParseBundle(caData)
	cak, _ := pki.ParseKeyPEM(keyData)
	ca := &pkitest.CA{Cert: cab.Certs[0], Key: cak}
	// A manual renewal (as kubeadm does it: new files renamed in place).
	c, k, _ := ca.Issue(pkitest.Spec{CommonName: "kube-apiserver", NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(48 * time.Hour)})
	os.WriteFile(filepath.Join(pkiDir, ".new.key"), pkitest.KeyPEM(k), 0o600)
	os.WriteFile(filepath.Join(pkiDir, ".new.crt"), pkitest.CertPEM(c), 0o644)
	start := time.Now()
	os.Rename(filepath.Join(pkiDir, ".new.key"), filepath.Join(pkiDir, "apiserver.key"))
	os.Rename(filepath.Join(pkiDir, ".new.crt"), filepath.Join(pkiDir, "apiserver.crt"))
	serial := strings.ToUpper(c.SerialNumber.Text(16))
	h.waitFor("the new serial", func(s *api.Status) bool { return cert(s, "apiserver").Serial == serial })
	if d := time.Since(start); d > time.Second {
		t.Errorf("change took %s to show", d)
	}
	// The whole PKI directory disappears, then comes back.
	tmp := filepath.Join(h.dir, "pki.moved")
	os.Rename(pkiDir, tmp)
	h.waitFor("the PKI gone", func(s *api.Status) bool { return cert(s, "apiserver") == nil })
	os.Rename(tmp, pkiDir)
	h.waitFor("the PKI back", func(s *api.Status) bool { return cert(s, "apiserver") != nil && cert(s, "apiserver").Serial == serial })
	if errs := h.status().Daemon.WatchErrors; len(errs) > 0 {
		t.Errorf("watch errors: %v", errs)
	}
}

// TestNoRenewalLoop: a renewBefore as long as the lifetime does not renew
// the same certificate over and over.
func TestNoRenewalLoop(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	h := newHarness(t, "", clk, "renewBefore: 239h\n") // the sandbox's leaves live 10 days
	defer h.stop()
	h.waitFor("the first renewals", func(s *api.Status) bool { return cert(s, "apiserver").Renewal.LastRenewal != nil })
	first := h.events(logfields.MsgRenewed)
	advance(h, clk, 3*time.Minute)
	if n := h.events(logfields.MsgRenewed); n != first {
		t.Errorf("%d more renewals within minutes: a renewal loop", n-first)
	}
	apiCert := cert(h.status(), "apiserver")
	if apiCert.Renewal.NextActionAt == nil || apiCert.Renewal.NextActionAt.Sub(clk.Now()) < 23*time.Hour {
		t.Errorf("next renewal %v, want a tenth of the lifetime after the last", apiCert.Renewal.NextActionAt)
	}
}

// TestMetrics: the exporter-compatible series follow the kubelet's symlink
// swap with no stale series left, and renewals are counted.
func TestMetrics(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	dir := t.TempDir()
	if _, err := (pkitest.Layout{Now: t0, NotAfter: map[string]time.Time{"apiserver": t0.Add(time.Minute)}}).Write(dir); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	h := newHarnessWith(t, dir, clk, "", func(o *Options) { o.Metrics = m })
	defer h.stop()
	h.waitFor("the renewal", func(s *api.Status) bool { return cert(s, "apiserver").Renewal.LastRenewal != nil })
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	out := scrape()
	for _, want := range []string{
		`x509_cert_not_after{filename="apiserver.crt",filepath="/etc/kubernetes/pki/apiserver.crt",issuer_CN="kubernetes",name="apiserver"`,
		`certagent_renewals_total{method="local-ca"}`, `certagent_scan_duration_seconds_count`, `x509_cert_expired{`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// The kubelet swaps its symlink: one series for the path, the new serial.
	kdir := filepath.Join(dir, "var/lib/kubelet/pki")
	caData, _ := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/ca.crt"))
	keyData, _ := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/ca.key"))
	cab, _ := pki.ParseBundle(caData)
	cak, _ := pki.ParseKeyPEM(keyData)
	c, k, _ := (&pkitest.CA{Cert: cab.Certs[0], Key: cak}).Issue(pkitest.Spec{CommonName: "system:node:node1", Organization: []string{"system:nodes"}, NotBefore: t0, NotAfter: t0.Add(48 * time.Hour)})
	os.WriteFile(filepath.Join(kdir, "kubelet-client-new.pem"), append(pkitest.CertPEM(c), pkitest.KeyPEM(k)...), 0o600)
	os.Symlink("/var/lib/kubelet/pki/kubelet-client-new.pem", filepath.Join(kdir, "kubelet-client-updated.pem"))
	os.Rename(filepath.Join(kdir, "kubelet-client-updated.pem"), filepath.Join(kdir, "kubelet-client-current.pem"))
	serial := strings.ToUpper(c.SerialNumber.Text(16))
	h.a.Rescan("test")
	h.waitFor("the swap", func(s *api.Status) bool { return cert(s, "kubelet-client-current").Serial == serial })
	out = scrape()
	if n := strings.Count(out, `x509_cert_not_after{filename="kubelet-client-current.pem"`); n != 1 {
		t.Errorf("%d not_after series for the kubelet client certificate after the swap, want 1", n)
	}
	if !strings.Contains(out, `serial_number="`+c.SerialNumber.String()+`"`) {
		t.Error("the series does not show the new certificate")
	}
}
