package agent

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/rotate"
)

// manifestRestorer is the part of a Restarter (restart.Restarter) that puts
// back static pod manifests a crash left moved aside mid-restart.
type manifestRestorer interface {
	ManifestsAside(cfg *config.Config) bool
	RestoreManifests(cfg *config.Config) []restart.Restored
}

// restoreManifests runs before anything else at start: a control plane must
// not stay without a component because certagent died while cycling it.
func (a *Agent) restoreManifests() {
	r, ok := a.opts.Restarter.(manifestRestorer)
	if !ok {
		return
	}
	for _, m := range r.RestoreManifests(a.cfg) {
		f := logrus.Fields{"MESSAGE_ID": logfields.MsgRepaired, "MANIFEST": m.Manifest, "ACTION": "manifest restored"}
		if m.Err != nil {
			f["REASON"], f["ACTION"] = m.Err.Error(), "manifest not restored"
			a.opts.Log.WithFields(f).Error("static pod manifest left aside by an interrupted restart")
			continue
		}
		a.opts.Log.WithFields(f).Warn("static pod manifest put back after an interrupted restart")
	}
}

// repairAtStart takes the renewal lock and repairs every transaction a
// crash interrupted (see rotate.Repair), logging what it did. When the lock
// cannot be had (a renew holds it), the holder repairs; the scan reports
// what is still interrupted as a problem meanwhile.
func (a *Agent) repairAtStart(ctx context.Context) {
	backupDir := a.cfg.Renewal.BackupDir
	r, ok := a.opts.Restarter.(manifestRestorer)
	aside := ok && r.ManifestsAside(a.cfg)
	if len(rotate.Interrupted(a.opts.Root, backupDir)) == 0 && !aside {
		return
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	lock, err := rotate.Acquire(lctx, a.opts.Root, backupDir)
	cancel()
	if err != nil {
		a.opts.Log.WithFields(logrus.Fields{"MESSAGE_ID": logfields.MsgRepaired, "REASON": err.Error()}).Warn("interrupted renewal not repaired at start")
		return
	}
	defer lock.Unlock()
	a.restoreManifests() // under the lock: an offline renew may be cycling a pod
	for _, r := range rotate.Repair(a.opts.Root, backupDir) {
		f := logrus.Fields{"MESSAGE_ID": logfields.MsgRepaired, "TRANSACTION": r.Dir, "ACTION": r.Action}
		if r.Err != nil {
			f["REASON"] = r.Err.Error()
			a.opts.Log.WithFields(f).Error("interrupted renewal could not be repaired")
			continue
		}
		a.opts.Log.WithFields(f).Warn("interrupted renewal repaired")
	}
}
