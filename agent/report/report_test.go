package report

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/rotate/pki"
)

// fakeNode is a NodeClient that keeps one Node's condition and the events
// posted, and fails every call while err is set.
type fakeNode struct {
	mu      sync.Mutex
	err     error
	events  []*corev1.Event
	cond    *corev1.NodeCondition
	patches int
}

func (f *fakeNode) CreateEvent(_ context.Context, ev *corev1.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.events = append(f.events, ev)
	return nil
}

func (f *fakeNode) Condition(_ context.Context, _, typ string) (*corev1.NodeCondition, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	if f.cond == nil || string(f.cond.Type) != typ {
		return nil, nil
	}
	c := *f.cond
	return &c, nil
}

func (f *fakeNode) PatchCondition(_ context.Context, _ string, c corev1.NodeCondition) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.cond = &c
	f.patches++
	return nil
}

func (f *fakeNode) condition() corev1.NodeCondition {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.cond
}

func newFake(t *testing.T, f *fakeNode) (*Reporter, *testingclock.FakeClock) {
	clk := testingclock.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	r := New(func() (NodeClient, error) { return f, nil }, "/etc/kubernetes/kubelet.conf", logrus.New())
	r.Clock = clk
	r.SetNode("node1")
	return r, clk
}

// TestReporterNeverBlocks: with no API server, events wait in a bounded
// buffer, the oldest dropped first, and the caller is never held up.
func TestReporterNeverBlocks(t *testing.T) {
	r := New(func() (NodeClient, error) { return nil, errors.New("no API server") }, "/etc/kubernetes/kubelet.conf", logrus.New())
	r.SetNode("node1")
	start := time.Now()
	for i := 0; i < 250; i++ {
		r.Event("Normal", "CertificateRenewed", "x")
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("queueing 250 events took %s", d)
	}
	if n := r.Pending(); n != 100 {
		t.Errorf("%d events kept, want the buffer's 100", n)
	}
}

// TestConditionTransitionTime: lastTransitionTime moves only when the
// status flips; lastHeartbeatTime is the time of each send; an unchanged
// condition is not sent again.
func TestConditionTransitionTime(t *testing.T) {
	f := &fakeNode{}
	r, clk := newFake(t, f)
	ctx := context.Background()
	t0 := clk.Now()
	steps := []struct {
		name           string
		healthy        bool
		reason         string
		wantTransition time.Duration // after t0
		wantHeartbeat  time.Duration
		wantPatches    int
	}{
		{"first send", true, "CertificatesHealthy", 0, 0, 1},
		{"same status, new message", true, "CertificatesHealthy2", 0, time.Minute, 2},
		{"unchanged: not sent", true, "CertificatesHealthy2", 0, time.Minute, 2},
		{"flip to false", false, "RenewalFailed", 3 * time.Minute, 3 * time.Minute, 3},
		{"still false", false, "CertificateExpired", 3 * time.Minute, 4 * time.Minute, 4},
		{"back to true", true, "CertificatesHealthy", 5 * time.Minute, 5 * time.Minute, 5},
	}
	for i, s := range steps {
		clk.SetTime(t0.Add(time.Duration(i) * time.Minute))
		r.Condition(s.healthy, s.reason, "msg "+s.reason)
		r.Flush(ctx)
		c := f.condition()
		if got := c.LastTransitionTime.Sub(t0); got != s.wantTransition {
			t.Errorf("%s: lastTransitionTime t0+%s, want t0+%s", s.name, got, s.wantTransition)
		}
		if got := c.LastHeartbeatTime.Sub(t0); got != s.wantHeartbeat {
			t.Errorf("%s: lastHeartbeatTime t0+%s, want t0+%s", s.name, got, s.wantHeartbeat)
		}
		if f.patches != s.wantPatches || string(c.Type) != ConditionType || c.Reason != s.reason {
			t.Errorf("%s: %d patches, condition %+v", s.name, f.patches, c)
		}
	}
}

// TestConditionAfterRestart: a new agent keeps the Node's transition time
// when the status it sends is the one already there, and sets a new one
// when it differs.
func TestConditionAfterRestart(t *testing.T) {
	before := time.Date(2029, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		healthy bool
		keep    bool
	}{{"same status", true, true}, {"other status", false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeNode{cond: &corev1.NodeCondition{Type: ConditionType, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(before)}}
			r, clk := newFake(t, f)
			r.Condition(tc.healthy, "R", "m")
			r.Flush(context.Background())
			want := clk.Now()
			if tc.keep {
				want = before
			}
			if got := f.condition().LastTransitionTime.Time; !got.Equal(want) {
				t.Errorf("lastTransitionTime %s, want %s", got, want)
			}
		})
	}
}

// TestEventsWaitForTheAPI: events queued while the API fails are sent in
// order once it answers; a client that cannot be built is reported by Err.
func TestEventsWaitForTheAPI(t *testing.T) {
	f := &fakeNode{err: errors.New("connection refused")}
	r, _ := newFake(t, f)
	r.Event("Normal", "CertificateRenewed", "one")
	r.Event("Warning", "CertificateRenewalFailed", "two")
	r.Flush(context.Background())
	if r.Pending() != 2 || len(f.events) != 0 {
		t.Fatalf("pending %d, sent %d while the API fails", r.Pending(), len(f.events))
	}
	f.mu.Lock()
	f.err = nil
	f.mu.Unlock()
	r.Flush(context.Background())
	if r.Pending() != 0 || len(f.events) != 2 || f.events[0].Message != "one" || f.events[1].Reason != "CertificateRenewalFailed" {
		t.Fatalf("pending %d, sent %+v", r.Pending(), f.events)
	}
	ev := f.events[0]
	if ev.InvolvedObject.Kind != "Node" || ev.InvolvedObject.Name != "node1" || ev.Source.Component != "certagent" || ev.Namespace != "default" {
		t.Errorf("event %+v", ev)
	}

	bad := New(func() (NodeClient, error) { return nil, pki.ErrRefusedCredential }, "kubelet.conf", logrus.New())
	bad.SetNode("node1")
	bad.Event("Normal", "X", "y")
	bad.Flush(context.Background())
	if bad.Err() == "" || bad.Pending() != 1 {
		t.Errorf("Err %q, pending %d", bad.Err(), bad.Pending())
	}
}
