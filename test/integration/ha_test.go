package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/agent/coord"
	"github.com/certagent/certagent/test/cluster"
)

const (
	haLease  = 12 * time.Second // coordination.leaseDuration of the test
	haWindow = 20 * time.Second // coordination.apiDownWindow
)

// haCluster is the HA control plane with a certagent per node.
type haCluster struct {
	h       *cluster.HA
	roots   []string
	admin   kubernetes.Interface
	tl      *restartLog
	daemons []*daemon
}

func startHACluster(t *testing.T, ctx context.Context) *haCluster {
	requireKube(t, "kubeadm")
	requireKube(t, "kube-apiserver")
	// Leaves valid 10 min, renewBefore 9 min: every certificate of every
	// node falls due within seconds of the others, a minute after kubeadm
	// issued them (or at once, if the control plane took longer to start).
	roots := haRoots(t, "10m")
	h, err := cluster.StartHA(ctx, kubeBin, t.TempDir(), haNames, roots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	admin := filepath.Join(roots[0], "etc/kubernetes/super-admin.conf")
	pointAt(t, admin, h.LB)
	rc, err := clientcmd.BuildConfigFromFlags("", admin)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	applyRBAC(t, cs)
	var apis []string
	for _, n := range h.Nodes {
		apis = append(apis, `"`+n.APIAddr()+`"`)
	}
	for i, n := range h.Nodes {
		pointAt(t, filepath.Join(n.Root, "etc/kubernetes/controller-manager.conf"), h.LB)
		manifests := filepath.Join(n.Root, "etc/kubernetes/manifests")
		os.MkdirAll(manifests, 0o755)
		for _, m := range []string{"etcd.yaml", "kube-apiserver.yaml"} {
			os.WriteFile(filepath.Join(manifests, m), []byte("apiVersion: v1\nkind: Pod\n"), 0o600)
		}
		// reloadWait 0: etcd and kube-apiserver read most renewed
		// certificates by themselves; here every component restarts, so
		// that the turns are tested.
		cfg := fmt.Sprintf(`apiVersion: certagent.io/v1alpha1
kind: AgentConfiguration
renewBefore: 9m
renewal: {validity: 8760h}
exclude: ["/etc/kubernetes/kubelet.conf"]
agent: {nodeName: %s, reportToCluster: false}
restart: {fileCheckFrequency: 1s, timeout: 90s, reloadWait: 0s, endpoints: {etcd: "%s", etcd-peer: "%s", kube-apiserver: "%s"}}
coordination: {leaseDuration: %s, retryInterval: 500ms, apiDownWindow: %s, apiServers: [%s]}
`, n.Name, n.EtcdAddr(), n.PeerAddr(), n.APIAddr(), haLease, haWindow, strings.Join(apis, ", "))
		os.MkdirAll(filepath.Join(roots[i], "etc/certagent"), 0o755)
		if err := os.WriteFile(filepath.Join(roots[i], "etc/certagent/config.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tl := &restartLog{checkAPI: true}
	runHAStaticPods(t, ctx, h, tl)
	pollHA(ctx, h, tl)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(tl.summary())
		}
	})
	return &haCluster{h: h, roots: roots, admin: cs, tl: tl}
}

// restartsDone counts a daemon's confirmed restarts of component.
func restartsDone(d *daemon, component string) int {
	n := 0
	for _, l := range strings.Split(d.log(), "\n") {
		if strings.Contains(l, "restarted; the new certificate is served") && strings.Contains(l, "COMPONENT="+component) {
			n++
		}
	}
	return n
}

// waitRestarts waits until every daemon in ds confirmed want restarts of
// each component.
func waitRestarts(t *testing.T, ds []*daemon, want int, limit time.Duration, comps ...string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		done := true
		for _, d := range ds {
			for _, c := range comps {
				done = done && restartsDone(d, c) >= want
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			// Only what tells of turns and restarts: a whole log per node
			// buries the cause (CI keeps a part of the output).
			for i, d := range ds {
				t.Logf("daemon %d:\n%s", i, turnLines(d.log()))
			}
			t.Fatalf("not every node restarted %v %d times within %s", comps, want, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var (
	waitedRE   = regexp.MustCompile(`msg="took the restart Lease".*WAITED=([0-9.a-zµ]+)`)
	requestsRE = regexp.MustCompile(`\bAPI_REQUESTS=([0-9]+)`)
	delayRE    = regexp.MustCompile(`DELAY=([0-9.a-zµ]+)`)
)

// haFigures returns the longest wait for the Lease any node logged and the
// API requests the nodes spent on coordination.
func haFigures(ds []*daemon) (time.Duration, int) {
	var longest time.Duration
	total := 0
	for _, d := range ds {
		log := d.log()
		for _, m := range waitedRE.FindAllStringSubmatch(log, -1) {
			if w, err := time.ParseDuration(m[1]); err == nil && w > longest {
				longest = w
			}
		}
		last := 0
		for _, m := range requestsRE.FindAllStringSubmatch(log, -1) {
			last, _ = strconv.Atoi(m[1])
		}
		total += last
	}
	return longest, total
}

// waitRecorded waits until the stand-in kubelets recorded n restarts.
func (hc *haCluster) waitRecorded(t *testing.T, n int) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		hc.tl.mu.Lock()
		got := len(hc.tl.restarts)
		hc.tl.mu.Unlock()
		if got >= n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// turnLines keeps the lines of a daemon log that tell of turns,
// restarts and failures.
func turnLines(log string) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "Lease") || strings.Contains(l, "turn") || strings.Contains(l, "restart") ||
			strings.Contains(l, "level=warn") || strings.Contains(l, "level=error") || strings.Contains(l, "level=fatal") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// coordLog is what the daemons logged of their turns, for failures.
func (hc *haCluster) coordLog() string {
	var out []string
	for i, d := range hc.daemons {
		for _, l := range strings.Split(d.log(), "\n") {
			if strings.Contains(l, "Lease") || strings.Contains(l, "turn") || strings.Contains(l, "restart") {
				out = append(out, haNames[i]+": "+l)
			}
		}
	}
	return strings.Join(out, "\n")
}

func (hc *haCluster) check(t *testing.T, wantRestarts int) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Log(hc.coordLog())
		}
	}()
	hc.tl.mu.Lock()
	n, breaches, polls := len(hc.tl.restarts), hc.tl.breaches, hc.tl.polls
	hc.tl.mu.Unlock()
	if n < wantRestarts {
		t.Errorf("%d restarts recorded, want %d", n, wantRestarts)
	}
	if o := hc.tl.overlaps(); len(o) > 0 {
		t.Errorf("restarts overlap:\n%s", strings.Join(o, "\n"))
	}
	if len(breaches) > 0 {
		t.Errorf("invariants broken at %d of %d polls:\n%s", len(breaches), polls, strings.Join(breaches, "\n"))
	}
	if polls < 10 {
		t.Errorf("only %d polls", polls)
	}
}

// TestHAControlPlaneTakesTurns: three control-plane nodes whose
// certificates are all due at once renew and restart etcd and
// kube-apiserver one node at a time: no two restarts overlap, etcd never
// loses quorum, a kube-apiserver is always ready. A certagent killed while
// it holds the restart Lease holds the others up only until it expires.
// With every kube-apiserver down, each node restarts etcd after its own
// delay, and quorum holds.
func TestHAControlPlaneTakesTurns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hc := startHACluster(t, ctx)
	start := time.Now()
	for _, r := range hc.roots {
		hc.daemons = append(hc.daemons, startDaemon(t, certagentBin, r, nil, "--no-restart=false"))
	}
	// Six turns take about 2 min here; a slow but correct turn can take
	// restart.timeout twice (restart, then health) and more.
	waitRestarts(t, hc.daemons, 1, 8*time.Minute, "etcd", "kube-apiserver")
	took := time.Since(start)
	hc.waitRecorded(t, 6) // the last restart's end is recorded on health
	hc.check(t, 6)
	longest, requests := haFigures(hc.daemons)
	t.Logf("three nodes renewed and restarted etcd and kube-apiserver in turn in %s; longest wait for the Lease %s; %d API requests on coordination",
		took.Round(time.Millisecond), longest, requests)
	for _, iv := range hc.tl.restarts {
		t.Logf("restart %-22s %s .. %s", iv.what, iv.start.Format("15:04:05.000"), iv.end.Format("15:04:05.000"))
	}
	if t.Failed() {
		return
	}
	var victim int
	t.Run("holder killed", func(t *testing.T) { victim = hc.holderKilled(t) })
	if t.Failed() {
		return
	}
	// The killed node's agent comes back for the next part (started by
	// the parent test: a subtest's cleanup would stop it).
	hc.daemons[victim] = startDaemon(t, certagentBin, hc.roots[victim], nil, "--no-restart=false")
	t.Run("API down", hc.apiDown)
}

