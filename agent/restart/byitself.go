package restart

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/logfields"
)

// loadedByItself says whether comp took its renewed certificates (mine)
// without a restart (byItself: each is one it reads anew by itself, one
// of them served where a probe sees it): within restart.reloadWait every
// served endpoint of a renewed certificate that answers presents its new
// serial (expect), at least one answering. The serial is the proof; no
// health check is asked for (an unready etcd behind kube-apiserver is no
// reason to restart it). Then it is confirmed as a restart would be
// (journal "restart done", status lastAction reload) and true is
// returned; otherwise the caller restarts it. Also true, with nothing
// confirmed, when ctx ends meanwhile (the daemon stops): no restart and
// no rollback of a pair nothing showed bad; the stale check reports it.
func (r *Restarter) loadedByItself(ctx context.Context, cfg *config.Config, comp component, mine []Renewed, expect map[string]string, ping func()) bool {
	var names []string
	for _, rn := range mine {
		names = append(names, rn.Cert.Name)
	}
	known := false // a new serial to look for (tests renew without one)
	for _, s := range comp.Served {
		known = known || slices.Contains(names, s.Cert) && expect[s.Cert] != ""
	}
	if !known || !byItself(cfg, comp, names) {
		return false
	}
	clients := r.clientsOf(cfg, comp)
	err := r.poll(ctx, cfg.Restart.ReloadWaitDuration, ping, func() error { return r.servesRenewed(ctx, comp, expect, clients) })
	fields := logrus.Fields{"COMPONENT": comp.Name}
	switch {
	case ctx.Err() != nil:
		fields["REASON"] = ctx.Err().Error()
		r.Log.WithFields(fields).Warn("stopped while waiting for the renewed certificate to show: neither restarted nor rolled back")
		return true
	case err != nil:
		fields["REASON"] = err.Error()
		r.Log.WithFields(fields).Info("the renewed certificate does not show: restarting")
		return false
	}
	r.note(comp.Name, api.ActionReload, nil)
	fields["MESSAGE_ID"] = logfields.MsgRestartDone
	r.Log.WithFields(fields).Info(reloadedMsg)
	return true
}

// byItself: restart.reloadWait is on, every certificate named is one comp
// reads anew by itself (comp.Reloads), and one of them is served where a
// probe can see its serial.
func byItself(cfg *config.Config, comp component, names []string) bool {
	if cfg.Restart.ReloadWaitDuration <= 0 || len(comp.Reloads) == 0 || len(names) == 0 {
		return false
	}
	seen := false
	for _, n := range names {
		if !slices.Contains(comp.Reloads, n) {
			return false
		}
		for _, s := range comp.Served {
			seen = seen || s.Cert == n
		}
	}
	return seen
}

// servesRenewed checks comp's served endpoints of renewed certificates:
// none may present another serial than expected, and one at least must
// answer with it (an endpoint that does not answer, such as etcd's peer
// port bound elsewhere, is unseen, not wrong).
func (r *Restarter) servesRenewed(ctx context.Context, comp component, expect map[string]string, clients map[string]clientPair) error {
	var errs []error
	shown := 0
	for _, s := range comp.Served {
		want, ok := expect[s.Cert]
		if !ok {
			continue
		}
		got, err := servedSerial(ctx, s.Address, clients[s.Client])
		switch {
		case err != nil:
			errs = append(errs, err)
		case got != want:
			return fmt.Errorf("%s serves serial %s, want %s", s.Address, got, want)
		default:
			shown++
		}
	}
	if shown == 0 {
		return fmt.Errorf("no endpoint shows the renewed certificate: %w", errors.Join(errs...))
	}
	return nil
}

// reloadedMsg is the journal line of a component confirmed without a
// restart (MESSAGE_ID restart done).
const reloadedMsg = "loaded the renewed certificate by itself, not restarted: the new certificate is served"

// poll calls check every 500 ms until it passes or wait has passed (the
// last error, with the wait), feeding ping meanwhile.
func (r *Restarter) poll(ctx context.Context, wait time.Duration, ping func(), check func() error) error {
	deadline := r.Clock.Now().Add(wait)
	for {
		err := check()
		if err == nil || !r.Clock.Now().Before(deadline) {
			if err != nil {
				err = fmt.Errorf("after %s: %w", wait, err)
			}
			return err
		}
		if ping != nil {
			ping()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.Clock.After(500 * time.Millisecond):
		}
	}
}
