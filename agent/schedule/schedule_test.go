package schedule

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestDeadline(t *testing.T) {
	year := 365 * 24 * time.Hour
	tests := []struct {
		name     string
		life     time.Duration
		p        Policy
		min, max time.Duration // offsets from notBefore
	}{
		{"jitter 70-90%", year, Policy{}, year * 7 / 10, year * 9 / 10},
		{"renewBefore", year, Policy{RenewBefore: 30 * 24 * time.Hour}, year - 30*24*time.Hour, year - 30*24*time.Hour},
		{"renewBefore longer than the lifetime", 2 * time.Hour, Policy{RenewBefore: 720 * time.Hour}, time.Hour, time.Hour},
		{"custom jitter", time.Hour, Policy{JitterFrom: 0.5, JitterTo: 0.6}, 30 * time.Minute, 36 * time.Minute},
		{"zero lifetime", 0, Policy{}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewSource(1))
			for i := 0; i < 1000; i++ {
				d := Deadline(t0, t0.Add(tc.life), tc.p, r).Sub(t0)
				if d < tc.min || d > tc.max {
					t.Fatalf("deadline at %s, want within [%s, %s]", d, tc.min, tc.max)
				}
			}
		})
	}
}

func TestJitterSpreads(t *testing.T) {
	// 1000 nodes with certificates issued at the same instant.
	life := 365 * 24 * time.Hour
	buckets := make([]int, 10)
	for n := 0; n < 1000; n++ {
		d := Deadline(t0, t0.Add(life), Policy{}, Source(fmt.Sprintf("%x", n), fmt.Sprintf("node-%d", n)))
		f := float64(d.Sub(t0)) / float64(life)
		buckets[int((f-0.7)/0.02)]++
	}
	for i, b := range buckets {
		if b < 60 || b > 140 { // 100 expected in each 2 % slice
			t.Errorf("slice %d holds %d of 1000 deadlines: not spread evenly: %v", i, b, buckets)
		}
	}
}

func TestSourceIsStable(t *testing.T) {
	a := Deadline(t0, t0.Add(time.Hour), Policy{}, Source("ABC", "node1"))
	b := Deadline(t0, t0.Add(time.Hour), Policy{}, Source("ABC", "node1"))
	c := Deadline(t0, t0.Add(time.Hour), Policy{}, Source("ABC", "node2"))
	if !a.Equal(b) {
		t.Error("same certificate, same node: deadline moved between passes")
	}
	if a.Equal(c) {
		t.Error("two nodes drew the same point")
	}
}

func TestBackoff(t *testing.T) {
	want := []time.Duration{0, 30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	for f, w := range want {
		if got := Backoff(f, 30*time.Second, 10*time.Minute); got != w {
			t.Errorf("Backoff(%d) = %s, want %s", f, got, w)
		}
	}
	if Backoff(1000, time.Second, time.Hour) != time.Hour {
		t.Error("no cap for many failures")
	}
}

// TestBackoffNeverOverflows: bounds near time.Duration's limit double into
// negative waits (a retry loop) unless the doubling stops at the cap.
func TestBackoffNeverOverflows(t *testing.T) {
	huge := time.Duration(math.MaxInt64)
	for _, tc := range []struct{ initial, max time.Duration }{
		{huge / 3, huge}, {huge/2 + 1, huge}, {time.Second, huge}, {huge, huge},
	} {
		for f := 1; f < 200; f++ {
			if d := Backoff(f, tc.initial, tc.max); d < tc.initial || d > tc.max {
				t.Fatalf("Backoff(%d, %d, %d) = %d: outside [initial, max]", f, tc.initial, tc.max, d)
			}
		}
	}
}

func TestHoldBack(t *testing.T) {
	year := 365 * 24 * time.Hour
	tests := []struct {
		name            string
		deadline, since time.Time
		life            time.Duration
		want            time.Time
		held            bool
	}{
		{"due at once after a renewal", t0, t0, year, t0.Add(year / 10), true},
		{"due later than a tenth", t0.Add(year / 2), t0, year, t0.Add(year / 2), false},
		{"exactly a tenth", t0.Add(year / 10), t0, year, t0.Add(year / 10), false},
		{"never renewed", t0, time.Time{}, year, t0, false},
		{"no lifetime", t0, t0, 0, t0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, held := HoldBack(tc.deadline, tc.since, tc.life)
			if !got.Equal(tc.want) || held != tc.held {
				t.Fatalf("HoldBack = %v %v, want %v %v", got, held, tc.want, tc.held)
			}
		})
	}
}

// TestRetryJitterSpreadsNodes: nodes whose renewals failed together (an
// API server outage) retry at different times, each within [backoff/2,
// backoff], and each node's own wait is the same on every computation.
func TestRetryJitterSpreadsNodes(t *testing.T) {
	const serial = "5A3B"
	for _, failures := range []int{1, 3, 10} {
		backoff := Backoff(failures, 30*time.Second, time.Hour)
		seen := map[time.Duration]string{}
		var lo, hi time.Duration = backoff, 0
		for i := range 50 {
			node := fmt.Sprintf("node-%02d", i)
			d := Jitter(backoff, RetrySource(serial, node, failures))
			if d < backoff/2 || d > backoff {
				t.Fatalf("failures %d, %s: wait %s outside [%s, %s]", failures, node, d, backoff/2, backoff)
			}
			if again := Jitter(backoff, RetrySource(serial, node, failures)); again != d {
				t.Fatalf("failures %d, %s: wait %s then %s for the same node and certificate", failures, node, d, again)
			}
			if other, ok := seen[d]; ok {
				t.Errorf("failures %d: %s and %s retry in step (%s)", failures, other, node, d)
			}
			seen[d] = node
			lo, hi = min(lo, d), max(hi, d)
		}
		// 50 nodes cover most of the half-backoff window.
		if spread := hi - lo; spread < backoff*4/10 {
			t.Errorf("failures %d: 50 nodes spread over %s of a %s backoff", failures, spread, backoff)
		}
	}
	if a, b := Jitter(time.Minute, RetrySource(serial, "node-a", 1)), Jitter(time.Minute, RetrySource(serial, "node-b", 1)); a == b {
		t.Errorf("two nodes drew the same wait %s", a)
	}
	if Jitter(0, RetrySource(serial, "n", 0)) != 0 {
		t.Error("no failure, no wait")
	}
}
