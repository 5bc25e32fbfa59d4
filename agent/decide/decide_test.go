package decide

import (
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/agent/schedule"
	"github.com/certagent/certagent/agent/state"
)

var (
	t0   = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	year = 365 * 24 * time.Hour
)

// leaf is a one-year certificate issued at t0 on the path.
func leaf(path inventory.RenewalPath, state inventory.State) *inventory.Certificate {
	return &inventory.Certificate{Name: "apiserver", Path: "/etc/kubernetes/pki/apiserver.crt", Serial: "AB",
		NotBefore: t0, NotAfter: t0.Add(year), RenewalPath: path, State: state}
}

// deadline is the jittered renewal point of leaf for node1.
func deadline(c *inventory.Certificate) time.Time {
	return schedule.Deadline(c.NotBefore, c.NotAfter, schedule.Policy{}, schedule.Source(c.Serial, "node1"))
}

func kinds(ns []Notice) string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Kind)
	}
	return strings.Join(out, ",")
}

// TestDecide has one case per row of the README's table of renewal
// states (`certagent status`: ok, renewal-scheduled, renewing, failed,
// expired), with the variants of each row.
func TestDecide(t *testing.T) {
	local := leaf(inventory.RenewLocalCA, inventory.StateOK)
	due := leaf(inventory.RenewLocalCA, inventory.StateRenewalDue)
	csr := leaf(inventory.RenewCSR, inventory.StateOK)
	external := leaf(inventory.RenewExternal, inventory.StateOK)
	externalDue := leaf(inventory.RenewExternal, inventory.StateRenewalDue)
	refused := leaf(inventory.RenewRefused, inventory.StateOK)
	refused.LeftAlone = "its file is writable by uid 1000"
	failedRec := state.Cert{Serial: "AB", Failures: 2, LastError: "lock taken", NextAttempt: deadline(local).Add(24 * time.Hour)}
	tests := []struct {
		name        string
		in          Input
		state, next string
		at          time.Time // NextActionAt; zero: none
		action      Action
		notices     string
		reason      string // contained in Reason
	}{
		// ok: nothing due.
		{name: "ok: scheduled at the jittered point", in: Input{Cert: local, Now: t0},
			state: api.StateOK, next: "renew", at: deadline(local), notices: "scheduled"},
		{name: "ok: the kubelet owns it, certagent steps in at 95 %", in: Input{Cert: csr, Now: t0,
			Kubelet: Ownership{Kubelet: true, StepIn: t0.Add(year * 95 / 100), Why: "the kubelet rotates it"}},
			state: api.StateOK, next: "step-in", at: t0.Add(year * 95 / 100), reason: "certagent steps in then"},
		{name: "ok: not renewable here", in: Input{Cert: external, Now: t0},
			state: api.StateOK, next: "none", reason: "its CA key is not on this node"},
		{name: "ok: left alone, said once", in: Input{Cert: refused, Now: t0},
			state: api.StateOK, next: "none", notices: "left-alone", reason: "left alone: its file is writable"},
		{name: "ok: unrenewable and due, an Event", in: Input{Cert: externalDue, Now: t0.Add(300 * 24 * time.Hour)},
			state: api.StateOK, next: "none", notices: "unrenewable"},
		// renewal-scheduled: inside the window, renewal at nextActionAt.
		{name: "renewal-scheduled", in: Input{Cert: due, Now: t0},
			state: api.StateScheduled, next: "renew", at: deadline(due), notices: "scheduled"},
		// renewing: due now.
		{name: "renewing: local transaction", in: Input{Cert: local, Now: deadline(local)},
			state: api.StateRenewing, next: "renew", at: deadline(local), action: RenewLocal},
		{name: "renewing: through the cluster", in: Input{Cert: csr, Now: deadline(csr)},
			state: api.StateRenewing, next: "renew", at: deadline(csr), action: RenewCSR},
		{name: "renewing: kubelet missed its window", in: Input{Cert: csr, Now: t0.Add(year * 96 / 100),
			Kubelet: Ownership{Kubelet: true, StepIn: t0.Add(year * 95 / 100), Why: "the kubelet rotates it"}},
			state: api.StateRenewing, next: "renew", at: t0.Add(year * 96 / 100), action: RenewCSR, notices: "stepin", reason: "certagent steps in"},
		{name: "renewing: waiting for a CSR", in: Input{Cert: csr, Now: t0, CSRJob: true, CSRName: "certagent-x"},
			state: api.StateRenewing, next: "wait", at: t0, reason: "kubectl certificate approve certagent-x"},
		// failed: the last attempt failed; retry at nextActionAt.
		{name: "failed: retry after backoff", in: Input{Cert: local, Record: failedRec, Now: deadline(local).Add(time.Hour)},
			state: api.StateFailed, next: "retry", at: failedRec.NextAttempt, reason: "lock taken"},
		{name: "failed: backoff over, renewing again", in: Input{Cert: local, Record: failedRec, Now: failedRec.NextAttempt},
			state: api.StateRenewing, next: "renew", at: failedRec.NextAttempt, action: RenewLocal},
		// expired: and not renewable here.
		{name: "expired: not renewable", in: Input{Cert: external, Now: t0.Add(year + time.Hour)},
			state: api.StateExpired, next: "none", notices: "expired,unrenewable"},
		{name: "expired: renewable, due at once", in: Input{Cert: local, Now: t0.Add(year + time.Hour)},
			state: api.StateRenewing, next: "renew", at: t0.Add(year + time.Hour), action: RenewLocal},
		{name: "expired: waiting to retry", in: Input{Cert: local, Record: state.Cert{Serial: "AB", Failures: 1, LastError: "x", NextAttempt: t0.Add(year + 2*time.Hour)}, Now: t0.Add(year + time.Hour)},
			state: api.StateExpired, next: "retry", at: t0.Add(year + 2*time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Node = "node1"
			if tc.in.Record.Serial == "" {
				tc.in.Record.Serial = tc.in.Cert.Serial
			}
			d := Decide(tc.in)
			s := d.Status
			if s.State != tc.state || s.NextAction != tc.next || d.Action != tc.action {
				t.Errorf("state %q next %q action %d, want %q %q %d", s.State, s.NextAction, d.Action, tc.state, tc.next, tc.action)
			}
			switch {
			case tc.at.IsZero() && s.NextActionAt != nil:
				t.Errorf("nextActionAt %s, want none", s.NextActionAt)
			case !tc.at.IsZero() && (s.NextActionAt == nil || !s.NextActionAt.Equal(tc.at)):
				t.Errorf("nextActionAt %v, want %s", s.NextActionAt, tc.at)
			}
			if got := kinds(d.Notices); got != tc.notices {
				t.Errorf("notices %q, want %q", got, tc.notices)
			}
			if !strings.Contains(s.Reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", s.Reason, tc.reason)
			}
		})
	}
}

