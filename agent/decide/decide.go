// Package decide is certagent's renewal policy as one pure function: from
// a certificate, what the agent remembers of it, the policy, who owns it
// (the kubelet or certagent) and the time, it works out the certificate's
// renewal status (README, `certagent status`), whether to renew it now and
// how, and what to tell the journal and the cluster. It logs, writes and
// sends nothing itself: the loop does, once per certificate serial.
package decide

import (
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/agent/schedule"
	"github.com/certagent/certagent/agent/state"
)

// Input is what a decision depends on.
type Input struct {
	Cert *inventory.Certificate
	// Record is what the agent keeps of the certificate (state.json).
	Record state.Cert
	Policy schedule.Policy
	// RenewBefore is the configured text of Policy.RenewBefore, for notices.
	RenewBefore string
	// Node seeds the certificate's renewal point and retry jitter.
	Node string
	// Kubelet says whether the kubelet renews the certificate itself
	// (only for the renewal path csr).
	Kubelet Ownership
	// CSRJob is set while a renewal through the cluster runs for it;
	// CSRName names its request once made.
	CSRJob  bool
	CSRName string
	// Rotating, when set, renews the certificate now, due or not, for
	// this reason: the CA that issued it is being replaced.
	Rotating string
	Now      time.Time
}

// Ownership says whether the kubelet rotates a certificate and when
// certagent steps in if it has not.
type Ownership struct {
	Kubelet bool
	StepIn  time.Time
	Why     string
}

// Action is what the loop does with the certificate now.
type Action int

// The actions.
const (
	None       Action = iota
	RenewLocal        // renew in the local transaction (local CA or self-signed)
	RenewCSR          // start a renewal through the cluster
)

// Decision is the outcome: the status to publish, the record to keep, the
// action, and the notices to give.
type Decision struct {
	Status api.RenewalStatus
	// Record is the record to keep (reset when the serial changed).
	Record  state.Cert
	Action  Action
	Notices []Notice
}

// Notice is something to log and/or report. The loop gives one with Once
// set a single time per certificate serial and Kind.
type Notice struct {
	Kind string
	Once bool
	// MessageID, Level, Message, Method and Reason make the journal entry
	// (none when MessageID is empty).
	MessageID      string
	Level          logrus.Level
	Message        string
	Method, Reason string
	EventType      string // an Event on the Node when set
	EventReason    string
	EventMessage   string
}

// renews lists the renewal paths certagent renews on.
var renews = map[inventory.RenewalPath]bool{inventory.RenewLocalCA: true, inventory.RenewCSR: true, inventory.RenewSelfSigned: true}

// Decide works out one certificate's decision.
func Decide(in Input) Decision {
	c, st, now := in.Cert, in.Record, in.Now
	var d Decision
	if st.Serial != c.Serial {
		if st.Serial != "" && st.LastResult != "" && !strings.HasSuffix(st.LastResult, c.Serial) {
			d.Notices = append(d.Notices, Notice{Kind: "changed", MessageID: logfields.MsgChangedOnDisk, Level: logrus.InfoLevel,
				Message: "certificate changed on disk", Reason: "serial " + st.Serial + " replaced on disk"})
		}
		st = state.Cert{Serial: c.Serial, LastRenewal: st.LastRenewal, LastResult: st.LastResult}
	}
	d.Record = st
	rs := &d.Status
	rs.Failures, rs.LastError, rs.LastResult = st.Failures, st.LastError, st.LastResult
	rs.LastAttempt, rs.LastRenewal = timePtr(st.LastAttempt), timePtr(st.LastRenewal)
	switch {
	case c.RenewalPath == inventory.RenewCSR && in.CSRJob:
		rs.State, rs.NextAction, rs.NextActionAt, rs.PendingCSR = api.StateRenewing, "wait", timePtr(now), in.CSRName
		rs.Reason = "requesting a certificate from the cluster"
		if in.CSRName != "" {
			rs.Reason = fmt.Sprintf("waiting for CSR %s to be issued; to approve it: kubectl certificate approve %s", in.CSRName, in.CSRName)
		}
	case !renews[c.RenewalPath]:
		notRenewed(&d, c, now)
	default:
		renewable(&d, in, st)
	}
	return d
}

