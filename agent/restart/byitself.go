package restart

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/logfields"
)

// loadedByItself says whether comp took its renewed certificates (mine)
// without a restart: each is one it reads anew by itself (comp.Reloads),
// one of them is served where a probe sees it, and within
// restart.reloadWait every served endpoint of a renewed certificate
// presents its new serial (expect) and the health check passes. Then it
// is confirmed as a restart would be (journal "restart done", status
// lastAction reload) and true is returned; otherwise the caller restarts
// it. restart.reloadWait 0 turns this off.
func (r *Restarter) loadedByItself(ctx context.Context, cfg *config.Config, comp component, mine []Renewed, expect map[string]string, ping func()) bool {
	if cfg.Restart.ReloadWaitDuration <= 0 || len(comp.Reloads) == 0 {
		return false
	}
	seen := false
	for _, rn := range mine {
		if !slices.Contains(comp.Reloads, rn.Cert.Name) {
			return false
		}
		for _, s := range comp.Served {
			seen = seen || s.Cert == rn.Cert.Name && expect[s.Cert] != ""
		}
	}
	if !seen {
		return false // nothing would show it: restart
	}
	clients := r.clientsOf(cfg, comp)
	err := r.poll(ctx, cfg.Restart.ReloadWaitDuration, ping, func() error { return r.healthy(ctx, comp, expect, clients) })
	fields := logrus.Fields{"COMPONENT": comp.Name}
	if err != nil {
		fields["REASON"] = err.Error()
		r.Log.WithFields(fields).Info("the renewed certificate does not show: restarting")
		return false
	}
	r.note(comp.Name, api.ActionReload, nil)
	fields["MESSAGE_ID"] = logfields.MsgRestartDone
	r.Log.WithFields(fields).Info(reloadedMsg)
	return true
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
