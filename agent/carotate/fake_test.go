package carotate

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/kube/kubefake"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"

	cafiles "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

var (
	nodesGVR = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	t0       = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	errKill  = errors.New("killed")
)

// fakeCluster is a fake API with the rotation's ConfigMap kept with real
// resourceVersion semantics (the fake tracker has none), simulated nodes
// that report a phase done as soon as the command asks for it (unless
// held), and a way to "kill" the command after a number of writes.
type fakeCluster struct {
	t      *testing.T
	cs     *fake.Clientset
	clock  *testingclock.FakeClock
	oldCA  *pkitest.CA
	newCA  *x509.Certificate
	newKey crypto.Signer

	mu        sync.Mutex
	cm        *corev1.ConfigMap // guarded by mu
	rv        int               // guarded by mu
	writes    int               // successful writes (ConfigMap, RBAC), guarded by mu
	killAfter int               // writes after this many fail (0: never), guarded by mu
	kill      func()            // cancels the command's context at the kill, guarded by mu
	held      map[string]Phase  // node -> the phase it will not report done, guarded by mu
	noKey     map[string]bool   // control-plane nodes without the new key, guarded by mu
	manual    bool              // no node reports by itself, guarded by mu
	watches   chan string       // a watch on nodes started
}

func newFakeCluster(t *testing.T, nodes ...*corev1.Node) *fakeCluster {
	t.Helper()
	ca, err := pkitest.NewCA("kubernetes", t0.Add(-24*time.Hour), t0.Add(3650*24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	newCA, newKey, err := cafiles.NewCA(ca.Cert, ca.Key, t0)
	if err != nil {
		t.Fatal(err)
	}
	var objs []runtime.Object
	for _, n := range nodes {
		objs = append(objs, n, lease(n.Name, t0))
	}
	f := &fakeCluster{t: t, cs: fake.NewSimpleClientset(objs...), clock: testingclock.NewFakeClock(t0), oldCA: ca, newCA: newCA, newKey: newKey,
		held: map[string]Phase{}, noKey: map[string]bool{}, watches: make(chan string, 100)}
	f.cs.PrependReactor("*", "configmaps", f.configMaps)
	f.cs.PrependReactor("*", "roles", f.countWrite)
	f.cs.PrependReactor("*", "rolebindings", f.countWrite)
	f.cs.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		f.simulate()
		return false, nil, nil
	})
	f.cs.PrependWatchReactor("nodes", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := f.cs.Tracker().Watch(nodesGVR, "", a.(k8stesting.WatchActionImpl).ListOptions)
		f.watches <- f.phase()
		return true, w, err
	})
	return f
}

// node makes a Node with certagent's health condition.
func node(name string, controlPlane bool) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
	if controlPlane {
		n.Labels[ControlPlaneLabel] = ""
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: HealthConditionType, Status: corev1.ConditionTrue, Reason: "CertificatesHealthy"}}
	return n
}

func lease(name string, renewed time.Time) *coordinationv1.Lease {
	d := int32(40)
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: LeaseNamespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &d, RenewTime: &metav1.MicroTime{Time: renewed}}}
}

// rotator is a Rotator for this cluster; Prepare returns the same new CA
// every time, as staging on disk does on a rerun.
func (f *fakeCluster) rotator(out *syncBuffer) *Rotator {
	var w io.Writer = io.Discard
	if out != nil {
		w = out
	}
	return &Rotator{Client: kubefake.Wrap(f.cs), Clock: f.clock, Out: w, Kubeconfig: "admin.conf", Timeout: time.Minute, CA: "ca",
		Current: f.oldCA.Cert, CurrentKey: f.oldCA.Key, Prepare: func() (*x509.Certificate, error) { return f.newCA, nil },
		NewKey: func(next *x509.Certificate) (crypto.Signer, error) {
			if !next.Equal(f.newCA) {
				return nil, errors.New("not staged here")
			}
			return f.newKey, nil
		}}
}

