package carotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// retryAfter is the pause before an API request is tried again.
var retryAfter = 2 * time.Second

// transient reports whether an API error may pass: the API server
// restarting (the rotation restarts it; a kube-apiserver that just
// started answers 403 until its RBAC cache is filled), a credential or
// serving certificate the rotation re-signed (401, TLS), overload.
// Answers that will not change by asking again are not. The credential
// was good when the command started (a 403 then is a refusal).
func transient(ctx context.Context, err error) bool {
	switch {
	case err == nil, ctx.Err() != nil, errors.Is(err, ErrInvalid), errors.Is(err, ErrConflict):
		return false
	case apierrors.IsNotFound(err), apierrors.IsInvalid(err), apierrors.IsBadRequest(err),
		apierrors.IsConflict(err), apierrors.IsAlreadyExists(err), apierrors.IsMethodNotSupported(err):
		return false
	}
	return true
}

// retry runs fn until it succeeds, fails for good, or failed transiently
// for r.Timeout. Before each new try the client is built again from the
// credential on disk (Connect), since the rotation re-signs both the
// admin credential and the API server's certificate.
func (r *Rotator) retry(ctx context.Context, fn func() error) error {
	var deadline time.Time
	for {
		err := fn()
		if !transient(ctx, err) {
			return err
		}
		now := r.Clock.Now()
		if deadline.IsZero() {
			deadline = now.Add(r.timeout())
			r.printf("%v; trying again for up to %s", err, r.timeout())
		}
		if now.After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.Clock.After(retryAfter):
		}
		r.reconnect()
	}
}

// reconnect builds the client again from the credential as it is now.
// A failure keeps the client there was (the next try says why).
func (r *Rotator) reconnect() {
	if r.Connect == nil {
		return
	}
	if cs, err := r.Connect(); err == nil {
		r.Client = cs
	}
}

// firstReadWindow bounds how long the command's first read is tried
// again when it is refused (401, 403) before that is taken as a refusal.
var firstReadWindow = 30 * time.Second

// firstRead reads the rotation. A refusal (401, 403) or a transient error
// is tried again, the client built again each time, for up to
// firstReadWindow (or r.Timeout when shorter): a kube-apiserver that just
// started answers 403 until its authorizer's caches are filled (the
// command is often rerun right after a restart). A refusal that lasts is
// a *RefusedError.
func (r *Rotator) firstRead(ctx context.Context) (*Cluster, string, error) {
	deadline := r.Clock.Now().Add(min(firstReadWindow, r.timeout()))
	for {
		c, rv, err := Store{Client: r.Client}.Get(ctx)
		denied := apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err)
		if err == nil || !denied && !transient(ctx, err) || ctx.Err() != nil || r.Clock.Now().After(deadline) {
			if denied {
				return nil, "", &RefusedError{Reasons: append(r.Refusals, fmt.Sprintf("the admin credential %s is not allowed to: %v", r.Kubeconfig, err))}
			}
			return c, rv, err
		}
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-r.Clock.After(retryAfter):
		}
		r.reconnect()
	}
}

// timeout is r.Timeout, or ten minutes when unset.
func (r *Rotator) timeout() time.Duration {
	if r.Timeout <= 0 {
		return 10 * time.Minute
	}
	return r.Timeout
}
