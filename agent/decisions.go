package agent

import (
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/decide"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/state"
)

// decisions keeps each certificate's latest decision, so that a pass
// narrowed to what changed on disk decides again only the certificates
// whose decision may differ: those that changed, and those a deadline
// reached. Deciding is a pure function of the certificate, its record,
// the configuration and the time (package decide); reuse checks each.
type decisions struct {
	by   map[string]*decided
	cfg  *config.Config // the configuration they were made with
	gen  uint64         // the current pass
	used int            // entries made or reused in this pass
	// prev and cur are the decisions in the order of the previous and the
	// current pass's certificates (nil where none is kept); ver is the
	// state's version when the previous pass ended, fresh that it is
	// still the state's: no record changed since.
	prev, cur []*decided
	ver       uint64
	fresh     bool
	quicked   int // decisions reused by quick, for the tests
}

// decided is one certificate's decision: nothing to do, so far.
type decided struct {
	cert   *inventory.Certificate
	record state.Cert         // the record the decision kept
	status *api.RenewalStatus // as published: never changed
	at     time.Time          // when it was made
	gen    uint64
}

// begin starts a pass's decisions over n certificates, with the state
// at version ver; a new configuration forgets them all.
func (d *decisions) begin(cfg *config.Config, n int, ver uint64) {
	if d.by == nil || d.cfg != cfg {
		d.by, d.cfg, d.prev = map[string]*decided{}, cfg, nil
	}
	d.gen++
	d.used = 0
	d.fresh = ver == d.ver
	d.cur = make([]*decided, n)
}

// quick is reuse for the i-th certificate c when it is the very one the
// previous pass had in that place and no record changed since (so its
// record is the one the decision kept): no look-up by name.
func (d *decisions) quick(i int, c *inventory.Certificate, now time.Time) *api.RenewalStatus {
	if !d.fresh || i >= len(d.prev) {
		return nil
	}
	p := d.prev[i]
	if p == nil || p.cert != c || !p.holds(c, now) {
		return nil
	}
	d.mark(p)
	d.cur[i] = p
	d.quicked++
	return p.status
}

// holds reports whether p, made for a certificate like c, is still the
// decision now: no renewal through the cluster (a CSR job and the
// kubelet's own rotation count there), not expired, and no deadline the
// status names reached (the next renewal or retry).
func (p *decided) holds(c *inventory.Certificate, now time.Time) bool {
	return c.RenewalPath != inventory.RenewCSR && !now.Before(p.at) && now.Before(c.NotAfter) &&
		(p.status.NextActionAt == nil || now.Before(*p.status.NextActionAt))
}

// reuse returns the i-th certificate c's previous status when deciding
// again now would give the same, else nil: the same certificate (its
// residual seconds aside), the same record, and a decision that holds.
// A rotation's renewal is never reused (the caller asks only for
// certificates not rotating).
func (d *decisions) reuse(i int, c *inventory.Certificate, record state.Cert, now time.Time) *api.RenewalStatus {
	p := d.by[c.Name]
	if p == nil || p.record != record || !p.holds(c, now) || !sameCert(p.cert, c) {
		return nil
	}
	d.mark(p)
	p.cert = c
	d.cur[i] = p
	return p.status
}

// keep records the i-th certificate c's new decision, made at now; one
// with something to do, or a rotation's, is not kept for reuse.
func (d *decisions) keep(i int, c *inventory.Certificate, dec *decide.Decision, rotating bool, now time.Time) {
	if dec.Action != decide.None || rotating || dec.Status.State == api.StateRenewing {
		delete(d.by, c.Name)
		return
	}
	p := d.by[c.Name]
	if p == nil {
		p = &decided{}
		d.by[c.Name] = p
	}
	d.mark(p)
	p.cert, p.record, p.status, p.at = c, dec.Record, &dec.Status, now
	d.cur[i] = p
}

func (d *decisions) mark(p *decided) {
	if p.gen != d.gen {
		p.gen = d.gen
		d.used++
	}
}

// end drops the decisions of certificates the pass did not see; ver is
// the state's version once the pass's records are in.
func (d *decisions) end(ver uint64) {
	d.prev, d.cur, d.ver = d.cur, nil, ver
	if d.used == len(d.by) {
		return
	}
	for name, p := range d.by {
		if p.gen != d.gen {
			delete(d.by, name)
		}
	}
}
