// Package report tells the cluster what happens on the node: Events on the
// Node and its CertificateRotationHealthy condition, sent with the node's
// own credential through a NodeClient built in cmd (a fake in tests).
package report

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/rotate/pki"
)

// ConditionType is the Node condition certagent maintains.
const ConditionType = "CertificateRotationHealthy"

// ClientFunc builds the client to report with. It is called again for
// every flush with work, so a renewed credential is used at once; an error
// says why no client can be built (a refused credential, a missing file).
type ClientFunc func() (NodeClient, error)

// Reporter sends Events and the Node condition. It never blocks the
// caller: events wait in a bounded buffer (the oldest dropped first) while
// the API server cannot be reached.
type Reporter struct {
	client ClientFunc
	what   string // the credential, for the log
	log    *logrus.Logger
	// Buffer bounds the events kept while the API is unreachable (default 100).
	Buffer int
	// Clock stamps events and condition times (default the real clock).
	Clock clock.Clock

	mu      sync.Mutex // guards node, pending, conds, sent and clientErr
	node    string
	pending []nodeEvent
	// conds are the conditions to have, sent those the API server
	// accepted, by type.
	conds map[string]condition
	sent  map[string]*sentCondition
	// clientErr says why no client could be built.
	clientErr string
	wake      chan struct{}
}

type nodeEvent struct {
	typ, reason, message string
	at                   time.Time
}

type condition struct {
	healthy         bool
	reason, message string
}

// sentCondition is the condition last accepted by the API server, with the
// time its status last flipped.
type sentCondition struct {
	condition
	transition time.Time
}

// New reports through the clients that client builds; what names the
// credential (the kubeconfig) in the log. The node name is set with
// SetNode once known.
func New(client ClientFunc, what string, log *logrus.Logger) *Reporter {
	return &Reporter{client: client, what: what, log: log, wake: make(chan struct{}, 1)}
}

// SetNode names the Node to report on.
func (r *Reporter) SetNode(node string) {
	r.mu.Lock()
	r.node = node
	r.mu.Unlock()
	r.poke()
}

func (r *Reporter) nodeName() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.node
}

func (r *Reporter) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// Event queues an Event on the Node.
func (r *Reporter) Event(typ, reason, message string) {
	if r == nil {
		return
	}
	at := r.now()
	r.mu.Lock()
	if max := r.buffer(); len(r.pending) >= max {
		r.pending = r.pending[len(r.pending)-max+1:]
	}
	r.pending = append(r.pending, nodeEvent{typ, reason, message, at})
	r.mu.Unlock()
	r.poke()
}

// Condition sets the Node condition (sent when it changes).
func (r *Reporter) Condition(healthy bool, reason, message string) {
	r.SetCondition(ConditionType, healthy, reason, message)
}

// SetCondition sets a Node condition of another type certagent keeps
// (a CA rotation's progress), sent when it changes.
func (r *Reporter) SetCondition(typ string, status bool, reason, message string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	if r.conds == nil {
		r.conds, r.sent = map[string]condition{}, map[string]*sentCondition{}
	}
	r.conds[typ] = condition{status, reason, message}
	r.mu.Unlock()
	r.poke()
}

// changedConditions lists the types whose condition differs from what
// was sent, in a stable order.
func (r *Reporter) changedConditions() []string {
	var out []string
	for typ, c := range r.conds {
		if s := r.sent[typ]; s == nil || s.condition != c {
			out = append(out, typ)
		}
	}
	sort.Strings(out)
	return out
}

func (r *Reporter) buffer() int {
	if r.Buffer > 0 {
		return r.Buffer
	}
	return 100
}

func (r *Reporter) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Pending reports how many events wait to be sent.
func (r *Reporter) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Run sends until ctx ends, retrying every few seconds while the API
// server is away.
func (r *Reporter) Run(ctx context.Context) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		r.Flush(ctx)
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		}
	}
}

