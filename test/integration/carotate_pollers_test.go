package integration

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/agent/carotate"
)

// freshClient builds a client from a kubeconfig as it is on disk now, on
// a transport of its own, as each kubectl run does: a new TLS handshake
// with the trust and the credential the file holds now, no connection
// reused. done closes its connections.
func freshClient(kubeconfig string) (cs kubernetes.Interface, done func(), err error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	cfg.Timeout = 5 * time.Second
	// A Dial of its own keeps client-go from handing out a cached
	// transport (and its pooled connections) for the same credential.
	d := &net.Dialer{Timeout: 2 * time.Second}
	cfg.Dial = d.DialContext
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, nil, err
	}
	if cs, err = kubernetes.NewForConfigAndClient(cfg, hc); err != nil {
		return nil, nil, err
	}
	return cs, hc.CloseIdleConnections, nil
}

// reqFailure is a request that failed, and why.
type reqFailure struct {
	at  time.Time
	err string
}

// isTrustError says whether a failure is the one a CA rotation must
// never cause: a certificate not trusted by the server or the client, or
// a credential refused (Unauthorized). Forbidden is not one: a
// kube-apiserver that has just started answers it until its authorizer
// has synced (and outside a restart any failure counts).
func isTrustError(s string) bool {
	for _, w := range []string{"x509", "tls:", "certificate", "Unauthorized"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// phaseMark is when the poller first saw the cluster at a phase of a
// rotation ("" before any).
type phaseMark struct {
	id    string
	phase carotate.Phase
	at    time.Time
}

// adminPoller is an administrator running kubectl every 200 ms: admin.conf
// read again for each request, a new connection each time. Each request
// reads the rotation's ConfigMap (NotFound is an answer too), so the
// poller also sees when the cluster phase moves.
type adminPoller struct {
	mu       sync.Mutex
	ok       int
	failures []reqFailure
	marks    []phaseMark
}

func pollAdmin(ctx context.Context, kubeconfig string) *adminPoller {
	p := &adminPoller{}
	go func() {
		for ctx.Err() == nil {
			start := time.Now()
			id, phase, err := readRotation(ctx, kubeconfig)
			p.mu.Lock()
			switch {
			case ctx.Err() != nil:
			case err != nil:
				p.failures = append(p.failures, reqFailure{start, err.Error()})
			default:
				p.ok++
				if n := len(p.marks); n == 0 || p.marks[n-1].id != id || p.marks[n-1].phase != phase {
					p.marks = append(p.marks, phaseMark{id, phase, start})
				}
			}
			p.mu.Unlock()
			time.Sleep(time.Until(start.Add(200 * time.Millisecond)))
		}
	}()
	return p
}

// readRotation reads the rotation's id and phase with the kubeconfig as it
// is now ("" when there is none).
func readRotation(ctx context.Context, kubeconfig string) (id string, phase carotate.Phase, err error) {
	cs, done, err := freshClient(kubeconfig)
	if err != nil {
		return "", "", fmt.Errorf("load %s: %w", kubeconfig, err)
	}
	defer done()
	cm, err := cs.CoreV1().ConfigMaps(carotate.Namespace).Get(ctx, carotate.ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	return cm.Data["id"], carotate.Phase(cm.Data["phase"]), nil
}

// snapshot returns the counts and copies of what the poller saw.
func (p *adminPoller) snapshot() (ok int, failures []reqFailure, marks []phaseMark) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ok, append([]reqFailure(nil), p.failures...), append([]phaseMark(nil), p.marks...)
}

// phaseAt is the rotation phase the poller had seen last at t.
func phaseAt(marks []phaseMark, t time.Time) carotate.Phase {
	var p carotate.Phase
	for _, m := range marks {
		if m.at.After(t) {
			break
		}
		p = m.phase
	}
	return p
}

// leaseWatch records every renewTime of some nodes' Leases, read every
// 500 ms with a kubeconfig as it is on disk. A renewal can only be missed
// by these reads while no API server answers, when no kubelet can renew.
type leaseWatch struct {
	mu       sync.Mutex
	renewals map[string][]time.Time
	readErrs int
}

func watchLeases(ctx context.Context, kubeconfig string, nodes ...string) *leaseWatch {
	w := &leaseWatch{renewals: map[string][]time.Time{}}
	go func() {
		for ctx.Err() == nil {
			start := time.Now()
			cs, done, err := freshClient(kubeconfig)
			for _, n := range nodes {
				if err != nil {
					break
				}
				var at time.Time
				l, gerr := cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, n, metav1.GetOptions{})
				if gerr == nil && l.Spec.RenewTime != nil {
					at = l.Spec.RenewTime.Time
				}
				w.mu.Lock()
				if gerr != nil {
					w.readErrs++
				} else if r := w.renewals[n]; !at.IsZero() && (len(r) == 0 || !r[len(r)-1].Equal(at)) {
					w.renewals[n] = append(r, at)
				}
				w.mu.Unlock()
			}
			if done != nil {
				done()
			}
			time.Sleep(time.Until(start.Add(500 * time.Millisecond)))
		}
	}()
	return w
}

// gap is the time between two renewals of a Lease.
type gap struct {
	from, to time.Time
}

func (g gap) length() time.Duration { return g.to.Sub(g.from) }

// gaps returns the node's gaps between renewals after since, longest first.
func (w *leaseWatch) gaps(node string, since time.Time) []gap {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []gap
	r := w.renewals[node]
	for i := 1; i < len(r); i++ {
		if r[i].After(since) {
			out = append(out, gap{r[i-1], r[i]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].length() > out[j].length() })
	return out
}

// count is how many renewals of the node were seen after since.
func (w *leaseWatch) count(node string, since time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, at := range w.renewals[node] {
		if at.After(since) {
			n++
		}
	}
	return n
}

// since returns the stand-in's restarts of comp (every component: "")
// that began after start: from the kill to the new process's health.
func (tl *restartLog) since(start time.Time, comp string) []interval {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var out []interval
	for _, iv := range tl.restarts {
		if iv.start.After(start) && (comp == "" || strings.HasSuffix(iv.what, " "+comp)) {
			out = append(out, iv)
		}
	}
	return out
}

// during says whether at falls in one of the intervals (widened by slack
// on both sides: a request in flight when the process died fails at its
// kill, one sent as /readyz turned ok may still be refused).
func during(at time.Time, ivs []interval, slack time.Duration) bool {
	for _, iv := range ivs {
		if !at.Before(iv.start.Add(-slack)) && !at.After(iv.end.Add(slack)) {
			return true
		}
	}
	return false
}

// overlapsAny says whether the gap contains part of one of the intervals.
func (g gap) overlapsAny(ivs []interval) bool {
	for _, iv := range ivs {
		if iv.start.Before(g.to) && iv.end.After(g.from) {
			return true
		}
	}
	return false
}
