// Package coord takes turns between the control-plane nodes of a cluster
// before one restarts a static pod: a cluster-wide restart Lease, etcd's
// quorum without this node's member, another kube-apiserver ready, and,
// when no API server answers so no Lease can be had, a delay fixed per
// node. Each piece is behind a small interface (Lock, EtcdChecker,
// APIChecker) with a real implementation here and fakes in the tests;
// cmd/certagent builds them and hands the Coordinator to restart.
package coord

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/logfields"
)

// Delay is the node's wait, when no Lease can be had, before it restarts
// on its own: a point in [0, window) fixed by the hash of its name, so
// that nodes recovering together restart at different moments, and the
// same node always at the same one.
func Delay(node string, window time.Duration) time.Duration {
	if window <= 0 {
		return 0
	}
	// SHA-256, not FNV: names that differ in one character (cp-1, cp-2)
	// must land far apart, not in neighbouring spots.
	sum := sha256.Sum256([]byte(node))
	return time.Duration(binary.BigEndian.Uint64(sum[:8]) % uint64(window))
}

// Coordinator decides when this node may restart a control-plane
// component. Etcd and APIServers may be nil (not checked).
type Coordinator struct {
	Node       string
	Lock       Lock
	Etcd       EtcdChecker
	APIServers APIChecker
	Clock      clock.Clock
	Log        *logrus.Logger
	// Retry is the pause between two tries (default 2s); Renew how often
	// a held Lease is renewed (default 5s); Window bounds the delay when
	// no Lease can be had; Settle bounds the wait, after a restart, for
	// the component's health before the Lease goes (default 2m);
	// DownAfter is how long the Lock must keep failing before the API
	// counts as down, before and after the delay (0: at the first failure).
	Retry, Renew, Window, Settle, DownAfter time.Duration

	mu     sync.Mutex // guards status
	status *api.CoordinationStatus
}

// Status says what the coordinator waits for (nil: nothing).
func (c *Coordinator) Status() *api.CoordinationStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status == nil {
		return nil
	}
	s := *c.status
	return &s
}

func (c *Coordinator) set(s *api.CoordinationStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s != nil && c.status != nil && c.status.State == s.State && c.status.Holder == s.Holder && c.status.Component == s.Component {
		s.Since = c.status.Since // the same wait goes on
	}
	c.status = s
}

func nop() {}

// Acquire waits until this node may restart component, and returns what
// to call once the restart is confirmed (it releases the Lease). ping is
// called while it waits. Only ctx ends the wait early (its error).
func (c *Coordinator) Acquire(ctx context.Context, component string, ping func()) (func(), error) {
	if c.single(ctx) {
		return nop, nil
	}
	delayed := false
	var logged string
	var failingSince time.Time // when the Lock began failing (zero: it answers)
	start := c.Clock.Now()
	for {
		h, held, err := c.Lock.TryAcquire(ctx)
		if err == nil {
			failingSince = time.Time{}
		} else if failingSince.IsZero() {
			failingSince = c.Clock.Now()
		}
		switch {
		case err != nil && c.Clock.Since(failingSince) < c.DownAfter:
			// One API server restarting (maybe the holder's) is not the
			// API down: wait for the failures to last.
			logged = c.waiting(component, Holder{}, "restart Lease: "+err.Error(), logged)
		case err != nil && !delayed:
			if err := c.apiDown(ctx, component, err, ping); err != nil {
				return nil, err
			}
			delayed, failingSince = true, time.Time{}
			continue
		case err != nil:
			ok, why := c.safe(ctx, component)
			if ok {
				c.Log.WithFields(logrus.Fields{"MESSAGE_ID": logfields.MsgCoordLocal, "COMPONENT": component, "NODE": c.Node, "REASON": why}).
					Warning("no restart Lease can be had after the node's delay: restarting without it")
				c.set(nil)
				return nop, nil
			}
			logged = c.waiting(component, Holder{}, why, logged)
		case !held:
			logged = c.waiting(component, h, "another node holds the restart Lease", logged)
		default:
			stop := c.keep(ctx)
			ok, why := c.safe(ctx, component)
			if ok {
				return c.holding(ctx, component, h, why, c.Clock.Since(start), stop), nil
			}
			stop()
			c.release(ctx)
			logged = c.waiting(component, Holder{}, why, logged)
		}
		if err := c.sleep(ctx, c.retry(), ping); err != nil {
			c.set(nil)
			return nil, err
		}
	}
}