// Flush sends what waits: the events in order, then the condition if it
// changed. It stops at the first error; the rest waits for the next flush.
func (r *Reporter) Flush(ctx context.Context) {
	node := r.nodeName()
	if node == "" || !r.hasWork() {
		return
	}
	c, err := r.client()
	r.setClientErr(err)
	if err != nil {
		return
	}
	for {
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.mu.Unlock()
			break
		}
		ev := r.pending[0]
		r.mu.Unlock()
		if err := c.CreateEvent(ctx, event(node, ev)); err != nil {
			r.log.WithField("REASON", err.Error()).Debug("event not sent yet")
			return
		}
		r.mu.Lock()
		if len(r.pending) > 0 && r.pending[0] == ev {
			r.pending = r.pending[1:]
		}
		r.mu.Unlock()
	}
	r.mu.Lock()
	types := r.changedConditions()
	r.mu.Unlock()
	for _, typ := range types {
		r.mu.Lock()
		cond, sent := r.conds[typ], r.sent[typ]
		r.mu.Unlock()
		next, err := r.sendCondition(ctx, c, node, typ, cond, sent)
		if err != nil {
			r.log.WithField("REASON", err.Error()).Debug("node condition not sent yet")
			return
		}
		r.mu.Lock()
		r.sent[typ] = next
		r.mu.Unlock()
	}
}

// hasWork reports whether events wait or the condition changed.
func (r *Reporter) hasWork() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending) > 0 || len(r.changedConditions()) > 0
}

// setClientErr records why no client could be built (nil: one was), and
// logs each new reason once.
func (r *Reporter) setClientErr(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	r.mu.Lock()
	changed := msg != r.clientErr
	r.clientErr = msg
	r.mu.Unlock()
	if !changed || err == nil {
		return
	}
	e := r.log.WithFields(logrus.Fields{"KUBECONFIG": r.what, "REASON": msg})
	if errors.Is(err, pki.ErrRefusedCredential) {
		e.Error("cannot report to the cluster")
	} else {
		e.Warn("cannot report to the cluster")
	}
}

// Err says why Events and the Node condition cannot be sent: the
// kubeconfig gives no usable client (a refused credential, a missing
// file). "" when the last attempt built one.
func (r *Reporter) Err() string {
	if r == nil {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clientErr
}

func event(node string, ev nodeEvent) *corev1.Event {
	t := metav1.NewTime(ev.at)
	return &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{GenerateName: node + ".certagent.", Namespace: "default"},
		InvolvedObject:      corev1.ObjectReference{Kind: "Node", Name: node, UID: types.UID(node), APIVersion: "v1"},
		Reason:              ev.reason,
		Message:             ev.message,
		Type:                ev.typ,
		Source:              corev1.EventSource{Component: "certagent", Host: node},
		FirstTimestamp:      t,
		LastTimestamp:       t,
		Count:               1,
		ReportingController: "certagent",
		ReportingInstance:   node,
	}
}

// sendCondition patches the condition. lastTransitionTime changes only
// when the status flips (API conventions); lastHeartbeatTime is the time
// of this send. With nothing sent since the start, the Node's own
// condition tells whether the status flips.
func (r *Reporter) sendCondition(ctx context.Context, c NodeClient, node, typ string, cond condition, sent *sentCondition) (*sentCondition, error) {
	now := r.now()
	next := &sentCondition{condition: cond, transition: now}
	switch {
	case sent != nil && sent.healthy == cond.healthy:
		next.transition = sent.transition
	case sent == nil:
		if prev, err := c.Condition(ctx, node, typ); err == nil && prev != nil && prev.Status == status(cond.healthy) && !prev.LastTransitionTime.IsZero() {
			next.transition = prev.LastTransitionTime.Time
		}
	}
	err := c.PatchCondition(ctx, node, corev1.NodeCondition{
		Type: corev1.NodeConditionType(typ), Status: status(cond.healthy), Reason: cond.reason, Message: cond.message,
		LastHeartbeatTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(next.transition),
	})
	if err != nil {
		return nil, err
	}
	return next, nil
}

func status(healthy bool) corev1.ConditionStatus {
	if healthy {
		return corev1.ConditionTrue
	}
	return corev1.ConditionFalse
}
