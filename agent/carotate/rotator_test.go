package carotate

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/kube/kubefake"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/kube"

	cafiles "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// run runs r in the background and returns its result channel.
func run(r *Rotator) chan error {
	done := make(chan error, 1)
	go func() {
		_, err := r.Run(context.Background())
		done <- err
	}()
	return done
}

func result(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("the command did not return")
		return nil
	}
}

// startHeld starts a rotation on cp1, w1 and the workers named in more,
// every node but w1 and those in more reporting each phase done, and
// returns once the command watches the nodes at phase p, where they are
// held.
func startHeld(t *testing.T, p Phase, more ...string) (*fakeCluster, *syncBuffer, chan error) {
	t.Helper()
	nodes := []*corev1.Node{node("cp1", true)}
	for _, n := range append([]string{"w1"}, more...) {
		nodes = append(nodes, node(n, false))
	}
	f := newFakeCluster(t, nodes...)
	for _, n := range append([]string{"w1"}, more...) {
		f.held[n] = p
	}
	out := &syncBuffer{}
	done := run(f.rotator(out))
	f.waitWatch(p)
	return f, out, done
}

func TestPhasesAdvanceOnlyWhenEveryNodeIsDone(t *testing.T) {
	f, out, done := startHeld(t, Trust)
	c := f.state()
	if c.Phase != Trust || !slices.Equal(c.NodesDone, []string{"cp1"}) || !slices.Equal(c.Nodes, []string{"cp1", "w1"}) {
		t.Fatalf("with w1 not done: phase %s, nodes %v, nodesDone %v; want trust, [cp1 w1], [cp1]", c.Phase, c.Nodes, c.NodesDone)
	}
	// An unfinished report keeps the phase where it is.
	f.report("w1", NodeReport{ID: c.ID, Phase: Trust, Left: "restart kubelet"})
	f.clock.Step(time.Second)
	f.report("w1", NodeReport{ID: c.ID, Phase: Trust, Done: true})
	if err := result(t, done); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	c = f.state()
	if c.Phase != Done || c.ID != Fingerprint(f.newCA) {
		t.Fatalf("phase %s id %s, want done with the new CA's id", c.Phase, c.ID)
	}
	var phases []Phase
	for _, pt := range c.Times() {
		phases = append(phases, pt.Phase)
	}
	if !slices.Equal(phases, []Phase{Prepare, Trust, Reissue, Finish, Done}) {
		t.Errorf("phaseTimes %v", c.PhaseTimes)
	}
	for _, want := range []string{"waiting on w1: still at prepare", "waiting on w1: restart kubelet", "node w1 done with trust", "phase reissue started", "done"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, out.String())
		}
	}
}

// TestResumeAfterKill kills the command after each of its writes in
// turn; a rerun finishes the same rotation, each phase recorded once.
func TestResumeAfterKill(t *testing.T) {
	full := newFakeCluster(t, node("cp1", true), node("w1", false))
	if _, err := full.rotator(nil).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	writes := full.writes
	t.Logf("a whole rotation of two nodes: %d writes (RBAC and ConfigMap)", writes)
	if writes < 8 {
		t.Fatalf("a whole rotation made only %d writes", writes)
	}
	for k := 1; k < writes; k++ {
		f := newFakeCluster(t, node("cp1", true), node("w1", false))
		// The kill: the write fails and the command stops there.
		ctx, cancel := context.WithCancel(context.Background())
		f.killAfter, f.kill = k, cancel
		if _, err := f.rotator(nil).Run(ctx); !errors.Is(err, errKill) && !errors.Is(err, context.Canceled) {
			t.Fatalf("kill after write %d: %v", k, err)
		}
		f.mu.Lock()
		f.killAfter = 0
		f.mu.Unlock()
		var out syncBuffer
		if _, err := f.rotator(&out).Run(context.Background()); err != nil {
			t.Fatalf("rerun after a kill after write %d: %v\n%s", k, err, out.String())
		}
		c := f.state()
		if c.Phase != Done || c.ID != Fingerprint(f.newCA) || len(c.PhaseTimes) != 5 {
			t.Fatalf("rerun after a kill after write %d: phase %s, phaseTimes %v", k, c.Phase, c.PhaseTimes)
		}
		if k > 2 && !strings.Contains(out.String(), "resuming rotation") {
			t.Errorf("rerun after write %d did not resume:\n%s", k, out.String())
		}
	}
}

