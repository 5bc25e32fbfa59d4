package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/rotate/pki/pkitest"
	"github.com/certagent/certagent/test/cluster"
)

// simNodes plays the node side of a rotation with each node's own
// credential (system:node:<name>): it watches the rotation's ConfigMap
// (what the RBAC the command creates allows) and reports the phase done
// on its own Node's condition, unless the test holds it at a phase.
type simNodes struct {
	t    *testing.T
	c    *cluster.Cluster
	mu   sync.Mutex
	held map[string]carotate.Phase // guarded by mu
	poke map[string]chan struct{}  // report again now; guarded by mu
}

// nodeClient is a client with the credential of node name.
func nodeClient(t *testing.T, c *cluster.Cluster, name string) kubernetes.Interface {
	t.Helper()
	ca := clusterCA(t, c)
	now := time.Now()
	cert, key, err := ca.Issue(pkitest.Spec{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: c.URL, TLSClientConfig: rest.TLSClientConfig{ServerName: "kubernetes", CAData: pkitest.CertPEM(ca.Cert),
		CertData: pkitest.CertPEM(cert), KeyData: pkitest.KeyPEM(key)}, Timeout: 30 * time.Second}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// join makes name a Node running certagent (its health condition) with a
// fresh kubelet Lease, and starts its simulated certagent.
func (s *simNodes) join(ctx context.Context, name string, controlPlane bool) {
	t, admin := s.t, s.c.Admin
	n, err := admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		n = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
		if controlPlane {
			n.Labels[carotate.ControlPlaneLabel] = ""
		}
		n, err = admin.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		t.Cleanup(func() {
			admin.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
			admin.CoordinationV1().Leases(carotate.LeaseNamespace).Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	_, controlPlane = n.Labels[carotate.ControlPlaneLabel]
	nc := nodeClient(t, s.c, name)
	if err := patchCondition(ctx, nc, name, carotate.HealthConditionType, true, "CertificatesHealthy", "all certificates healthy"); err != nil {
		t.Fatal(err)
	}
	dur, now := int32(3600), metav1.NewMicroTime(time.Now())
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: carotate.LeaseNamespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &dur, RenewTime: &now}}
	if _, err := admin.CoordinationV1().Leases(carotate.LeaseNamespace).Create(ctx, l, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
		old, _ := admin.CoordinationV1().Leases(carotate.LeaseNamespace).Get(ctx, name, metav1.GetOptions{})
		old.Spec = l.Spec
		_, err = admin.CoordinationV1().Leases(carotate.LeaseNamespace).Update(ctx, old, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.poke[name] = make(chan struct{}, 1)
	s.mu.Unlock()
	go s.follow(ctx, nc, name, controlPlane)
}

// follow watches the ConfigMap as the node and reports each phase.
func (s *simNodes) follow(ctx context.Context, nc kubernetes.Interface, name string, controlPlane bool) {
	sel := metav1.ListOptions{FieldSelector: "metadata.name=" + carotate.ConfigMapName}
	for ctx.Err() == nil {
		l, err := nc.CoreV1().ConfigMaps(carotate.Namespace).List(ctx, sel)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for _, cm := range l.Items {
			s.report(ctx, nc, name, controlPlane, cm.Data)
		}
		opts := sel
		opts.ResourceVersion = l.ResourceVersion
		w, err := nc.CoreV1().ConfigMaps(carotate.Namespace).Watch(ctx, opts)
		if err != nil {
			continue
		}
		s.events(ctx, w, nc, name, controlPlane)
		w.Stop()
	}
}

// events reports on each change of the ConfigMap until the watch ends or
// the node is poked (then it lists again).
func (s *simNodes) events(ctx context.Context, w watch.Interface, nc kubernetes.Interface, name string, controlPlane bool) {
	s.mu.Lock()
	poke := s.poke[name]
	s.mu.Unlock()
	for {
		select {
		case <-poke:
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				return
			}
			if cm, ok := ev.Object.(*corev1.ConfigMap); ok {
				s.report(ctx, nc, name, controlPlane, cm.Data)
			}
		}
	}
}

func (s *simNodes) report(ctx context.Context, nc kubernetes.Interface, name string, controlPlane bool, data map[string]string) {
	c, err := carotate.Parse(data)
	s.mu.Lock()
	held := s.held[name]
	s.mu.Unlock()
	if err != nil || held == c.Phase {
		return
	}
	status, reason, msg := carotate.NodeReport{ID: c.ID, Phase: c.Phase, Done: true, HasNewKey: controlPlane}.Condition()
	patchCondition(ctx, nc, name, carotate.ConditionType, status, reason, msg)
}

// hold keeps node name from reporting phase p done ("" releases it).
func (s *simNodes) hold(name string, p carotate.Phase) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[name] = p
	select {
	case s.poke[name] <- struct{}{}:
	default:
	}
}

// patchCondition sets one condition on the node's status (what the
// node's credential may do to its own Node).
func patchCondition(ctx context.Context, cs kubernetes.Interface, node, typ string, ok bool, reason, msg string) error {
	status := corev1.ConditionFalse
	if ok {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{Type: corev1.NodeConditionType(typ),
		Status: status, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}}}})
	_, err := cs.CoreV1().Nodes().PatchStatus(ctx, node, patch)
	return err
}