// notRenewed is the decision for a certificate certagent does not renew.
func notRenewed(d *Decision, c *inventory.Certificate, now time.Time) {
	rs := &d.Status
	rs.NextAction, rs.State = "none", api.StateOK
	rs.Reason = map[inventory.RenewalPath]string{
		inventory.RenewExternal: "its CA key is not on this node",
		inventory.RenewNone:     "not renewable (a CA or self-signed)",
		inventory.RenewRefused:  "left alone: " + c.LeftAlone,
	}[c.RenewalPath]
	method := string(c.RenewalPath)
	if c.RenewalPath == inventory.RenewRefused {
		d.Notices = append(d.Notices, Notice{Kind: "left-alone", Once: true, MessageID: logfields.MsgLeftAlone, Level: logrus.WarnLevel,
			Message: "certificate left alone: certagent will not re-sign it", Method: method, Reason: c.LeftAlone})
	}
	expired := now.After(c.NotAfter)
	if expired {
		rs.State = api.StateExpired
		d.Notices = append(d.Notices, Notice{Kind: "expired", Once: true, MessageID: logfields.MsgExpired, Level: logrus.ErrorLevel,
			Message: "certificate expired and certagent cannot renew it", Method: method, Reason: rs.Reason})
	}
	if c.State == inventory.StateRenewalDue || expired {
		d.Notices = append(d.Notices, Notice{Kind: "unrenewable", Once: true, EventType: corev1.EventTypeWarning, EventReason: "CertificateExpiringUnrenewable",
			EventMessage: fmt.Sprintf("%s expires %s and certagent cannot renew it here: %s", c.Name, c.NotAfter.UTC().Format(time.RFC3339), rs.Reason)})
	}
}

// renewable is the decision for a certificate certagent renews: scheduled,
// due, retried after a failure, or left to the kubelet until it steps in.
func renewable(d *Decision, in Input, st state.Cert) {
	c, now, rs := in.Cert, in.Now, &d.Status
	method := string(c.RenewalPath)
	deadline := schedule.Deadline(c.NotBefore, c.NotAfter, in.Policy, schedule.Source(c.Serial, in.Node))
	kubelet := c.RenewalPath == inventory.RenewCSR && in.Kubelet.Kubelet
	if kubelet {
		deadline = in.Kubelet.StepIn
	}
	// A renewBefore as long as the lifetime would make every renewed
	// certificate due at once: never renew the same certificate again
	// within a tenth of its lifetime.
	life := c.NotAfter.Sub(c.NotBefore)
	if held, ok := schedule.HoldBack(deadline, st.LastRenewal, life); ok {
		deadline = held
		d.Notices = append(d.Notices, Notice{Kind: "floor", Once: true, MessageID: logfields.MsgRenewalScheduled, Level: logrus.WarnLevel,
			Message: "renewal held back", Method: method,
			Reason: fmt.Sprintf("renewBefore (%s) leaves no room in a %s lifetime: renewing at most every %s", in.RenewBefore, inventory.Human(life), inventory.Human(life/10))})
	}
	expired := now.After(c.NotAfter)
	if expired {
		deadline = now
	}
	switch {
	case st.Failures > 0 && now.Before(st.NextAttempt):
		rs.State, rs.NextAction, rs.NextActionAt, rs.Reason = api.StateFailed, "retry", timePtr(st.NextAttempt), st.LastError
		if expired {
			rs.State = api.StateExpired
		}
	case in.Rotating != "":
		rs.State, rs.NextAction, rs.NextActionAt, rs.Reason = api.StateRenewing, "renew", timePtr(now), in.Rotating
		d.Action = RenewLocal
		if c.RenewalPath == inventory.RenewCSR {
			d.Action = RenewCSR
		}
	case !now.Before(deadline):
		rs.State, rs.NextAction, rs.NextActionAt = api.StateRenewing, "renew", timePtr(now)
		d.Action = RenewLocal
		if c.RenewalPath == inventory.RenewCSR {
			d.Action = RenewCSR
			if kubelet {
				rs.Reason = "the kubelet did not rotate it in its window: certagent steps in"
				d.Notices = append(d.Notices, Notice{Kind: "stepin", Once: true, MessageID: logfields.MsgSteppedIn, Level: logrus.WarnLevel,
					Message: "kubelet did not rotate its certificate", Method: "csr",
					Reason: in.Kubelet.Why + ", but the certificate is past 95 % of its lifetime: certagent steps in"})
			}
		}
	case kubelet:
		rs.State, rs.NextAction, rs.NextActionAt = api.StateOK, "step-in", timePtr(deadline)
		rs.Reason = in.Kubelet.Why + "; certagent steps in then if it has not"
	default:
		rs.State, rs.NextAction, rs.NextActionAt = api.StateOK, "renew", timePtr(deadline)
		if c.State == inventory.StateRenewalDue {
			rs.State = api.StateScheduled
		}
		d.Notices = append(d.Notices, Notice{Kind: "scheduled", Once: true, MessageID: logfields.MsgRenewalScheduled, Level: logrus.InfoLevel,
			Message: "renewal scheduled", Method: method, Reason: "at " + deadline.UTC().Format(time.RFC3339)})
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