func TestFinishedRotationIsNotStartedAgain(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true))
	r := f.rotator(nil)
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := f.writes
	// The node now uses the new CA.
	r.Current, r.CurrentKey = f.newCA, f.newKey
	if _, err := r.Run(context.Background()); err != nil || f.writes != before {
		t.Fatalf("rerun of a finished rotation: %v, %d writes (want none)", err, f.writes-before)
	}
	// --new starts another rotation, from the CA now in use.
	third, thirdKey, err := cafiles.NewCA(f.newCA, f.newKey, t0)
	if err != nil {
		t.Fatal(err)
	}
	r.New, r.Prepare = true, func() (*x509.Certificate, error) { return third, nil }
	r.NewKey = func(*x509.Certificate) (crypto.Signer, error) { return thirdKey, nil }
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := f.state(); c.ID != Fingerprint(third) || c.Phase != Done || len(c.PhaseTimes) != 5 {
		t.Fatalf("--new: rotation %s at %s, phaseTimes %v", c.ID, c.Phase, c.PhaseTimes)
	}
}

func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fakeCluster, r *Rotator)
		want  []string
	}{
		{"external CA", func(f *fakeCluster, r *Rotator) {
			r.Refusals = []string{"external CA: /etc/kubernetes/pki/ca.crt has no key"}
		}, []string{"external CA: /etc/kubernetes/pki/ca.crt has no key"}},
		{"node without certagent", func(f *fakeCluster, r *Rotator) {
			n := node("w2", false)
			n.Status.Conditions = nil
			f.cs.Tracker().Add(n)
			f.cs.Tracker().Add(lease("w2", t0))
		}, []string{"node w2 does not run certagent: it has no CertificateRotationHealthy condition"}},
		{"stale lease", func(f *fakeCluster, r *Rotator) {
			f.cs.Tracker().Add(node("w2", false))
			f.cs.Tracker().Add(lease("w2", t0.Add(-5*time.Minute)))
		}, []string{"node w2 does not answer: its kubelet Lease was last renewed 5m0s ago (it lasts 40s)"}},
		{"no lease", func(f *fakeCluster, r *Rotator) {
			f.cs.Tracker().Add(node("w2", false))
		}, []string{"node w2 does not answer: no kubelet Lease in kube-node-lease"}},
		{"admin credential forbidden", func(f *fakeCluster, r *Rotator) {
			f.cs.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, ConfigMapName, errors.New("no"))
			})
		}, []string{"the admin credential admin.conf is not allowed to"}},
		{"two at once", func(f *fakeCluster, r *Rotator) {
			r.Refusals = []string{"external CA: x"}
			f.cs.Tracker().Add(node("w2", false))
		}, []string{"external CA: x", "node w2 does not answer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeCluster(t, node("cp1", true), node("w1", false))
			r := f.rotator(nil)
			tc.setup(f, r)
			defer f.stepWhileWaiting()()
			_, err := r.Run(context.Background())
			var re *RefusedError
			if !errors.As(err, &re) || len(re.Reasons) != len(tc.want) {
				t.Fatalf("got %v, want refused with %d reasons", err, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(re.Reasons[i], w) {
					t.Errorf("reason %d: %q, want %q...", i, re.Reasons[i], w)
				}
			}
			if f.state() != nil || f.writes != 0 {
				t.Errorf("a refused start wrote %d times", f.writes)
			}
		})
	}
}

// stepWhileWaiting moves the fake clock on by retryAfter whenever the
// command waits on it (a retry), until the returned function is called.
func (f *fakeCluster) stepWhileWaiting() func() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if f.clock.HasWaiters() {
				f.clock.Step(retryAfter)
			}
		}
	}()
	return func() { close(stop); <-done }
}

// TestFirstReadForbiddenWhileStarting: a kube-apiserver that just
// started answers 403 until its authorizer is ready: the command's first
// read tries again instead of refusing (exit 6).
func TestFirstReadForbiddenWhileStarting(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true), node("w1", false))
	var denied atomic.Int32
	f.cs.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if denied.Add(1) <= 3 {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, ConfigMapName, errors.New("RBAC: not ready"))
		}
		return false, nil, nil
	})
	r := f.rotator(nil)
	defer f.stepWhileWaiting()()
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatalf("a 403 of a starting kube-apiserver: %v", err)
	}
	if denied.Load() < 4 {
		t.Errorf("the first read was tried %d times", denied.Load())
	}
}

