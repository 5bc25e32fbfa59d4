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
}

// decided is one certificate's decision: nothing to do, so far.
type decided struct {
	cert   *inventory.Certificate
	record state.Cert         // the record the decision kept
	status *api.RenewalStatus // as published: never changed
	at     time.Time          // when it was made
	gen    uint64
}

// begin starts a pass's decisions; a new configuration forgets them all.
func (d *decisions) begin(cfg *config.Config) {
	if d.by == nil || d.cfg != cfg {
		d.by, d.cfg = map[string]*decided{}, cfg
	}
	d.gen++
	d.used = 0
}

// reuse returns c's previous status when deciding again now would give
// the same, else nil: the same certificate (its residual seconds aside),
// the same record, no renewal through the cluster (a CSR job and the
// kubelet's own rotation count there), not expired, and no deadline the
// status names reached (the next renewal or retry). A rotation's renewal
// is never reused (the caller asks only for certificates not rotating).
func (d *decisions) reuse(c *inventory.Certificate, record state.Cert, now time.Time) *api.RenewalStatus {
	p := d.by[c.Name]
	switch {
	case p == nil, p.record != record, c.RenewalPath == inventory.RenewCSR:
		return nil
	case now.Before(p.at), !now.Before(c.NotAfter):
		return nil
	case p.status.NextActionAt != nil && !now.Before(*p.status.NextActionAt):
		return nil
	case !sameCert(p.cert, c):
		return nil
	}
	d.mark(p)
	p.cert = c
	return p.status
}

// keep records c's new decision, made at now; one with something to do,
// or a rotation's, is not kept for reuse.
func (d *decisions) keep(c *inventory.Certificate, dec *decide.Decision, rotating bool, now time.Time) {
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
}

func (d *decisions) mark(p *decided) {
	if p.gen != d.gen {
		p.gen = d.gen
		d.used++
	}
}

// end drops the decisions of certificates the pass did not see.
func (d *decisions) end() {
	if d.used == len(d.by) {
		return
	}
	for name, p := range d.by {
		if p.gen != d.gen {
			delete(d.by, name)
		}
	}
}
