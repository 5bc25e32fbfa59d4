package coord

import (
	"strings"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"
)

// stepping runs fn, stepping the fake clock a second at a time whenever
// something waits on it, until fn returns; each step calls during(elapsed)
// first. It returns the time fn took on the fake clock, read when it
// returned.
func stepping(t *testing.T, clk *testclock.FakeClock, fn func(), during func(time.Duration)) time.Duration {
	t.Helper()
	done := make(chan struct{})
	start := clk.Now()
	var took time.Duration
	// Taken when fn returns: what fn left behind (the Lease's renewal
	// timer) may make the loop step once more before it sees done.
	go func() { fn(); took = clk.Since(start); close(done) }()
	for {
		select {
		case <-done:
			return took
		case <-time.After(time.Millisecond):
		}
		if clk.HasWaiters() {
			if during != nil {
				during(clk.Since(start))
			}
			clk.Step(time.Second)
		}
		if clk.Since(start) > time.Hour {
			t.Fatal("still waiting after an hour")
		}
	}
}

func (f *fakeLock) counts() (tries, released int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tries, f.released
}

// TestCoordinatorHoldsLeaseUntilHealthy: the release after a restart
// keeps the Lease, renewed, until this node's restarted member is healthy
// again, so that no other node restarts its own while this one is down.
func TestCoordinatorHoldsLeaseUntilHealthy(t *testing.T) {
	for _, tc := range []struct {
		component string
		down, up  func(*fakeEtcd, *fakeAPI)
	}{
		{"etcd", func(e *fakeEtcd, _ *fakeAPI) { e.set(Members{3, 2, false}) }, func(e *fakeEtcd, _ *fakeAPI) { e.set(Members{3, 2, true}) }},
		{"kube-apiserver", func(_ *fakeEtcd, a *fakeAPI) { a.set(Peers{2, 2, false}) }, func(_ *fakeEtcd, a *fakeAPI) { a.set(Peers{2, 2, true}) }},
	} {
		t.Run(tc.component, func(t *testing.T) {
			lock := &fakeLock{me: "node-a"}
			etcd, api := &fakeEtcd{m: Members{3, 2, true}}, &fakeAPI{p: Peers{2, 2, true}}
			c, clk, log := newCoord(lock, etcd, api)
			c.Settle = time.Minute
			rel, _, err := acquire(t, c, clk, tc.component, nil)
			if err != nil {
				t.Fatal(err)
			}
			tc.down(etcd, api) // the restart this node just did
			tries0, _ := lock.counts()
			releasedEarly := false
			took := stepping(t, clk, rel, func(d time.Duration) {
				if _, released := lock.counts(); released > 0 && d < 12*time.Second {
					releasedEarly = true
				}
				if d >= 12*time.Second {
					tc.up(etcd, api)
				}
			})
			tries, released := lock.counts()
			if releasedEarly || took < 12*time.Second || took >= time.Minute || released != 1 {
				t.Errorf("released %d times after %s (early: %v), want once, after the component was healthy (12s)", released, took, releasedEarly)
			}
			// Renewed every 5 s meanwhile (Renew), so the Lease did not
			// expire under the wait.
			if tries-tries0 < 2 {
				t.Errorf("the held Lease was renewed %d times in %s", tries-tries0, took)
			}
			if strings.Contains(log.String(), "giving the restart Lease up") {
				t.Errorf("gave up although the component became healthy:\n%s", log.String())
			}
		})
	}
}

// TestCoordinatorGivesLeaseUpAfterSettle: a component that never becomes
// healthy holds the other nodes up for Settle at most, and says so.
func TestCoordinatorGivesLeaseUpAfterSettle(t *testing.T) {
	lock := &fakeLock{me: "node-a"}
	etcd := &fakeEtcd{m: Members{3, 2, true}}
	c, clk, log := newCoord(lock, etcd, nil)
	c.Settle = 30 * time.Second
	rel, _, err := acquire(t, c, clk, "etcd", nil)
	if err != nil {
		t.Fatal(err)
	}
	etcd.set(Members{3, 2, false})
	took := stepping(t, clk, rel, nil)
	if _, released := lock.counts(); released != 1 || took < 30*time.Second || took > 35*time.Second {
		t.Errorf("released %d times after %s, want once after 30s", released, took)
	}
	if !strings.Contains(log.String(), "giving the restart Lease up before the component is healthy") {
		t.Errorf("the give-up is not logged:\n%s", log.String())
	}
}

// TestCoordinatorKeepWarnsWhenTaken: a held Lease that another node took
// (it expired under a stalled renewal) is logged, and the renewals stop
// with the release.
func TestCoordinatorKeepWarnsWhenTaken(t *testing.T) {
	lock := &fakeLock{me: "node-a"}
	etcd := &fakeEtcd{m: Members{3, 2, true}}
	c, clk, log := newCoord(lock, etcd, nil)
	rel, _, err := acquire(t, c, clk, "etcd", nil)
	if err != nil {
		t.Fatal(err)
	}
	lock.set(Holder{Identity: "node-b", Since: clk.Now()}, nil)
	etcd.set(Members{3, 2, false})
	c.Settle = 12 * time.Second
	stepping(t, clk, rel, nil)
	if !strings.Contains(log.String(), "cannot renew the restart Lease") || !strings.Contains(log.String(), "taken by another node") {
		t.Errorf("the lost Lease is not logged:\n%s", log.String())
	}
	tries, _ := lock.counts()
	clk.Step(time.Minute)
	if after, _ := lock.counts(); after != tries {
		t.Errorf("%d renewals after the release", after-tries)
	}
}