// TestDecideRecord: a new serial on disk resets the failures but keeps the
// last renewal; one certagent did not write is noticed as changed on disk.
func TestDecideRecord(t *testing.T) {
	c := leaf(inventory.RenewLocalCA, inventory.StateOK)
	old := state.Cert{Serial: "01", Failures: 3, LastError: "x", LastRenewal: t0, LastResult: "renewed 00 -> 01 (local-ca)", PendingCSR: "certagent-y"}
	d := Decide(Input{Cert: c, Record: old, Node: "node1", Now: t0})
	want := state.Cert{Serial: "AB", LastRenewal: t0, LastResult: old.LastResult}
	if d.Record != want {
		t.Errorf("record %+v, want %+v", d.Record, want)
	}
	if len(d.Notices) == 0 || d.Notices[0].Kind != "changed" || d.Notices[0].Once || d.Notices[0].MessageID != logfields.MsgChangedOnDisk {
		t.Errorf("notices %+v", d.Notices)
	}
	// Renewed by certagent to this serial: not "changed on disk".
	ours := state.Cert{Serial: "01", LastResult: "renewed 01 -> AB"}
	if d := Decide(Input{Cert: c, Record: ours, Node: "node1", Now: t0}); kinds(d.Notices) != "scheduled" {
		t.Errorf("notices %q after our own renewal", kinds(d.Notices))
	}
}

// TestDecideHoldBack: a renewBefore longer than the lifetime never makes
// a just-renewed certificate due again within a tenth of its lifetime.
func TestDecideHoldBack(t *testing.T) {
	c := leaf(inventory.RenewLocalCA, inventory.StateRenewalDue)
	in := Input{Cert: c, Record: state.Cert{Serial: "AB", LastRenewal: t0}, Policy: schedule.Policy{RenewBefore: year - 24*time.Hour},
		RenewBefore: "364d", Node: "node1", Now: t0.Add(time.Hour)}
	d := Decide(in)
	if d.Action != None || d.Status.NextActionAt == nil || !d.Status.NextActionAt.Equal(t0.Add(year/10)) {
		t.Errorf("action %d next %v, want none until %s", d.Action, d.Status.NextActionAt, t0.Add(year/10))
	}
	if got := kinds(d.Notices); got != "floor,scheduled" {
		t.Errorf("notices %q", got)
	}
}
