package coord

import (
	"context"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/kube"
)

// Holder says who holds the restart Lease: Identity ("" when nobody),
// since when (the Lease's acquireTime) and when it was last renewed.
type Holder struct {
	Identity string
	Since    time.Time
}

// Lock is the cluster-wide restart lock.
type Lock interface {
	// TryAcquire takes the lock, or renews it when this node holds it.
	// (h, true, nil): held by this node; (h, false, nil): another node
	// holds it (h says who), or won a race for it; an error: the lock
	// cannot be had at all (no API server answers, or RBAC refuses).
	TryAcquire(ctx context.Context) (Holder, bool, error)
	// Release gives the lock up if this node holds it.
	Release(ctx context.Context) error
}

// LeaseLock is Lock on a coordination.k8s.io/v1 Lease. Every write
// carries the resourceVersion read just before it, so of two nodes racing
// for a free or expired Lease the API server lets one through and answers
// the other with a conflict. Expiry is judged by the local clock from
// when this node last saw the Lease change, never by comparing clocks of
// two nodes (the way client-go's leader election does).
type LeaseLock struct {
	Client    kube.CoordinationV1
	Namespace string
	Name      string
	Identity  string
	Duration  time.Duration
	Clock     clock.PassiveClock

	mu         sync.Mutex // guards observed and observedAt
	observed   string     // resourceVersion last seen
	observedAt time.Time  // local time it was first seen
}

// TryAcquire implements Lock.
func (l *LeaseLock) TryAcquire(ctx context.Context) (Holder, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.Clock.Now()
	leases := l.Client.Leases(l.Namespace)
	lease, err := leases.Get(ctx, l.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: l.Name, Namespace: l.Namespace}}
		l.take(lease, now, true)
		created, err := leases.Create(ctx, lease, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return Holder{}, false, nil // another node created it first
		}
		if err != nil {
			return Holder{}, false, fmt.Errorf("create lease %s/%s: %w", l.Namespace, l.Name, err)
		}
		l.observed, l.observedAt = created.ResourceVersion, now
		return holderOf(created), true, nil
	}
	if err != nil {
		return Holder{}, false, fmt.Errorf("get lease %s/%s: %w", l.Namespace, l.Name, err)
	}
	if lease.ResourceVersion != l.observed {
		l.observed, l.observedAt = lease.ResourceVersion, now
	}
	h := holderOf(lease)
	mine := h.Identity == l.Identity
	if !mine && h.Identity != "" && now.Sub(l.observedAt) <= l.durationOf(lease) {
		return h, false, nil
	}
	l.take(lease, now, !mine)
	updated, err := leases.Update(ctx, lease, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		return h, false, nil // another node wrote it since the read
	}
	if err != nil {
		return h, false, fmt.Errorf("update lease %s/%s: %w", l.Namespace, l.Name, err)
	}
	l.observed, l.observedAt = updated.ResourceVersion, now
	return holderOf(updated), true, nil
}

// take writes this node into the Lease; acquired says it is a new holder.
func (l *LeaseLock) take(lease *coordinationv1.Lease, now time.Time, acquired bool) {
	id := l.Identity
	secs := int32(l.Duration / time.Second)
	if secs < 1 {
		secs = 1
	}
	t := metav1.NewMicroTime(now)
	lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds, lease.Spec.RenewTime = &id, &secs, &t
	if acquired {
		lease.Spec.AcquireTime = &t
		n := int32(0)
		if lease.Spec.LeaseTransitions != nil {
			n = *lease.Spec.LeaseTransitions + 1
		}
		lease.Spec.LeaseTransitions = &n
	}
}

func (l *LeaseLock) durationOf(lease *coordinationv1.Lease) time.Duration {
	if s := lease.Spec.LeaseDurationSeconds; s != nil && *s > 0 {
		return time.Duration(*s) * time.Second
	}
	return l.Duration
}

// Release implements Lock: the holder is emptied, so the next node need
// not wait for the expiry.
func (l *LeaseLock) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	leases := l.Client.Leases(l.Namespace)
	lease, err := leases.Get(ctx, l.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get lease %s/%s: %w", l.Namespace, l.Name, err)
	}
	if holderOf(lease).Identity != l.Identity {
		return nil
	}
	empty := ""
	lease.Spec.HolderIdentity = &empty
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	if err != nil && !apierrors.IsConflict(err) {
		return fmt.Errorf("release lease %s/%s: %w", l.Namespace, l.Name, err)
	}
	return nil
}

func holderOf(lease *coordinationv1.Lease) Holder {
	var h Holder
	if p := lease.Spec.HolderIdentity; p != nil {
		h.Identity = *p
	}
	if t := lease.Spec.AcquireTime; t != nil {
		h.Since = t.Time
	}
	return h
}