func (f *fakeCluster) countWrite(a k8stesting.Action) (bool, runtime.Object, error) {
	if a.GetVerb() == "get" || a.GetVerb() == "list" {
		return false, nil, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.killAfter > 0 && f.writes >= f.killAfter {
		f.kill()
		return true, nil, errKill
	}
	f.writes++
	return false, nil, nil
}

// configMaps serves the one ConfigMap with resourceVersion checks.
func (f *fakeCluster) configMaps(a k8stesting.Action) (bool, runtime.Object, error) {
	if !isRotation(a) {
		return false, nil, nil // other ConfigMaps: the tracker's
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	gr := schema.GroupResource{Resource: "configmaps"}
	switch a := a.(type) {
	case k8stesting.GetAction:
		if f.cm == nil {
			return true, nil, apierrors.NewNotFound(gr, a.GetName())
		}
		return true, f.cm.DeepCopy(), nil
	case k8stesting.CreateAction, k8stesting.UpdateAction:
		if f.killAfter > 0 && f.writes >= f.killAfter {
			f.kill()
			return true, nil, errKill
		}
		cm := a.(interface{ GetObject() runtime.Object }).GetObject().(*corev1.ConfigMap).DeepCopy()
		if _, create := a.(k8stesting.CreateAction); create && a.GetVerb() == "create" && f.cm != nil {
			return true, nil, apierrors.NewAlreadyExists(gr, cm.Name)
		}
		if a.GetVerb() == "update" && (f.cm == nil || f.cm.ResourceVersion != cm.ResourceVersion) {
			return true, nil, apierrors.NewConflict(gr, cm.Name, errors.New("resourceVersion changed"))
		}
		f.rv++
		f.writes++
		cm.ResourceVersion = strconv.Itoa(f.rv)
		f.cm = cm
		return true, cm.DeepCopy(), nil
	}
	return true, nil, errors.New("unexpected configmap action " + a.GetVerb())
}

// isRotation reports whether a is about the rotation's ConfigMap.
func isRotation(a k8stesting.Action) bool {
	if a.GetNamespace() != Namespace {
		return false
	}
	switch a := a.(type) {
	case k8stesting.GetAction:
		return a.GetName() == ConfigMapName
	case interface{ GetObject() runtime.Object }:
		cm, ok := a.GetObject().(*corev1.ConfigMap)
		return ok && cm.Name == ConfigMapName
	}
	return false
}

// setData writes ConfigMap data directly (an edit by someone else).
func (f *fakeCluster) setData(data map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	f.cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: Namespace, ResourceVersion: strconv.Itoa(f.rv)}, Data: data}
}

// state is the ConfigMap's rotation (nil when none).
func (f *fakeCluster) state() *Cluster {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cm == nil {
		return nil
	}
	c, err := Parse(f.cm.Data)
	if err != nil {
		f.t.Fatalf("the command wrote an unparsable ConfigMap: %v", err)
	}
	return c
}

func (f *fakeCluster) phase() string {
	if c := f.state(); c != nil {
		return string(c.Phase)
	}
	return ""
}

// simulate makes every node not held report the cluster phase done.
func (f *fakeCluster) simulate() {
	f.mu.Lock()
	manual := f.manual
	f.mu.Unlock()
	if manual {
		return
	}
	c := f.state()
	if c == nil || c.Over() {
		return
	}
	f.mu.Lock()
	held, noKey := map[string]Phase{}, map[string]bool{}
	for k, v := range f.held {
		held[k] = v
	}
	for k, v := range f.noKey {
		noKey[k] = v
	}
	f.mu.Unlock()
	objs, _ := f.cs.Tracker().List(nodesGVR, schema.GroupVersionKind{Version: "v1", Kind: "Node"}, "")
	for _, n := range objs.(*corev1.NodeList).Items {
		if held[n.Name] == c.Phase {
			continue
		}
		_, cp := n.Labels[ControlPlaneLabel]
		f.report(n.Name, NodeReport{ID: c.ID, Phase: c.Phase, Done: true, HasNewKey: cp && !noKey[n.Name]})
	}
}

// report sets a node's rotation condition.
func (f *fakeCluster) report(name string, r NodeReport) {
	obj, err := f.cs.Tracker().Get(nodesGVR, "", name)
	if err != nil {
		f.t.Fatal(err)
	}
	n := obj.(*corev1.Node).DeepCopy()
	status, reason, msg := r.Condition()
	cond := corev1.NodeCondition{Type: ConditionType, Status: corev1.ConditionFalse, Reason: reason, Message: msg}
	if status {
		cond.Status = corev1.ConditionTrue
	}
	var conds []corev1.NodeCondition
	for _, c := range n.Status.Conditions {
		if c.Type != ConditionType {
			conds = append(conds, c)
		}
	}
	n.Status.Conditions = append(conds, cond)
	if err := f.cs.Tracker().Update(nodesGVR, n, ""); err != nil {
		f.t.Fatal(err)
	}
}

// waitWatch waits until the command watches nodes at phase p.
func (f *fakeCluster) waitWatch(p Phase) {
	f.t.Helper()
	for {
		select {
		case got := <-f.watches:
			if got == string(p) {
				return
			}
		case <-time.After(30 * time.Second):
			f.t.Fatalf("the command never watched nodes at phase %s", p)
		}
	}
}

func pkitestCertPEM(c *x509.Certificate) []byte { return pkitest.CertPEM(c) }

func condition(status bool, reason, msg string) corev1.NodeCondition {
	c := corev1.NodeCondition{Type: ConditionType, Status: corev1.ConditionFalse, Reason: reason, Message: msg}
	if status {
		c.Status = corev1.ConditionTrue
	}
	return c
}

// syncBuffer is progress output read while the command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor waits until the command printed line.
func (s *syncBuffer) waitFor(t *testing.T, line string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.String(), line) {
		if time.Now().After(deadline) {
			t.Fatalf("the command never printed %q:\n%s", line, s.String())
		}
		time.Sleep(time.Millisecond)
	}
}
