// Package schedule decides when a certificate is renewed. Everything here
// is a pure function of the certificate's dates, the policy and a random
// source, so the agent recomputes it from the wall clock on every pass
// instead of trusting one long timer across a suspend.
package schedule

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand"
	"strconv"
	"time"
)

// Policy says when certificates become due.
type Policy struct {
	// RenewBefore, when set, makes a certificate due this long before it
	// expires. When it is not shorter than the lifetime, the certificate
	// is due at half its lifetime instead, so that a fresh certificate is
	// never due at once (which would renew it in a loop).
	RenewBefore time.Duration
	// JitterFrom and JitterTo bound the fraction of the lifetime at which
	// a certificate is due when RenewBefore is not set; 0 means the
	// kubelet's 0.7 and 0.9.
	JitterFrom, JitterTo float64
}

// Deadline returns when a certificate valid from notBefore to notAfter
// becomes due: a point drawn from r between 70 % and 90 % of its lifetime
// (like the kubelet, so that nodes built together do not renew together),
// or RenewBefore before expiry.
func Deadline(notBefore, notAfter time.Time, p Policy, r *rand.Rand) time.Time {
	life := notAfter.Sub(notBefore)
	if life <= 0 {
		return notBefore
	}
	if p.RenewBefore > 0 {
		if p.RenewBefore < life {
			return notAfter.Add(-p.RenewBefore)
		}
		return notBefore.Add(life / 2)
	}
	from, to := p.JitterFrom, p.JitterTo
	if from <= 0 || to <= 0 || to < from || to > 1 {
		from, to = 0.7, 0.9
	}
	f := from + (to-from)*r.Float64()
	return notBefore.Add(time.Duration(float64(life) * f))
}

// HoldBack returns the deadline, or, when that falls within a tenth of
// the lifetime after since (when the certificate was last renewed, or
// issued), since plus a tenth of the lifetime; held reports the latter. A
// renewBefore as long as the lifetime makes a certificate due the moment
// it is renewed: without this, every pass of the agent and every
// `renew --all` would renew it again. The daemon and the one-shot renewal
// both apply it.
func HoldBack(deadline, since time.Time, life time.Duration) (at time.Time, held bool) {
	if life <= 0 || since.IsZero() {
		return deadline, false
	}
	if floor := since.Add(life / 10); deadline.Before(floor) {
		return floor, true
	}
	return deadline, false
}

// Source returns a random source seeded from a certificate's serial and
// the node's name: the same certificate always gets the same point on the
// same node (across passes and restarts), while nodes whose certificates
// were issued at the same instant still spread out.
func Source(serial, node string) *rand.Rand {
	sum := sha256.Sum256([]byte(node + "\x00" + serial))
	return rand.New(rand.NewSource(int64(binary.BigEndian.Uint64(sum[:8]))))
}

// Backoff returns how long to wait after the given number of consecutive
// failures: initial, doubled for each further failure, never above max.
func Backoff(failures int, initial, max time.Duration) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := initial
	for i := 1; i < failures && d < max; i++ {
		if d > max/2 { // doubling could overflow; max is the answer anyway
			d = max
			break
		}
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// RetrySource returns the random source for the wait after the given
// number of consecutive failures of a certificate on a node: fixed for
// (serial, node, failures), so a restart does not redraw it, and distinct
// from Source's stream, so the retry share is not the deadline's share.
func RetrySource(serial, node string, failures int) *rand.Rand {
	return Source(serial+"\x00retry\x00"+strconv.Itoa(failures), node)
}

// Jitter returns d shortened by a random share of up to half of it, a value
// in [d/2, d] ("equal jitter"). Nodes that failed together, in an API
// server outage, then retry spread over half of the backoff instead of in
// step, and no wait is longer than the backoff it jitters (so never above
// the configured maximum).
func Jitter(d time.Duration, r *rand.Rand) time.Duration {
	if d <= 0 {
		return d
	}
	half := d / 2
	return d - time.Duration(r.Float64()*float64(half))
}
