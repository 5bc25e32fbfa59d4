package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/test/cluster"
)

// haNames are the control-plane nodes of the HA tests.
var haNames = []string{"node1", "node2", "node3"}

// haRoots makes three kubeadm roots sharing the cluster's CAs, each with
// its own leaves valid for validity, as `kubeadm join --control-plane`
// leaves them.
func haRoots(t *testing.T, validity string) []string {
	var roots []string
	for i, n := range haNames {
		root := t.TempDir()
		if i > 0 {
			for _, ca := range []string{"ca", "etcd/ca", "front-proxy-ca"} {
				for _, ext := range []string{".crt", ".key"} {
					copyFile(t, filepath.Join(roots[0], "etc/kubernetes/pki", ca+ext), filepath.Join(root, "etc/kubernetes/pki", ca+ext))
				}
			}
			for _, f := range []string{"sa.key", "sa.pub"} {
				copyFile(t, filepath.Join(roots[0], "etc/kubernetes/pki", f), filepath.Join(root, "etc/kubernetes/pki", f))
			}
		}
		if err := makeKubeadmNode(root, validity, "ECDSA-P256", n, fmt.Sprintf("10.0.0.%d", 11+i)); err != nil {
			t.Fatal(err)
		}
		roots = append(roots, root)
	}
	return roots
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(to), 0o755)
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// pointAt rewrites a kubeconfig to reach server (the kubeadm certificate
// names "kubernetes", not the loopback address).
func pointAt(t *testing.T, path, server string) {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cfg.Clusters {
		cl.Server, cl.TLSServerName = "https://"+server, "kubernetes"
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
}

// applyRBAC creates what packaging/rbac/certagent-restart-lease.yaml holds.
func applyRBAC(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	data, err := os.ReadFile("../../packaging/rbac/certagent-restart-lease.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Lease":
			var o coordinationv1.Lease
			yaml.UnmarshalStrict([]byte(doc), &o)
			_, err = cs.CoordinationV1().Leases(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
		case "Role":
			var o rbacv1.Role
			yaml.UnmarshalStrict([]byte(doc), &o)
			_, err = cs.RbacV1().Roles(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
		case "RoleBinding":
			var o rbacv1.RoleBinding
			yaml.UnmarshalStrict([]byte(doc), &o)
			_, err = cs.RbacV1().RoleBindings(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
		default:
			t.Fatalf("unexpected kind %q in the RBAC manifest", meta.Kind)
		}
		if err != nil {
			t.Fatalf("%s: %v", meta.Kind, err)
		}
	}
}

// interval is one restart of a component, as the stand-in kubelet saw it:
// from the process's stop to the restarted one's health.
type interval struct {
	what       string
	start, end time.Time
	unhealthy  bool // the process was stopped again before it was healthy
}

// restartLog collects restarts, crashes and invariant breaches.
type restartLog struct {
	mu       sync.Mutex
	restarts []interval
	crashes  []string // "<node> <component> at <time>: <end of its log>"
	breaches []string
	polls    int
	checkAPI bool
}

func (tl *restartLog) add(iv interval) {
	tl.mu.Lock()
	tl.restarts = append(tl.restarts, iv)
	tl.mu.Unlock()
}

// summary is what the stand-in kubelets and the poller saw, for failures.
func (tl *restartLog) summary() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var b strings.Builder
	for _, iv := range tl.restarts {
		fmt.Fprintf(&b, "restart %-22s %s .. %s%s\n", iv.what, iv.start.Format("15:04:05.000"), iv.end.Format("15:04:05.000"),
			map[bool]string{true: " (never healthy)"}[iv.unhealthy])
	}
	for _, c := range tl.crashes {
		fmt.Fprintf(&b, "crash %s\n", c)
	}
	fmt.Fprintf(&b, "%d polls, %d breaches\n", tl.polls, len(tl.breaches))
	for _, br := range tl.breaches[:min(len(tl.breaches), 20)] {
		fmt.Fprintf(&b, "breach %s\n", br)
	}
	return b.String()
}

// overlaps returns every pair of restarts that overlap in time.
func (tl *restartLog) overlaps() []string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	r := append([]interval(nil), tl.restarts...)
	sort.Slice(r, func(i, j int) bool { return r[i].start.Before(r[j].start) })
	var out []string
	for i := 1; i < len(r); i++ {
		if r[i].start.Before(r[i-1].end) {
			out = append(out, fmt.Sprintf("%s [%s] overlaps %s [until %s]", r[i].what, r[i].start.Format("15:04:05.000"),
				r[i-1].what, r[i-1].end.Format("15:04:05.000")))
		}
	}
	return out
}

// runHAStaticPods stands in for each node's kubelet: a component whose
// manifest leaves the directory is killed, and started again (reading its
// files as they are then) when it comes back; the restart ends when the
// new process is healthy. A component that exits by itself is recorded as
// a crash and started again after 2 s (the kubelet's restartPolicy
// Always). comps are the static pods run (default etcd and kube-apiserver).
func runHAStaticPods(t *testing.T, ctx context.Context, h *cluster.HA, tl *restartLog, comps ...string) {
	if len(comps) == 0 {
		comps = []string{"etcd", "kube-apiserver"}
	}
	for i, n := range h.Nodes {
		for _, comp := range comps {
			proc, start, healthy, ok := h.StaticPod(comp, i)
			if !ok {
				t.Fatalf("no static pod %s", comp)
			}
			go func() {
				manifest := filepath.Join(n.Root, "etc/kubernetes/manifests", comp+".yaml")
				running := true
				pending := false      // started, not healthy yet: the restart goes on
				var stopped time.Time // when the restart began
				stop := func() {
					now := time.Now()
					if pending {
						// A restart that never became healthy ends here:
						// recorded, so that two restarts never merge.
						tl.add(interval{what: n.Name + " " + comp, start: stopped, end: now, unhealthy: true})
					}
					stopped = now
					h.Kill(proc)
					running = false
				}
				crashed := func(what string) {
					tl.mu.Lock()
					tl.crashes = append(tl.crashes, fmt.Sprintf("%s %s at %s: %s", n.Name, comp, time.Now().Format("15:04:05.000"), what))
					tl.mu.Unlock()
				}
				ran, _ := os.ReadFile(manifest) // the manifest the process runs
				for ctx.Err() == nil {
					time.Sleep(100 * time.Millisecond)
					now, err := os.ReadFile(manifest)
					switch here := err == nil; {
					case here && running && !bytes.Equal(now, ran):
						// The kubelet runs a changed manifest's pod anew.
						stop()
						ran = now
					case running && h.Exited(proc):
						// Also while starting: a process that dies before
						// it is healthy is started again, as the kubelet
						// does, never waited for.
						crashed(lastLines(h.Log(proc), 3))
						stop()
						pending = true
						time.Sleep(2 * time.Second)
					case !here && running:
						stop()
					case here && !running:
						ran = now
						if err := start(); err != nil {
							crashed("start: " + err.Error())
							pending = true
							time.Sleep(2 * time.Second)
							continue
						}
						running, pending = true, true
					case running && pending && healthy(ctx):
						tl.add(interval{what: n.Name + " " + comp, start: stopped, end: time.Now()})
						pending = false
					}
				}
			}()
		}
	}
}

// lastLines is the end of a log.
func lastLines(log string, n int) string {
	l := strings.Split(strings.TrimSpace(log), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// pollHA checks, every 100 ms, that etcd keeps quorum (2 of 3 members
// up) and has a healthy member (a leader election after a restart may
// take a few seconds; longer is a breach), and, while checkAPI is set,
// that a kube-apiserver is ready.
func pollHA(ctx context.Context, h *cluster.HA, tl *restartLog) {
	go func() {
		lastHealthy := time.Now()
		for ctx.Err() == nil {
			var up, healthy, ready int
			var wg sync.WaitGroup
			var mu sync.Mutex
			for i := range h.Nodes {
				wg.Add(2)
				go func() {
					defer wg.Done()
					answers, ok := h.EtcdHealth(ctx, i)
					mu.Lock()
					defer mu.Unlock()
					if answers {
						up++
					}
					if ok {
						healthy++
					}
				}()
				go func() {
					defer wg.Done()
					if h.APIReady(ctx, i) {
						mu.Lock()
						ready++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if ctx.Err() != nil {
				return
			}
			tl.mu.Lock()
			tl.polls++
			now := time.Now()
			if healthy > 0 {
				lastHealthy = now
			}
			at := now.Format("15:04:05.000")
			if up < 2 {
				tl.breaches = append(tl.breaches, fmt.Sprintf("%s: %d etcd members up", at, up))
			}
			if now.Sub(lastHealthy) > 5*time.Second {
				tl.breaches = append(tl.breaches, fmt.Sprintf("%s: no etcd member healthy since %s", at, lastHealthy.Format("15:04:05.000")))
			}
			if tl.checkAPI && ready < 1 {
				tl.breaches = append(tl.breaches, fmt.Sprintf("%s: no kube-apiserver ready", at))
			}
			tl.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
}
