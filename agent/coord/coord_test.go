package coord

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	testclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/logfields"
)

// fakeLock is a Lock whose answers the test sets.
type fakeLock struct {
	mu       sync.Mutex
	holder   Holder
	err      error
	tries    int
	released int
	me       string
}

func (f *fakeLock) TryAcquire(context.Context) (Holder, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tries++
	if f.err != nil {
		return Holder{}, false, f.err
	}
	if f.holder.Identity == "" {
		f.holder = Holder{Identity: f.me, Since: time.Unix(1000, 0)}
	}
	return f.holder, f.holder.Identity == f.me, nil
}

func (f *fakeLock) Release(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.holder.Identity == f.me {
		f.holder = Holder{}
		f.released++
	}
	return nil
}

func (f *fakeLock) set(h Holder, err error) {
	f.mu.Lock()
	f.holder, f.err = h, err
	f.mu.Unlock()
}

type fakeEtcd struct {
	mu  sync.Mutex
	m   Members
	err error
}

func (f *fakeEtcd) Members(context.Context) (Members, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m, f.err
}

func (f *fakeEtcd) set(m Members) { f.mu.Lock(); f.m = m; f.mu.Unlock() }

type fakeAPI struct {
	mu  sync.Mutex
	p   Peers
	err error
}

func (f *fakeAPI) Peers(context.Context) (Peers, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.p, f.err
}

func (f *fakeAPI) set(p Peers) { f.mu.Lock(); f.p = p; f.mu.Unlock() }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newCoord(lock *fakeLock, e EtcdChecker, a APIChecker) (*Coordinator, *testclock.FakeClock, *syncBuf) {
	clk := testclock.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	log := logrus.New()
	buf := &syncBuf{}
	log.SetOutput(buf)
	return &Coordinator{Node: "node-a", Lock: lock, Etcd: e, APIServers: a, Clock: clk, Log: log,
		Retry: time.Second, Renew: 5 * time.Second, Window: 10 * time.Minute}, clk, buf
}

// acquire runs Acquire, stepping the fake clock whenever the coordinator
// sleeps, until it returns; each step calls during(elapsed) first.
func acquire(t *testing.T, c *Coordinator, clk *testclock.FakeClock, comp string, during func(time.Duration)) (func(), time.Duration, error) {
	t.Helper()
	var rel func()
	var err error
	took := stepping(t, clk, func() { rel, err = c.Acquire(context.Background(), comp, nil) }, during)
	return rel, took, err
}

func TestCoordinatorWaitsForHolder(t *testing.T) {
	lock := &fakeLock{me: "node-a", holder: Holder{Identity: "node-b", Since: time.Unix(500, 0)}}
	c, clk, log := newCoord(lock, &fakeEtcd{m: Members{3, 2, true}}, nil)
	var seen bool
	rel, waited, err := acquire(t, c, clk, "etcd", func(d time.Duration) {
		if s := c.Status(); d == 3*time.Second && s != nil && s.State == "waiting" && s.Holder == "node-b" && s.HolderSince != nil {
			seen = true
		}
		if d >= 5*time.Second {
			lock.set(Holder{}, nil) // node-b released
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if waited < 5*time.Second || !seen {
		t.Errorf("waited %s, status seen %v", waited, seen)
	}
	if s := c.Status(); s == nil || s.State != "holding" || s.Holder != "node-a" {
		t.Errorf("status while holding: %+v", s)
	}
	rel()
	if lock.released != 1 || c.Status() != nil {
		t.Errorf("released %d, status %+v", lock.released, c.Status())
	}
	out := log.String()
	if strings.Count(out, logfields.MsgCoordWaiting) != 1 || !strings.Contains(out, "HOLDER=node-b") {
		t.Errorf("the wait is not logged once with the holder:\n%s", out)
	}
}

func TestCoordinatorQuorumWait(t *testing.T) {
	lock := &fakeLock{me: "node-a"}
	etcd := &fakeEtcd{m: Members{3, 1, true}}
	c, clk, log := newCoord(lock, etcd, nil)
	// The Lease is taken before the check (so that two nodes never both
	// pass it) and given back when the check fails: every try while
	// quorum lacked was released, only the last one is kept.
	_, waited, err := acquire(t, c, clk, "etcd", func(d time.Duration) {
		if d >= 4*time.Second {
			etcd.set(Members{3, 2, true})
		}
	})
	if err != nil || waited < 4*time.Second {
		t.Fatalf("waited %s: %v", waited, err)
	}
	lock.mu.Lock()
	tries, released := lock.tries, lock.released
	lock.mu.Unlock()
	if released < 1 || tries != released+1 {
		t.Errorf("%d tries, %d released: the Lease was kept while etcd lacked quorum", tries, released)
	}
	if !strings.Contains(log.String(), "would lose quorum") {
		t.Errorf("the reason is not logged:\n%s", log.String())
	}
	// The apiserver check only matters for the apiserver.
	c.APIServers = &fakeAPI{p: Peers{2, 0, true}}
	rel, _, err := acquire(t, c, clk, "kube-scheduler", nil)
	if err != nil {
		t.Fatal(err)
	}
	rel()
}

func TestCoordinatorAPIServerWait(t *testing.T) {
	lock := &fakeLock{me: "node-a"}
	api := &fakeAPI{p: Peers{2, 0, true}}
	c, clk, _ := newCoord(lock, &fakeEtcd{err: errors.New("external etcd")}, api)
	var why string
	rel, waited, err := acquire(t, c, clk, "kube-apiserver", func(d time.Duration) {
		if s := c.Status(); d == 2*time.Second && s != nil {
			why = s.Reason
		}
		if d >= 4*time.Second {
			api.set(Peers{2, 1, true})
		}
	})
	if err != nil || waited < 4*time.Second {
		t.Fatalf("waited %s: %v", waited, err)
	}
	if !strings.Contains(why, "none of the 2 other kube-apiservers is ready") {
		t.Errorf("status reason while waiting: %q", why)
	}
	rel()
}

func TestCoordinatorSingleNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    EtcdChecker
		a    APIChecker
	}{
		{"one etcd member", &fakeEtcd{m: Members{1, 0, true}}, nil},
		{"external etcd, one apiserver", &fakeEtcd{err: errors.New("no")}, &fakeAPI{p: Peers{0, 0, true}}},
		{"nothing to ask", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lock := &fakeLock{me: "node-a", err: errors.New("API down")}
			c, clk, _ := newCoord(lock, tc.e, tc.a)
			_, waited, err := acquire(t, c, clk, "etcd", nil)
			if err != nil || waited != 0 || lock.tries != 0 {
				t.Errorf("single node waited %s, %d Lease tries, %v", waited, lock.tries, err)
			}
		})
	}
}

