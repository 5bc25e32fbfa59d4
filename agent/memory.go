package agent

import (
	"math"
	"runtime/debug"
	"runtime/metrics"
)

// fitMemoryLimit keeps the soft memory limit at Options.MemoryLimit while
// the live heap is under half of it, and lifts it otherwise: the limit
// keeps a small node's agent small, but once the inventory itself holds
// more it would only keep the GC running (thousands of certificates), and
// GOGC alone (a heap of twice the live one) governs.
func (a *Agent) fitMemoryLimit() {
	if a.opts.MemoryLimit <= 0 {
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	limit := a.opts.MemoryLimit
	if sample[0].Value.Kind() == metrics.KindUint64 && 2*sample[0].Value.Uint64() > uint64(limit) {
		limit = math.MaxInt64
	}
	debug.SetMemoryLimit(limit)
}