// TestCARotateAgainstAPIServer runs `certagent ca rotate` against the real
// kube-apiserver with simulated nodes: it creates the ConfigMap and the
// RBAC, a node's credential can read the ConfigMap but not change it,
// --until stops, a lagging node times the wait out (exit 7, named), and a
// rerun finishes the rotation.
func TestCARotateAgainstAPIServer(t *testing.T) {
	c := sharedCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := c.Admin
	root, sim := caRotationSetup(t, ctx, c)
	r := run(t, certagentBin, "ca", "rotate", "--root", root, "--until", "trust", "--timeout", "60s")
	if r.code != 0 {
		t.Fatalf("rotate --until trust: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	cm, err := admin.CoreV1().ConfigMaps(carotate.Namespace).Get(ctx, carotate.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := carotate.Parse(cm.Data)
	if err != nil || st.Phase != carotate.Trust || len(st.PhaseTimes) != 2 || !slices.Contains(st.NodesDone, "carot-w1") {
		t.Fatalf("after --until trust: %+v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/kubernetes/pki/ca.next.key")); err != nil {
		t.Errorf("the new CA key was not staged: %v", err)
	}
	if !strings.Contains(cm.Data["newCA"], "BEGIN CERTIFICATE") || strings.Contains(fmt.Sprint(cm.Data), "PRIVATE KEY") {
		t.Error("the ConfigMap must hold the new CA's certificate and no key")
	}
	checkNodeAccess(t, ctx, c)

	// A node that lags: the wait runs out and names it.
	sim.hold("carot-w1", carotate.Reissue)
	r = run(t, certagentBin, "ca", "rotate", "--root", root, "--timeout", "5s")
	if r.code != 7 || !strings.Contains(r.stderr, "node carot-w1: still at trust") {
		t.Fatalf("a lagging node: exit %d, want 7 naming carot-w1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// The rerun goes on; kube-apiserver restarts while it waits at finish.
	r = rerunThroughRestart(t, ctx, c, sim, root)
	// Whether one of its requests met the restart ("trying again") depends
	// on where the command was when kube-apiserver stopped (a watch that is
	// re-established sees no error): it must finish either way.
	if r.code != 0 || !strings.Contains(r.stdout, "resuming rotation "+st.ID) || !strings.Contains(r.stdout, "rotation "+st.ID+" of ca done") {
		t.Fatalf("rerun through an API server restart: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("the rerun's output:\n%s", r.stdout)
	r = run(t, certagentBin, "ca", "status", "--root", root, "-o", "json")
	var doc carotate.StatusDoc
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 0 || doc.Rotation == nil || doc.Rotation.Phase != carotate.Done || len(doc.Rotation.PhaseTimes) != 5 {
		t.Fatalf("status: exit %d %v\n%s", r.code, err, r.stdout)
	}
	for _, pt := range doc.Rotation.PhaseTimes {
		t.Logf("phase %s: %.0fs", pt.Phase, pt.WallSeconds)
	}
}

// caRotationSetup makes the command's node (the cluster's CA and the
// admin credential) and simulated certagents on every Node: those other
// tests left behind, a control-plane node and a worker.
func caRotationSetup(t *testing.T, ctx context.Context, c *cluster.Cluster) (string, *simNodes) {
	t.Helper()
	admin := c.Admin
	t.Cleanup(func() {
		bg := context.Background()
		admin.CoreV1().ConfigMaps(carotate.Namespace).Delete(bg, carotate.ConfigMapName, metav1.DeleteOptions{})
		admin.RbacV1().Roles(carotate.Namespace).Delete(bg, carotate.RBACName, metav1.DeleteOptions{})
		admin.RbacV1().RoleBindings(carotate.Namespace).Delete(bg, carotate.RBACName, metav1.DeleteOptions{})
	})
	root := t.TempDir()
	for _, f := range []string{"pki/ca.crt", "pki/ca.key", "admin.conf"} {
		copyFile(t, filepath.Join(c.Root, "etc/kubernetes", f), filepath.Join(root, "etc/kubernetes", f))
	}
	if err := c.PointKubeconfig(filepath.Join(root, "etc/kubernetes/admin.conf")); err != nil {
		t.Fatal(err)
	}
	sim := &simNodes{t: t, c: c, held: map[string]carotate.Phase{}, poke: map[string]chan struct{}{}}
	existing, err := admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range existing.Items {
		sim.join(ctx, n.Name, false)
	}
	sim.join(ctx, "carot-cp1", true)
	sim.join(ctx, "carot-w1", false)
	return root, sim
}

// rerunThroughRestart reruns the command with carot-w1 held at finish,
// restarts kube-apiserver once the command waits there, then lets
// carot-w1 finish.
func rerunThroughRestart(t *testing.T, ctx context.Context, c *cluster.Cluster, sim *simNodes, root string) result {
	t.Helper()
	sim.hold("carot-w1", carotate.Finish)
	cmd := exec.Command(certagentBin, "ca", "rotate", "--root", root, "--timeout", "120s")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitRotationPhase(t, ctx, c.Admin, carotate.Finish)
	c.StopAPIServer()
	if err := c.StartAPIServer(kubeBin); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	sim.hold("carot-w1", "")
	cmd.Wait()
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// checkNodeAccess: a node may get, list and watch the rotation's
// ConfigMap, and nothing more.
func checkNodeAccess(t *testing.T, ctx context.Context, c *cluster.Cluster) {
	t.Helper()
	nc := nodeClient(t, c, "carot-w1")
	cms := nc.CoreV1().ConfigMaps(carotate.Namespace)
	cm, err := cms.Get(ctx, carotate.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("a node cannot read the rotation: %v", err)
	}
	cm.Data["phase"] = "finish"
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a node's update: %v, want forbidden", err)
	}
	if err := cms.Delete(ctx, carotate.ConfigMapName, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a node's delete: %v, want forbidden", err)
	}
	if _, err := cms.Get(ctx, "extension-apiserver-authentication", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a node reads another ConfigMap: %v, want forbidden", err)
	}
	if _, err := cms.List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("a node lists every ConfigMap: %v, want forbidden", err)
	}
}

// waitRotationPhase waits until the rotation's ConfigMap is at phase p.
func waitRotationPhase(t *testing.T, ctx context.Context, admin kubernetes.Interface, p carotate.Phase) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	sel := metav1.ListOptions{FieldSelector: "metadata.name=" + carotate.ConfigMapName}
	for ctx.Err() == nil {
		l, err := admin.CoreV1().ConfigMaps(carotate.Namespace).List(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Items) == 1 && l.Items[0].Data["phase"] == string(p) {
			return
		}
		sel.ResourceVersion = l.ResourceVersion
		w, err := admin.CoreV1().ConfigMaps(carotate.Namespace).Watch(ctx, sel)
		if err != nil {
			t.Fatal(err)
		}
		for ev := range w.ResultChan() {
			if cm, ok := ev.Object.(*corev1.ConfigMap); ok && cm.Data["phase"] == string(p) {
				w.Stop()
				return
			}
		}
		sel.ResourceVersion = ""
	}
	t.Fatalf("the rotation never reached phase %s", p)
}
