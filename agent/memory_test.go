package agent

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestFitMemoryLimit: the soft limit stays while the live heap is under
// half of it, and is lifted when the inventory needs more.
func TestFitMemoryLimit(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	for _, c := range []struct {
		base, want int64
	}{{1 << 40, 1 << 40}, {1, math.MaxInt64}} {
		a := &Agent{opts: Options{MemoryLimit: c.base}}
		a.fitMemoryLimit()
		if got := debug.SetMemoryLimit(-1); got != c.want {
			t.Errorf("base %d: limit %d, want %d", c.base, got, c.want)
		}
	}
}