func TestCoordinatorAPIDownDelay(t *testing.T) {
	lock := &fakeLock{me: "node-a", err: errors.New("connection refused")}
	c, clk, log := newCoord(lock, &fakeEtcd{err: errors.New("expired")}, nil)
	c.DownAfter = 10 * time.Second
	want := Delay("node-a", c.Window) + 2*c.DownAfter // failing, the delay, failing again
	var state string
	_, waited, err := acquire(t, c, clk, "etcd", func(time.Duration) {
		if s := c.Status(); s != nil && s.State == "api-down-delay" {
			state = s.State
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if waited < want || waited > want+2*time.Second || state != "api-down-delay" {
		t.Errorf("waited %s, want the node's delay %s; state %q", waited, want, state)
	}
	out := log.String()
	for _, s := range []string{logfields.MsgCoordAPIDown, "DELAY=" + Delay("node-a", c.Window).Round(time.Millisecond).String(), logfields.MsgCoordLocal} {
		if !strings.Contains(out, s) {
			t.Errorf("journal lacks %s:\n%s", s, out)
		}
	}
	if lock.tries < 20 {
		t.Errorf("%d Lease tries, want them for 10 s before and after the delay", lock.tries)
	}
}

func TestDelay(t *testing.T) {
	w := 5 * time.Minute
	seen := map[time.Duration]string{}
	for _, n := range []string{"cp-1", "cp-2", "cp-3", "master-a", "master-b"} {
		d := Delay(n, w)
		if d < 0 || d >= w || d != Delay(n, w) {
			t.Errorf("%s: %s", n, d)
		}
		if o, dup := seen[d]; dup {
			t.Errorf("%s and %s share a delay", n, o)
		}
		seen[d] = n
	}
	if Delay("x", 0) != 0 {
		t.Error("no window, still a delay")
	}
}

// TestCoordinatorTransientAPIError: the Lock failing for less than
// DownAfter (one API server restarting) is waited out, never the API-down
// path that restarts without the Lease.
func TestCoordinatorTransientAPIError(t *testing.T) {
	lock := &fakeLock{me: "node-a", err: errors.New("connection reset")}
	c, clk, log := newCoord(lock, &fakeEtcd{m: Members{3, 2, true}}, nil)
	c.DownAfter = 10 * time.Second
	rel, waited, err := acquire(t, c, clk, "etcd", func(d time.Duration) {
		if d >= 8*time.Second {
			lock.set(Holder{}, nil)
		}
	})
	if err != nil || waited < 8*time.Second || waited > 10*time.Second {
		t.Fatalf("waited %s: %v", waited, err)
	}
	if strings.Contains(log.String(), logfields.MsgCoordAPIDown) || lock.holder.Identity != "node-a" {
		t.Errorf("a short failure was taken for the API down:\n%s", log.String())
	}
	rel()
}
