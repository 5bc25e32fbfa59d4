package restart

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate/pki"
)

// fakeUnits records unit restarts in the shared event log.
type fakeUnits struct {
	mu  *sync.Mutex
	log *[]string
}

func (f fakeUnits) Restart(_ context.Context, unit string) error {
	time.Sleep(30 * time.Millisecond) // let the manifest observer catch up
	f.mu.Lock()
	defer f.mu.Unlock()
	*f.log = append(*f.log, "restart "+unit)
	return nil
}

// TestRestartOrderAndBatching: one restart per component, etcd before the
// API server before the others, static pods by moving their manifest out
// (as a dotfile) and back, and no static pod touched that is not there.
func TestRestartOrderAndBatching(t *testing.T) {
	events := restartAll(t, nil)
	want := []string{"stop etcd.yaml", "start etcd.yaml", "stop kube-apiserver.yaml", "start kube-apiserver.yaml", "restart kubelet.service"}
	if strings.Join(events, ",") != strings.Join(want, ",") {
		t.Fatalf("events %q, want %q", events, want)
	}
}

// TestRestartComponents: components restarted by name (a CA rotation's
// changed trust bundles) go in the usual order, static pods through the
// gate, each once; an absent static pod is skipped without an error.
func TestRestartComponents(t *testing.T) {
	events := restartWith(t, &fakeGate{}, []string{"kubelet", "kube-scheduler", "kube-apiserver"})
	want := []string{"turn kube-apiserver", "stop kube-apiserver.yaml", "start kube-apiserver.yaml", "end kube-apiserver", "restart kubelet.service"}
	if strings.Join(events, ",") != strings.Join(want, ",") {
		t.Fatalf("events %q, want %q", events, want)
	}
}

// fakeGate records turns in the shared event log; refuse names a
// component it gives no turn to.
type fakeGate struct {
	mu     *sync.Mutex
	log    *[]string
	refuse string
}

func (g *fakeGate) Acquire(_ context.Context, _ *config.Config, comp string, _ func()) (func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if comp == g.refuse {
		*g.log = append(*g.log, "refused "+comp)
		return nil, context.Canceled
	}
	*g.log = append(*g.log, "turn "+comp)
	return func() {
		time.Sleep(30 * time.Millisecond) // let the manifest observer catch up
		g.mu.Lock()
		defer g.mu.Unlock()
		*g.log = append(*g.log, "end "+comp)
	}, nil
}

// TestRestartGate: every static pod restart happens inside a turn of the
// gate, the kubelet's needs none, and a component with no turn is not
// restarted (nor rolled back).
func TestRestartGate(t *testing.T) {
	events := restartAll(t, &fakeGate{})
	want := []string{"turn etcd", "stop etcd.yaml", "start etcd.yaml", "end etcd", "turn kube-apiserver", "stop kube-apiserver.yaml",
		"start kube-apiserver.yaml", "end kube-apiserver", "restart kubelet.service"}
	if strings.Join(events, ",") != strings.Join(want, ",") {
		t.Fatalf("events %q, want %q", events, want)
	}
	events = restartAll(t, &fakeGate{refuse: "etcd"})
	want = []string{"refused etcd", "turn kube-apiserver", "stop kube-apiserver.yaml",
		"start kube-apiserver.yaml", "end kube-apiserver", "restart kubelet.service"}
	if strings.Join(events, ",") != strings.Join(want, ",") {
		t.Fatalf("events %q, want %q", events, want)
	}
}

// restartAll renews certificates of etcd, kube-apiserver, the scheduler
// (no manifest) and the kubelet, restarts, and returns what a kubelet
// watching the manifests saw, with the unit restarts and gate turns.
func restartAll(t *testing.T, gate *fakeGate) []string {
	return restartWith(t, gate, nil)
}

