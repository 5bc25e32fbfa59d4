package coord

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/kube/kubefake"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testclock "k8s.io/utils/clock/testing"
)

var leaseGR = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}

// optimistic makes the fake clientset behave as the API server does with
// Leases: every write gets a new resourceVersion, and an update carrying
// an old one is refused with a conflict.
func optimistic(cs *fake.Clientset) {
	var mu sync.Mutex
	rv := 0
	gvr := leaseGR.WithVersion("v1")
	cs.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		l := a.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		rv++
		l.ResourceVersion = strconv.Itoa(rv)
		if err := cs.Tracker().Create(gvr, l, l.Namespace); err != nil {
			return true, nil, err
		}
		return true, l, nil
	})
	cs.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		cur, err := cs.Tracker().Get(gvr, l.Namespace, l.Name)
		if err != nil {
			return true, nil, err
		}
		if cur.(*coordinationv1.Lease).ResourceVersion != l.ResourceVersion {
			return true, nil, apierrors.NewConflict(leaseGR, l.Name, nil)
		}
		rv++
		l.ResourceVersion = strconv.Itoa(rv)
		return true, l, cs.Tracker().Update(gvr, l, l.Namespace)
	})
}

func newLocks(t *testing.T, names ...string) (*fake.Clientset, *testclock.FakeClock, []*LeaseLock) {
	t.Helper()
	cs := fake.NewClientset()
	optimistic(cs)
	clk := testclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var out []*LeaseLock
	for _, n := range names {
		out = append(out, &LeaseLock{Client: kubefake.Wrap(cs).CoordinationV1(), Namespace: "kube-system", Name: "certagent-restart",
			Identity: n, Duration: 15 * time.Second, Clock: clk})
	}
	return cs, clk, out
}

func try(t *testing.T, l *LeaseLock) (Holder, bool) {
	t.Helper()
	h, ok, err := l.TryAcquire(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", l.Identity, err)
	}
	return h, ok
}

func TestLeaseOneHolderReleaseAndRenew(t *testing.T) {
	_, clk, l := newLocks(t, "a", "b")
	if h, ok := try(t, l[0]); !ok || h.Identity != "a" {
		t.Fatalf("a did not create and take the Lease: %+v %v", h, ok)
	}
	since := clk.Now()
	clk.Step(10 * time.Second)
	if h, ok := try(t, l[1]); ok || h.Identity != "a" || !h.Since.Equal(since) {
		t.Fatalf("b took a held Lease, or was not told who holds it: %+v %v", h, ok)
	}
	clk.Step(10 * time.Second)
	if h, ok := try(t, l[0]); !ok || !h.Since.Equal(since) {
		t.Fatalf("a could not renew, or its acquireTime moved: %+v %v", h, ok)
	}
	clk.Step(10 * time.Second) // 20 s since b first saw a, but a renewed in between
	if _, ok := try(t, l[1]); ok {
		t.Fatal("b took a Lease renewed 10 s ago")
	}
	if err := l[0].Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h, ok := try(t, l[1]); !ok || h.Identity != "b" {
		t.Fatalf("b could not take a released Lease: %+v %v", h, ok)
	}
	if err := l[0].Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h, ok := try(t, l[0]); ok || h.Identity != "b" {
		t.Fatalf("a's Release freed b's Lease: %+v %v", h, ok)
	}
}

// TestLeaseTakenOverAfterExpiry: a holder that stops renewing loses the
// Lease once the duration has passed on the waiting node's own clock.
func TestLeaseTakenOverAfterExpiry(t *testing.T) {
	cs, clk, l := newLocks(t, "a", "b")
	try(t, l[0])
	if _, ok := try(t, l[1]); ok {
		t.Fatal("b took a fresh Lease")
	}
	clk.Step(15 * time.Second)
	if _, ok := try(t, l[1]); ok {
		t.Fatal("b took the Lease at exactly its duration")
	}
	clk.Step(time.Second)
	h, ok := try(t, l[1])
	if !ok || h.Identity != "b" || !h.Since.Equal(clk.Now()) {
		t.Fatalf("b did not take over the expired Lease: %+v %v", h, ok)
	}
	lease, _ := cs.CoordinationV1().Leases("kube-system").Get(context.Background(), "certagent-restart", metav1GetOptions)
	if *lease.Spec.LeaseTransitions != 1 {
		t.Errorf("transitions %d, want 1", *lease.Spec.LeaseTransitions)
	}
	if _, ok := try(t, l[0]); ok {
		t.Fatal("a took back the Lease b holds")
	}
}

// TestLeaseRaceLosesOnConflict: two nodes read the same free Lease; the
// one that writes second carries a stale resourceVersion and is refused.
func TestLeaseRaceLosesOnConflict(t *testing.T) {
	cs, _, l := newLocks(t, "a", "b")
	try(t, l[0])
	if err := l[0].Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	gvr := leaseGR.WithVersion("v1")
	obj, _ := cs.Tracker().Get(gvr, "kube-system", "certagent-restart")
	stale := obj.(*coordinationv1.Lease)
	once := false
	// b reads the free Lease; a writes it before b does (the reactor
	// writes the tracker directly: the fake clientset is not reentrant).
	cs.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if once {
			return false, nil, nil
		}
		once = true
		taken := stale.DeepCopy()
		a := "a"
		taken.Spec.HolderIdentity, taken.ResourceVersion = &a, "999"
		if err := cs.Tracker().Update(gvr, taken, "kube-system"); err != nil {
			t.Error(err)
		}
		return true, stale.DeepCopy(), nil
	})
	if h, ok := try(t, l[1]); ok {
		t.Fatalf("b won a race it lost: %+v", h)
	}
	if h, ok := try(t, l[0]); !ok || h.Identity != "a" {
		t.Fatalf("a lost the Lease it won: %+v", h)
	}
}

func TestLeaseCreateRace(t *testing.T) {
	cs, _, l := newLocks(t, "a", "b")
	once := false
	cs.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if once {
			return false, nil, nil
		}
		once = true
		a := "a"
		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "certagent-restart", Namespace: "kube-system", ResourceVersion: "1"}}
		lease.Spec.HolderIdentity = &a
		if err := cs.Tracker().Create(leaseGR.WithVersion("v1"), lease, "kube-system"); err != nil {
			t.Error(err)
		}
		return true, nil, apierrors.NewNotFound(leaseGR, "certagent-restart")
	})
	if _, ok := try(t, l[1]); ok {
		t.Fatal("b took a Lease a created first")
	}
	if h, ok := try(t, l[1]); ok || h.Identity != "a" {
		t.Fatalf("b does not see a as the holder: %+v %v", h, ok)
	}
}

func TestLeaseAPIError(t *testing.T) {
	cs, _, l := newLocks(t, "a")
	cs.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(leaseGR, "certagent-restart", nil)
	})
	if _, ok, err := l[0].TryAcquire(context.Background()); ok || !apierrors.IsForbidden(err) {
		t.Fatalf("got %v %v, want the Forbidden error", ok, err)
	}
}

var metav1GetOptions = metav1.GetOptions{}