// renewAll asks the daemon of each root (through `certagent renew`) to
// renew names; each then restarts what uses them. It returns the failures.
func renewAll(t *testing.T, roots []string, names ...string) []string {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for _, r := range roots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res := run(t, certagentBin, append([]string{"renew", "--root", r}, names...)...); res.code != 0 {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("renew %s: %s%s", r, res.stdout, res.stderr))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed
}

// holder says who holds the restart Lease, and since when.
func (hc *haCluster) holder(t *testing.T) (string, time.Time) {
	l, err := hc.admin.CoordinationV1().Leases("kube-system").Get(context.Background(), "certagent-restart", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || l.Spec.AcquireTime == nil {
		return "", time.Time{}
	}
	return *l.Spec.HolderIdentity, l.Spec.AcquireTime.Time
}

// holderKilled: the node holding the Lease dies (SIGKILL, its manifest
// put back as its restarted agent or an operator would); the others take
// the Lease only after it expired. It returns the killed node.
func (hc *haCluster) holderKilled(t *testing.T) int {
	// The last turn of the first part ends (the Lease is released) ...
	deadline := time.Now().Add(time.Minute)
	for h, _ := hc.holder(t); h != ""; h, _ = hc.holder(t) {
		if time.Now().After(deadline) {
			t.Fatalf("%s keeps the Lease", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// ... before this part's renewals begin.
	asked := time.Now().Add(-time.Second) // acquireTime has whole seconds
	renewed := make(chan []string, 1)
	go func() { renewed <- renewAll(t, hc.roots, "etcd-server") }()
	defer func() { <-renewed }() // the victim's fails: its daemon is killed
	var victim int
	for victim = -1; victim < 0; {
		if h, since := hc.holder(t); h != "" && !since.Before(asked) {
			for i, n := range haNames {
				if n == h {
					victim = i
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("nobody took the Lease")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hc.daemons[victim].cmd.Process.Signal(syscall.SIGKILL)
	killed := time.Now()
	manifests := filepath.Join(hc.roots[victim], "etc/kubernetes/manifests")
	os.Rename(filepath.Join(manifests, ".certagent-etcd.yaml"), filepath.Join(manifests, "etcd.yaml"))
	var others []*daemon
	for i, d := range hc.daemons {
		if i != victim {
			others = append(others, d)
		}
	}
	waitRestarts(t, others, 2, 3*time.Minute, "etcd")
	// Each other node took the Lease after the kill: not before the
	// holder's last renewal (at most a third of the duration before the
	// kill) expired.
	for _, d := range others {
		for _, l := range strings.Split(d.log(), "\n") {
			if !strings.Contains(l, `msg="took the restart Lease"`) {
				continue
			}
			at := logTime(l)
			if at.After(killed) && at.Before(killed.Add(haLease*2/3-time.Second)) {
				t.Errorf("took the Lease %s after its holder died, before it expired:\n%s", at.Sub(killed), l)
			}
		}
	}
	t.Logf("%s killed holding the Lease; the others restarted etcd in turn after it expired", haNames[victim])
	hc.waitRecorded(t, 8)
	hc.check(t, 8)
	return victim
}

var timeRE = regexp.MustCompile(`time="([^"]+)"`)

func logTime(line string) time.Time {
	m := timeRE.FindStringSubmatch(line)
	if m == nil {
		return time.Time{}
	}
	at, _ := time.Parse(time.RFC3339, m[1])
	return at
}

// apiDown: with every kube-apiserver stopped, no Lease can be had; each
// node restarts etcd after its own delay, logged, and quorum holds.
func (hc *haCluster) apiDown(t *testing.T) {
	hc.tl.mu.Lock()
	hc.tl.checkAPI = false
	before := len(hc.tl.restarts)
	hc.tl.mu.Unlock()
	for _, r := range hc.roots {
		m := filepath.Join(r, "etc/kubernetes/manifests")
		os.Rename(filepath.Join(m, "kube-apiserver.yaml"), filepath.Join(m, "kube-apiserver.off"))
	}
	for i := range hc.h.Nodes {
		for hc.h.PID("apiserver-"+haNames[i]) != 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	counts := make([]int, len(hc.daemons))
	for i, d := range hc.daemons {
		counts[i] = restartsDone(d, "etcd")
	}
	if failed := renewAll(t, hc.roots, "etcd-server"); len(failed) > 0 {
		t.Fatal(strings.Join(failed, "\n"))
	}
	deadline := time.Now().Add(3 * time.Minute)
	for i, d := range hc.daemons {
		for restartsDone(d, "etcd") < counts[i]+1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not restart etcd:\n%s", haNames[i], d.log())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for i, d := range hc.daemons {
		m := delayRE.FindAllStringSubmatch(d.log(), -1)
		want := coord.Delay(haNames[i], haWindow).Round(time.Millisecond).String()
		if len(m) == 0 || m[len(m)-1][1] != want || !strings.Contains(d.log(), "no restart Lease can be had") {
			t.Errorf("%s: no API-down delay %s logged:\n%s", haNames[i], want, d.log())
		}
		t.Logf("%s: API-down delay %s", haNames[i], want)
	}
	hc.waitRecorded(t, before+3)
	hc.check(t, before+3)
}