// restartWith restarts the named components (RestartComponents), or,
// with none named, after renewals of certificates of every component.
func restartWith(t *testing.T, gate *fakeGate, named []string) []string {
	dir := t.TempDir()
	manifests := filepath.Join(dir, "etc/kubernetes/manifests")
	os.MkdirAll(manifests, 0o755)
	for _, m := range []string{"etcd.yaml", "kube-apiserver.yaml"} {
		os.WriteFile(filepath.Join(manifests, m), []byte("kind: Pod\n"), 0o600)
	}
	var mu sync.Mutex
	var events []string
	// Watch the manifests directory as the kubelet would.
	stop := make(chan struct{})
	go func() {
		seen := map[string]bool{}
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, m := range []string{"etcd.yaml", "kube-apiserver.yaml"} {
				_, err := os.Stat(filepath.Join(manifests, m))
				if here := err == nil; seen[m] != here {
					seen[m] = here
					mu.Lock()
					events = append(events, map[bool]string{true: "start ", false: "stop "}[here]+m)
					mu.Unlock()
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer close(stop)
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	events = nil
	mu.Unlock()

	apiserver := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) // its /livez
	defer apiserver.Close()
	cfg, _ := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nrestart: {fileCheckFrequency: 40ms, timeout: 1s, kubeletHealthz: '', endpoints: {kube-apiserver: \"" +
		strings.TrimPrefix(apiserver.URL, "https://") + "\"}}\n"))
	cfg.Restart.KubeletHealthz = ""
	root, _ := pki.NewRoot(dir)
	logger := logrus.New()
	logger.SetOutput(os.Stderr)
	r := &Restarter{Root: root, Units: fakeUnits{&mu, &events}, Clock: clock.RealClock{}, Log: logger}
	if gate != nil {
		gate.mu, gate.log = &mu, &events
		r.Gate = gate
	}
	var renewed []Renewed
	for _, n := range []string{"kubelet.conf", "apiserver", "front-proxy-client", "etcd-server", "etcd-peer", "scheduler.conf"} {
		renewed = append(renewed, Renewed{Cert: &inventory.Certificate{Name: n}})
	}
	if named != nil {
		res := r.RestartComponents(context.Background(), cfg, named, nil)
		for _, n := range named {
			if err, ok := res[n]; !ok || err != nil {
				t.Errorf("%s: %v (%v)", n, err, ok)
			}
		}
	} else if failed := r.Restart(context.Background(), cfg, renewed, nil); len(failed) != 0 {
		t.Fatalf("failed: %v", failed)
	}
	time.Sleep(20 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if _, err := os.Stat(filepath.Join(manifests, "kube-scheduler.yaml")); err == nil {
		t.Error("a scheduler manifest appeared")
	}
	return append([]string(nil), events...)
}

// TestServedCertificateCheck: an endpoint that serves another certificate
// than the disk is a mismatch, then stale after restart.staleAfter; one
// that serves the disk's is a match.
func TestServedCertificateCheck(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	served := strings.ToUpper(srv.Certificate().SerialNumber.Text(16))
	addr := strings.TrimPrefix(srv.URL, "https://")
	cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nrestart: {staleAfter: 1m, endpoints: {kube-apiserver: \"" + addr + "\"}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	clk := testingclock.NewFakeClock(time.Now())
	r := &Restarter{Clock: clk}
	since := map[string]time.Time{}
	state := func(diskSerial string) string {
		rep := &inventory.Report{Certificates: []*inventory.Certificate{{Name: "apiserver", Serial: diskSerial}}}
		for _, c := range r.Check(context.Background(), cfg, rep, since) {
			if c.Name == "kube-apiserver" {
				return c.Served[0].State
			}
		}
		return ""
	}
	if s := state(served); s != "match" {
		t.Errorf("same serial: %s", s)
	}
	if s := state("ABC"); s != "mismatch" {
		t.Errorf("renewed on disk, not reloaded yet: %s", s)
	}
	clk.Step(2 * time.Minute)
	if s := state("ABC"); s != "stale" {
		t.Errorf("after staleAfter: %s", s)
	}
	if s := state(served); s != "match" {
		t.Errorf("reloaded: %s", s)
	}
}