func TestRefusedWhenPrepareNotDone(t *testing.T) {
	f, out, done := startHeld(t, Prepare)
	c := f.state()
	f.report("w1", NodeReport{ID: c.ID, Phase: Prepare, Blocked: "newCA does not verify"})
	out.waitFor(t, "waiting on w1: blocked: newCA does not verify")
	waitTimer(t, f)
	f.clock.Step(time.Minute + time.Second)
	err := result(t, done)
	var re *RefusedError
	if !errors.As(err, &re) || len(re.Reasons) != 1 || !strings.Contains(re.Reasons[0], "node w1: blocked: newCA does not verify (did not report prepare done within 1m0s)") {
		t.Fatalf("got %v", err)
	}
	if f.state().Phase != Prepare {
		t.Errorf("phase moved to %s", f.state().Phase)
	}
}

// waitTimer waits until the command waits on the fake clock.
func waitTimer(t *testing.T, f *fakeCluster) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !f.clock.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("the command never waited on the clock")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestTimeoutNamesLaggingNodes(t *testing.T) {
	f, out, done := startHeld(t, Reissue, "w2")
	id := f.state().ID
	f.report("w1", NodeReport{ID: id, Phase: Reissue, Left: "kubelet client certificate still from the old CA"})
	out.waitFor(t, "waiting on w1: kubelet client certificate still from the old CA")
	waitTimer(t, f)
	f.clock.Step(2 * time.Minute)
	err := result(t, done)
	var te *TimeoutError
	if !errors.As(err, &te) || te.Phase != Reissue || !slices.Equal(te.Lagging, []string{
		"node w1: kubelet client certificate still from the old CA", "node w2: still at trust"}) {
		t.Fatalf("got %#v", err)
	}
}

func TestControlPlaneWithoutNewKeyRefusedBeforeReissue(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true), node("cp2", true), node("w1", false))
	f.noKey["cp2"] = true
	var out syncBuffer
	_, err := f.rotator(&out).Run(context.Background())
	var re *RefusedError
	if !errors.As(err, &re) || len(re.Reasons) != 1 || !strings.HasPrefix(re.Reasons[0], "control-plane node cp2 does not have the new CA key at <pki>/ca.next.key") {
		t.Fatalf("got %v", err)
	}
	c := f.state()
	if c.Phase != Trust || !c.finished(Trust) {
		t.Errorf("phase %s, trust recorded %v; want trust, done", c.Phase, c.finished(Trust))
	}
	if !strings.Contains(out.String(), "warning: control-plane node cp2") {
		t.Errorf("no early warning after prepare:\n%s", out.String())
	}
	// Once the key is there, a rerun goes on.
	f.noKey["cp2"] = false
	f.report("cp2", NodeReport{ID: c.ID, Phase: Trust, Done: true, HasNewKey: true})
	if _, err := f.rotator(nil).Run(context.Background()); err != nil || f.state().Phase != Done {
		t.Fatalf("rerun: %v", err)
	}
}

func TestRotationInProgressRefused(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true))
	r := f.rotator(nil)
	r.Until = Prepare
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Another CA.
	other := f.rotator(nil)
	other.CA = "front-proxy-ca"
	_, err := other.Run(context.Background())
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(re.Error(), "a rotation of ca (id "+f.state().ID+") is in progress") {
		t.Fatalf("another CA: %v", err)
	}
	// The same CA, another new CA supplied.
	g := newFakeCluster(t)
	other = f.rotator(nil)
	other.Supplied = g.newCA
	if _, err = other.Run(context.Background()); !errors.As(err, &re) || !strings.Contains(re.Error(), "a different rotation of ca (id "+f.state().ID+")") {
		t.Fatalf("another id: %v", err)
	}
	// The same one supplied again resumes.
	same := f.rotator(nil)
	same.Supplied = f.newCA
	if _, err := same.Run(context.Background()); err != nil || f.state().Phase != Done {
		t.Fatalf("resume with the same CA: %v", err)
	}
}