// holding records and logs that this node holds the Lease, and returns
// the release.
func (c *Coordinator) holding(ctx context.Context, component string, h Holder, why string, waited time.Duration, stop func()) func() {
	since := h.Since.UTC()
	c.set(&api.CoordinationStatus{Component: component, State: "holding", Holder: c.Node, HolderSince: &since, Reason: why, Since: c.Clock.Now().UTC()})
	c.Log.WithFields(logrus.Fields{"MESSAGE_ID": logfields.MsgCoordAcquired, "COMPONENT": component, "NODE": c.Node, "REASON": why,
		"WAITED": waited.Round(time.Millisecond).String()}).Info("took the restart Lease")
	return func() {
		c.settle(ctx, component)
		stop()
		c.release(ctx)
		c.set(nil)
	}
}

func (c *Coordinator) release(ctx context.Context) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := c.Lock.Release(rctx); err != nil {
		c.Log.WithField("REASON", err.Error()).Warning("cannot release the restart Lease: it expires by itself")
	}
}

// waiting records and logs (once per holder and reason) why it waits.
func (c *Coordinator) waiting(component string, h Holder, why, logged string) string {
	s := &api.CoordinationStatus{Component: component, State: "waiting", Holder: h.Identity, Reason: why, Since: c.Clock.Now().UTC()}
	if !h.Since.IsZero() {
		since := h.Since.UTC()
		s.HolderSince = &since
	}
	c.set(s)
	key := h.Identity + "\x00" + why
	if key != logged {
		f := logrus.Fields{"MESSAGE_ID": logfields.MsgCoordWaiting, "COMPONENT": component, "NODE": c.Node, "REASON": why}
		if h.Identity != "" {
			f["HOLDER"], f["HOLDER_SINCE"] = h.Identity, h.Since.UTC().Format(time.RFC3339)
		}
		c.Log.WithFields(f).Info("waiting for the turn to restart")
	}
	return key
}

// apiDown waits the node's delay when no Lease can be had.
func (c *Coordinator) apiDown(ctx context.Context, component string, cause error, ping func()) error {
	d := Delay(c.Node, c.Window)
	now := c.Clock.Now().UTC()
	until := now.Add(d)
	c.set(&api.CoordinationStatus{Component: component, State: "api-down-delay", Reason: cause.Error(), Since: now, Until: &until})
	c.Log.WithFields(logrus.Fields{"MESSAGE_ID": logfields.MsgCoordAPIDown, "COMPONENT": component, "NODE": c.Node,
		"DELAY": d.Round(time.Millisecond).String(), "REASON": cause.Error()}).
		Warning("no restart Lease can be had: waiting this node's delay before restarting")
	err := c.sleep(ctx, d, ping)
	if err != nil {
		c.set(nil)
	}
	return err
}

func (c *Coordinator) retry() time.Duration {
	if c.Retry > 0 {
		return c.Retry
	}
	return 2 * time.Second
}

// sleep waits d, pinging at least every second.
func (c *Coordinator) sleep(ctx context.Context, d time.Duration, ping func()) error {
	end := c.Clock.Now().Add(d)
	for {
		left := end.Sub(c.Clock.Now())
		if left <= 0 {
			return nil
		}
		if ping != nil {
			ping()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.Clock.After(min(left, time.Second)):
		}
	}
}

// keep renews the held Lease until the returned stop is called.
func (c *Coordinator) keep(ctx context.Context) func() {
	every := c.Renew
	if every <= 0 {
		every = 5 * time.Second
	}
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-kctx.Done():
				return
			case <-c.Clock.After(every):
			}
			if _, held, err := c.Lock.TryAcquire(kctx); kctx.Err() == nil && (err != nil || !held) {
				c.Log.WithField("REASON", errString(err, "taken by another node")).Warning("cannot renew the restart Lease")
			}
		}
	}()
	return func() { cancel(); <-done }
}

func errString(err error, otherwise string) string {
	if err != nil {
		return err.Error()
	}
	return otherwise
}
