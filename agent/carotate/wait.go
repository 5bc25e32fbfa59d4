package carotate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
)

// watchSeconds bounds one watch request: the server ends it before the
// client's 30-second request timeout would cut it, and the wait watches
// again from where it was.
var watchSeconds int64 = 25

// waiter follows every Node until each is done with one phase, and keeps
// nodes and nodesDone in the ConfigMap up to date.
type waiter struct {
	r       *Rotator
	c       *Cluster
	rv      *string
	views   map[string]NodeView
	printed map[string]string // the last line printed per node
	failing error             // the API's last failure, nil once it answered again
}

// wait returns once every Node reports c.Phase done for c.ID, with what
// each reports. It lists, then watches from the list's version (watching
// again when a watch ends, listing again when it fails); --timeout bounds
// the whole wait.
func (r *Rotator) wait(ctx context.Context, c *Cluster, rv *string) (map[string]NodeView, error) {
	w := &waiter{r: r, c: c, rv: rv, printed: map[string]string{}}
	timer := r.Clock.NewTimer(r.timeout())
	defer timer.Stop()
	for {
		items, listRV, err := listNodes(ctx, r.Client)
		if !transient(ctx, err) && err != nil {
			return nil, err
		}
		if err != nil {
			w.failed(err)
			if err := w.pause(ctx, timer.C()); err != nil {
				return nil, err
			}
			r.reconnect()
			continue
		}
		w.failing = nil
		w.views = map[string]NodeView{}
		for i := range items {
			w.views[items[i].Name] = View(&items[i], c.ID)
		}
		if done, err := w.settle(ctx); done || err != nil {
			return w.views, err
		}
		done, err := w.follow(ctx, listRV, timer.C())
		if done || err != nil {
			return w.views, err
		}
		if err := w.pause(ctx, timer.C()); err != nil {
			return nil, err
		}
		r.reconnect()
	}
}

// failed says once per run of failures that the API failed.
func (w *waiter) failed(err error) {
	if w.failing == nil {
		w.r.printf("%v; trying again until the wait ends", err)
	}
	w.failing = err
}

// pause waits retryAfter; the wait's end or ctx's is an error.
func (w *waiter) pause(ctx context.Context, timeout <-chan time.Time) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timeout:
		return w.timedOut()
	case <-w.r.Clock.After(retryAfter):
		return nil
	}
}

// follow watches Nodes from rv until every node is done (true), the
// timer fires (an error), or the watch fails (false, nil: list again).
func (w *waiter) follow(ctx context.Context, rv string, timeout <-chan time.Time) (bool, error) {
	for {
		wi, err := w.r.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{ResourceVersion: rv, TimeoutSeconds: &watchSeconds, AllowWatchBookmarks: true})
		if err != nil {
			w.failed(fmt.Errorf("watch nodes: %w", err))
			return false, nil
		}
		w.failing = nil
		ended, done, err := w.events(ctx, wi, &rv, timeout)
		wi.Stop()
		if done || err != nil || !ended {
			return done, err
		}
	}
}

// events consumes one watch. ended: the watch closed normally (watch
// again from rv); false with no error: it failed (list again).
func (w *waiter) events(ctx context.Context, wi watch.Interface, rv *string, timeout <-chan time.Time) (ended, done bool, err error) {
	for {
		select {
		case <-ctx.Done():
			return false, false, ctx.Err()
		case <-timeout:
			return false, false, w.timedOut()
		case ev, ok := <-wi.ResultChan():
			if !ok {
				return true, false, nil
			}
			n, isNode := ev.Object.(*corev1.Node)
			if ev.Type == watch.Error || !isNode {
				return false, false, nil
			}
			*rv = n.ResourceVersion
			switch ev.Type {
			case watch.Added, watch.Modified:
				w.views[n.Name] = View(n, w.c.ID)
			case watch.Deleted:
				delete(w.views, n.Name)
			default:
				continue
			}
			if done, err := w.settle(ctx); done || err != nil {
				return false, done, err
			}
		}
	}
}

// settle prints what changed, records nodes and nodesDone when they
// changed, and reports whether every node is done.
func (w *waiter) settle(ctx context.Context) (bool, error) {
	p := w.c.Phase
	nodes := slices.Sorted(maps.Keys(w.views))
	var done []string
	for _, n := range nodes {
		line := "waiting on " + n + ": " + w.views[n].Waiting(p)
		if w.views[n].DoneWith(p) {
			done, line = append(done, n), "node "+n+" done with "+string(p)
		}
		if !slices.Contains(w.c.Nodes, n) {
			w.r.printf("node %s joined the cluster: it takes part from now on", n)
		}
		if w.printed[n] != line {
			w.printed[n] = line
			w.r.printf("%s", line)
		}
	}
	for _, n := range w.c.Nodes {
		if _, ok := w.views[n]; !ok {
			w.r.printf("node %s left the cluster: no longer waited on", n)
		}
	}
	if !slices.Equal(nodes, w.c.Nodes) || !slices.Equal(done, w.c.NodesDone) {
		next := *w.c
		next.Nodes, next.NodesDone = nodes, done
		if err := w.r.put(ctx, &next, w.rv); err != nil {
			return false, err
		}
		*w.c = next
	}
	return len(nodes) > 0 && len(done) == len(nodes), nil
}

// timedOut names the nodes not done and what each reports.
func (w *waiter) timedOut() error {
	var lag []string
	for _, n := range slices.Sorted(maps.Keys(w.views)) {
		if !w.views[n].DoneWith(w.c.Phase) {
			lag = append(lag, fmt.Sprintf("node %s: %s", n, w.views[n].Waiting(w.c.Phase)))
		}
	}
	return &TimeoutError{Phase: w.c.Phase, After: w.r.timeout(), Lagging: lag, API: w.failing}
}

// TimeoutError: nodes were not done with Phase within the wait's bound.
type TimeoutError struct {
	Phase   Phase
	After   time.Duration
	Lagging []string // "node X: what it reports"
	// API is the API's failure when the wait ended while it failed.
	API error
	// Waiting, when set, says what was not there in time instead of
	// nodes (Lagging is then empty).
	Waiting string
}

// Error names the phase, the bound and each lagging node on its own line.
func (e *TimeoutError) Error() string {
	lines := e.Lagging
	if e.API != nil {
		lines = append(slices.Clip(lines), "the API did not answer: "+e.API.Error())
	}
	if e.Waiting != "" {
		return fmt.Sprintf("after phase %s, within %s: %s (rerun to go on waiting)%s", e.Phase, e.After, e.Waiting, strings.Join(append([]string{""}, lines...), "\n  "))
	}
	return fmt.Sprintf("phase %s not done on every node within %s (rerun to go on waiting):\n  %s", e.Phase, e.After, strings.Join(lines, "\n  "))
}

// RefusedError: a precondition failed; nothing was changed for it.
type RefusedError struct {
	Reasons []string // one failed precondition each
}

// Error prints each failed precondition on its own line.
func (e *RefusedError) Error() string {
	return "refused:\n  " + strings.Join(e.Reasons, "\n  ")
}

// IsRefused reports whether err is a RefusedError.
func IsRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}