func TestOldRotationReportsIgnored(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true), node("w1", false))
	f.held["w1"] = Prepare
	// w1 still shows a finished earlier rotation.
	f.report("w1", NodeReport{ID: "0123", Phase: Finish, Done: true})
	done := run(f.rotator(nil))
	f.waitWatch(Prepare)
	c := f.state()
	if c.Phase != Prepare || slices.Contains(c.NodesDone, "w1") {
		t.Fatalf("a report of another rotation counted: phase %s, done %v", c.Phase, c.NodesDone)
	}
	f.report("w1", NodeReport{ID: c.ID, Phase: Prepare, Done: true})
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestInvalidConfigMap(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true))
	r := f.rotator(nil)
	r.Until = Prepare
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	good := f.state().Data()
	other := newFakeCluster(t)
	// The new CA's key chosen by a key that is not the old CA's.
	impostor, _ := pkitest.NewCA("kubernetes", t0.Add(-time.Hour), t0.Add(time.Hour), pkitest.ECDSA)
	forged, err := cafiles.Prove(impostor.Cert, impostor.Key, f.newCA, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, key, value, want string
	}{
		{"phase", "phase", "halfway", `phase "halfway" is not one of`},
		{"id", "id", "abc", "id abc is not the fingerprint of newCA"},
		{"newCA not a certificate", "newCA", "hello", "newCA: "},
		{"newCA another CA", "newCA", string(pkitestCertPEM(other.newCA)), "is not the fingerprint"},
		{"ca", "ca", "sa", `ca "sa" is not one of`},
		{"nodesDone", "nodesDone", "intruder", `nodesDone: "intruder" is not in nodes`},
		{"phaseTimes", "phaseTimes", "trust yesterday today", "phaseTimes:"},
		{"since", "since", "now", "since:"},
		// A ConfigMap of an older certagent, or one whose proof the old
		// CA's key did not sign.
		{"no proof", "newCAProof", "", "no newCAProof"},
		{"forged proof", "newCAProof", string(forged), "not signed by the old CA"},
		// A phase moved on by a ConfigMap writer without the new CA's
		// key, or no phase proof (a ConfigMap of an older certagent).
		{"phase moved", "phase", "finish", "phaseProof is not the new CA key's signature"},
		{"no phase proof", "phaseProof", "", "no phaseProof"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := map[string]string{}
			for k, v := range good {
				data[k] = v
			}
			data[tc.key] = tc.value
			f.setData(data)
			_, err := f.rotator(nil).Run(context.Background())
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "fix it or delete it") {
				t.Fatalf("got %v, want ErrInvalid with %q", err, tc.want)
			}
		})
	}
}

func TestConflictWithAnotherWriter(t *testing.T) {
	f, _, done := startHeld(t, Trust)
	// Someone else moves the rotation on behind the command's back.
	c := f.state()
	c.Phase = Finish
	if err := c.SignPhase(f.newKey); err != nil { // another command, with the key
		t.Fatal(err)
	}
	f.setData(c.Data())
	f.report("w1", NodeReport{ID: c.ID, Phase: Trust, Done: true})
	err := result(t, done)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "at phase finish") {
		t.Fatalf("got %v, want a conflict naming the phase found", err)
	}
}

func TestNodeJoinsAndLeaves(t *testing.T) {
	f, out, done := startHeld(t, Trust)
	if err := f.cs.Tracker().Delete(nodesGVR, "", "w1"); err != nil {
		t.Fatal(err)
	}
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
	if c := f.state(); !slices.Equal(c.Nodes, []string{"cp1"}) || !strings.Contains(out.String(), "node w1 left the cluster") {
		t.Fatalf("nodes %v\n%s", c.Nodes, out.String())
	}
}

// TestAPIOutageRiddenThrough: the API server restarts during a rotation
// (the rotation restarts it) and the credential is re-signed: failed
// requests are tried again with a client built anew, and the rotation
// goes on.
func TestAPIOutageRiddenThrough(t *testing.T) {
	defer func(d time.Duration) { retryAfter = d }(retryAfter)
	retryAfter = time.Millisecond
	f := newFakeCluster(t, node("cp1", true), node("w1", false))
	f.held["w1"] = Trust
	for _, n := range []string{"cp1", "w1"} {
		f.cs.Tracker().Update(schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}, lease(n, time.Now()), LeaseNamespace)
	}
	var mu sync.Mutex
	failures := map[string]int{"update/configmaps": 3, "list/nodes": 2, "watch/nodes": 2}
	unavailable := func(a k8stesting.Action) bool {
		mu.Lock()
		defer mu.Unlock()
		k := a.GetVerb() + "/" + a.GetResource().Resource
		if failures[k] > 0 && f.state() != nil {
			failures[k]--
			return true
		}
		return false
	}
	for _, res := range []string{"configmaps", "nodes"} {
		f.cs.PrependReactor("*", res, func(a k8stesting.Action) (bool, runtime.Object, error) {
			return unavailable(a), nil, apierrors.NewServiceUnavailable("restarting")
		})
	}
	f.cs.PrependWatchReactor("nodes", func(a k8stesting.Action) (bool, watch.Interface, error) {
		return unavailable(a), nil, apierrors.NewServiceUnavailable("restarting")
	})
	var out syncBuffer
	r := f.rotator(&out)
	r.Clock = clock.RealClock{}
	var connects atomic.Int32
	r.Connect = func() (kube.Interface, error) { connects.Add(1); return kubefake.Wrap(f.cs), nil }
	done := run(r)
	// The watch that follows two failed ones sees w1 done.
	f.waitWatch(Trust)
	f.report("w1", NodeReport{ID: f.state().ID, Phase: Trust, Done: true})
	if err := result(t, done); err != nil {
		t.Fatal(err)
	}
	if c := f.state(); c.Phase != Done || connects.Load() < 7 {
		t.Fatalf("phase %s, %d new clients; want done after 7 failures, each followed by a new client\n%s", c.Phase, connects.Load(), out.String())
	}
	for k, n := range failures {
		if n != 0 {
			t.Errorf("%s: %d failures left unused", k, n)
		}
	}
}

