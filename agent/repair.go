package agent

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/rotate"
)

// repairAtStart takes the renewal lock and repairs every transaction a
// crash interrupted (see rotate.Repair), logging what it did. When the lock
// cannot be had (a renew holds it), the holder repairs; the scan reports
// what is still interrupted as a problem meanwhile.
func (a *Agent) repairAtStart(ctx context.Context) {
	backupDir := a.cfg.Renewal.BackupDir
	if len(rotate.Interrupted(a.opts.Root, backupDir)) == 0 {
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
