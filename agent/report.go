package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/certagent/certagent/rotate/pki"
)

// ConditionType is the Node condition certagent maintains.
const ConditionType = "CertificateRotationHealthy"

// Reporter tells the cluster what happens on the node: Events on the Node
// and the CertificateRotationHealthy condition, with the node's own
// credential (what the Node authorizer allows a node). It never blocks the
// caller: events wait in a bounded buffer (the oldest dropped first) while
// the API server cannot be reached.
type Reporter struct {
	root       *pki.Root
	kubeconfig string // node path, the node's credential
	log        *logrus.Logger
	// Buffer bounds the events kept while the API is unreachable (default 100).
	Buffer int

	mu       sync.Mutex // guards node, pending, cond, condSent and clientErr
	node     string
	pending  []nodeEvent
	cond     *nodeCondition
	condSent *nodeCondition
	// clientErr says why no client could be built from the kubeconfig.
	clientErr string
	wake      chan struct{}
	client    kubernetes.Interface // owned by Run
}

type nodeEvent struct {
	typ, reason, message string
	at                   time.Time
}

type nodeCondition struct {
	healthy         bool
	reason, message string
}

// NewReporter reports with the credential in kubeconfig (a node path).
// The node name is set with SetNode once known.
func NewReporter(root *pki.Root, kubeconfig string, log *logrus.Logger) *Reporter {
	return &Reporter{root: root, kubeconfig: kubeconfig, log: log, wake: make(chan struct{}, 1)}
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

// Event queues an Event on the Node.
func (r *Reporter) Event(typ, reason, message string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	if max := r.buffer(); len(r.pending) >= max {
		r.pending = r.pending[len(r.pending)-max+1:]
	}
	r.pending = append(r.pending, nodeEvent{typ, reason, message, time.Now()})
	r.mu.Unlock()
	r.poke()
}

// Condition sets the Node condition (sent when it changes).
func (r *Reporter) Condition(healthy bool, reason, message string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.cond = &nodeCondition{healthy, reason, message}
	r.mu.Unlock()
	r.poke()
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
		r.flush(ctx)
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		}
	}
}

func (r *Reporter) flush(ctx context.Context) {
	node := r.nodeName()
	if node == "" || !r.hasWork() {
		return
	}
	// A client per flush with work: the credential is read again, so a
	// renewed certificate is used at once (client-go keeps one transport
	// per credential, so an unchanged one costs no new connection).
	c, _, err := kubeClient(r.root, r.kubeconfig, nil)
	r.setClientErr(err)
	if err != nil {
		return
	}
	r.client = c
	for {
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.mu.Unlock()
			break
		}
		ev := r.pending[0]
		r.mu.Unlock()
		if err := r.sendEvent(ctx, node, ev); err != nil {
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
	cond, sent := r.cond, r.condSent
	r.mu.Unlock()
	if cond == nil || (sent != nil && *sent == *cond) {
		return
	}
	if err := r.sendCondition(ctx, node, *cond); err != nil {
		r.log.WithField("REASON", err.Error()).Debug("node condition not sent yet")
		return
	}
	r.mu.Lock()
	r.condSent = cond
	r.mu.Unlock()
}

// hasWork reports whether events wait or the condition changed.
func (r *Reporter) hasWork() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending) > 0 || (r.cond != nil && (r.condSent == nil || *r.condSent != *r.cond))
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
	e := r.log.WithFields(logrus.Fields{"KUBECONFIG": r.kubeconfig, "REASON": msg})
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

func (r *Reporter) sendEvent(ctx context.Context, node string, ev nodeEvent) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	t := metav1.NewTime(ev.at)
	_, err := r.client.CoreV1().Events("default").Create(cctx, &corev1.Event{
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
	}, metav1.CreateOptions{})
	return err
}

func (r *Reporter) sendCondition(ctx context.Context, node string, c nodeCondition) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	status := corev1.ConditionTrue
	if !c.healthy {
		status = corev1.ConditionFalse
	}
	now := metav1.Now()
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type: ConditionType, Status: status, Reason: c.reason, Message: c.message,
		LastHeartbeatTime: now, LastTransitionTime: now,
	}}}})
	if err != nil {
		return err
	}
	_, err = r.client.CoreV1().Nodes().Patch(cctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("patch node %s status: %w", node, err)
	}
	return nil
}