// TestUntil: --until stops once that phase is done everywhere, a rerun
// with it changes nothing, and one with an earlier phase does not go on.
func TestUntil(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true))
	for _, until := range []Phase{Trust, Trust, Prepare} {
		r := f.rotator(nil)
		r.Until = until
		if _, err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if c := f.state(); c.Phase != Trust || len(c.PhaseTimes) != 2 {
			t.Fatalf("--until %s: phase %s, phaseTimes %v; want trust, 2", until, c.Phase, c.PhaseTimes)
		}
	}
	if _, err := f.rotator(nil).Run(context.Background()); err != nil || f.state().Phase != Done {
		t.Fatalf("without --until: %v", err)
	}
}

// TestTimeoutWhileAPIDown: a wait that ends while the API fails says so.
func TestTimeoutWhileAPIDown(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true))
	f.cs.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if c := f.state(); c != nil && c.Phase == Trust {
			return true, nil, apierrors.NewServiceUnavailable("down")
		}
		return false, nil, nil
	})
	out := &syncBuffer{}
	done := run(f.rotator(out))
	out.waitFor(t, "down; trying again until the wait ends")
	f.clock.Step(2 * time.Minute)
	err := result(t, done)
	var te *TimeoutError
	if !errors.As(err, &te) || te.Phase != Trust || te.API == nil || !strings.Contains(err.Error(), "the API did not answer: list nodes: down") {
		t.Fatalf("got %v", err)
	}
}

// TestRerunWithSuppliedCAAfterSignerSwitch: a rerun with the rotation's
// own --new-ca-cert/--new-ca-key after this node's signer switch (the CA
// in use is then the supplied one) resumes: the supplied CA is checked
// against the rotation's oldCA and nothing is staged again. A new
// rotation whose supplied CA is the one in use is refused.
func TestRerunWithSuppliedCAAfterSignerSwitch(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true), node("w1", false))
	r := f.rotator(nil)
	r.Until, r.Supplied = Reissue, f.newCA
	if _, err := r.Run(context.Background()); err != nil || f.state().Phase != Reissue {
		t.Fatalf("to reissue: %v", err)
	}
	staged := 0
	rerun := f.rotator(nil)
	rerun.Current, rerun.Supplied = f.newCA, f.newCA // the signer switched here
	rerun.Prepare = func() (*x509.Certificate, error) { staged++; return nil, errors.New("staged again") }
	if _, err := rerun.Run(context.Background()); err != nil || f.state().Phase != Done || staged != 0 {
		t.Fatalf("rerun after the switch: %v, phase %s, staged %d times", err, f.state().Phase, staged)
	}
	// A new rotation "to" the CA in use.
	g := newFakeCluster(t, node("cp1", true))
	same := g.rotator(nil)
	same.Supplied = g.oldCA.Cert
	_, err := same.Run(context.Background())
	var re *RefusedError
	if !errors.As(err, &re) || len(re.Reasons) != 1 || !strings.Contains(re.Reasons[0], "the supplied CA (--new-ca-cert, --new-ca-key): the new CA has the old CA's key") {
		t.Fatalf("the CA in use supplied as the new one: %v", err)
	}
	if g.state() != nil {
		t.Error("a refused rotation was started")
	}
}
