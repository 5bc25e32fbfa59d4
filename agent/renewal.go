// Package agent is certagent's long-running side: the loop that watches,
// schedules and renews, the local status API, and the one-shot renewal
// that `certagent renew` and the daemon share.
package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/plan"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// RenewRequest is what `certagent renew` asks for.
type RenewRequest struct {
	Names  []string `json:"names,omitempty"`
	All    bool     `json:"all,omitempty"`
	Force  bool     `json:"force,omitempty"`
	DryRun bool     `json:"dryRun,omitempty"`
	// TimeoutSeconds, when positive, is how long a renewal through a CSR
	// waits for approval (default: the configured timeout).
	TimeoutSeconds int64 `json:"timeoutSeconds,omitempty"`
}

// Line is one line of a renewal's output. Kind is one of interrupted,
// repaired, repair-failed, would-renew, skipped, warning, requested (a
// CSR was made), renewed, failed, nothing.
type Line struct {
	Kind    string `json:"kind"`
	Name    string `json:"name,omitempty"`
	Message string `json:"message"`
}

// String formats the line as `certagent renew` prints it.
func (l Line) String() string {
	switch {
	case l.Kind == "nothing":
		return l.Message
	case l.Name == "":
		return fmt.Sprintf("%-9s %s", l.Kind, l.Message)
	}
	return fmt.Sprintf("%-9s %-26s %s", l.Kind, l.Name, l.Message)
}

// Outcome is the result of one renewal run.
type Outcome struct {
	Lines []Line `json:"lines"`
	// Failed is set when any requested certificate was not renewed.
	Failed  bool            `json:"failed"`
	Results []rotate.Result `json:"-"`
	Plan    *plan.Plan      `json:"-"`
	// Renewed lists every certificate renewed (from the local CA or
	// through a CSR), as it was before, for the restarts that follow.
	Renewed []Renewed `json:"-"`
	// CSR lists the certificates asked for by name that are renewed
	// through the cluster, when RenewOptions.DeferCSR left them to the
	// caller.
	CSR []*inventory.Certificate `json:"-"`
	// Report is the scan the plan was made from.
	Report *inventory.Report `json:"-"`
}

func (o *Outcome) add(kind, name, format string, a ...any) {
	o.Lines = append(o.Lines, Line{Kind: kind, Name: name, Message: fmt.Sprintf(format, a...)})
}

// RenewOptions are the knobs of RenewOnce.
type RenewOptions struct {
	LockTimeout time.Duration
	// LockWait, when set, is told once what the renewal waits for when
	// the lock is held (by another certagent, or a running kubeadm).
	LockWait func(what string)
	Hooks    rotate.Hooks
	Now      time.Time
	// CSRTimeout, when positive, replaces the configured wait for a CSR's
	// approval.
	CSRTimeout time.Duration
	// CSRWaiting, when set, is told when a certificate's request exists;
	// the function it returns is called when the wait is over.
	CSRWaiting func(name, csr string) (done func())
	// DeferCSR leaves the certificates renewed through a CSR to the caller
	// (in Outcome.CSR): the daemon runs them as its own jobs.
	DeferCSR bool
	// Client builds API clients (default kubeClient; tests use fakes).
	Client ClientFunc
}

// RenewOnce runs one renewal under the lock: repair what a crash left,
// scan, plan, renew. A returned error means nothing was attempted (the
// lock, a scan or the request itself failed); per-certificate failures are
// in the outcome.
func RenewOnce(ctx context.Context, root *pki.Root, cfg *config.Config, req RenewRequest, o RenewOptions) (*Outcome, error) {
	out := &Outcome{}
	backupDir := cfg.Renewal.BackupDir
	if req.DryRun {
		for _, d := range rotate.Interrupted(root, backupDir) {
			out.add("interrupted", "", "transaction %s: the next renew repairs it", d)
		}
	} else {
		if o.LockTimeout <= 0 {
			o.LockTimeout = time.Minute
		}
		lctx, cancel := context.WithTimeout(ctx, o.LockTimeout)
		lock, err := rotate.AcquireNotify(lctx, root, backupDir, o.LockWait)
		cancel()
		if err != nil {
			return nil, err
		}
		defer lock.Unlock()
		for _, r := range rotate.Repair(root, backupDir) {
			if r.Err != nil {
				out.add("repair-failed", "", "%s: %s failed: %v", r.Dir, r.Action, r.Err)
			} else {
				out.add("repaired", "", "%s: %s", r.Dir, r.Action)
			}
		}
		rotate.Prune(root, backupDir, cfg.Renewal.KeepBackups)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	rep, err := inventory.Scan(ctx, inventory.Options{Root: root, Config: cfg, Now: now})
	if err != nil {
		return nil, err
	}
	p, err := plan.Build(root, cfg, rep, plan.Selection{Names: req.Names, All: req.All, Force: req.Force}, now)
	if err != nil {
		return nil, err
	}
	out.Plan = p
	for _, it := range p.Items {
		switch {
		case it.Err != nil:
			out.Failed = true
			out.add("failed", it.Name, "%v", it.Err)
		case it.CSR != nil && req.DryRun:
			out.add("would-renew", it.Name, "%s", it.Reason)
		case it.CSR != nil:
		case !it.Renew:
			out.add("skipped", it.Name, "%s", it.Reason)
		case req.DryRun:
			issuer := "new self-signed pair"
			if it.Target.CA != nil {
				issuer = "CA " + it.Target.CA.Name
			}
			out.add("would-renew", it.Name, "%s; %s; new validity %s to %s; files %s", it.Reason, issuer,
				it.NotBefore.Format(time.RFC3339), it.NotAfter.Format(time.RFC3339), strings.Join(it.Files, " "))
		}
		for _, w := range it.Warnings {
			out.add("warning", it.Name, "%s", w)
		}
	}
	if len(p.Items) == 0 {
		out.add("nothing", "", "nothing to renew")
	}
	out.Report = rep
	if req.DryRun {
		return out, nil
	}
	renewLocal(ctx, root, cfg, p, rep, now, o, out)
	for _, it := range p.Items {
		if it.CSR == nil {
			continue
		}
		if o.DeferCSR {
			out.CSR = append(out.CSR, it.CSR)
			continue
		}
		out.addCSR(runCSROnce(ctx, root, cfg, it.CSR, rep, o))
	}
	return out, nil
}

// runCSROnce renews one certificate through the cluster for `certagent
// renew`, keeping the key of a request in flight in the state directory
// (as the daemon does), so that running it again waits for the same one.
func runCSROnce(ctx context.Context, root *pki.Root, cfg *config.Config, c *inventory.Certificate, rep *inventory.Report, o RenewOptions) csrResult {
	var pending PendingKeys = noPending{}
	if dir, err := root.HostDir(cfg.Agent.StateDir, 0o700); err == nil {
		pending = pendingDir{dir: dir}
	}
	var done func()
	job := CSRRenewal{Root: root, Config: cfg, Pending: pending, Timeout: o.CSRTimeout, Client: o.Client, Hooks: o.Hooks,
		Waiting: func(csr string) {
			if o.CSRWaiting != nil {
				done = o.CSRWaiting(c.Name, csr)
			}
		}}
	r := job.Run(ctx, c, rep)
	if done != nil {
		done()
	}
	return r
}

// addCSR adds the lines of a CSR renewal: the request it made, then
// renewed or failed. The daemon and `certagent renew` print the same.
func (o *Outcome) addCSR(r csrResult) {
	if r.csr != "" {
		o.add("requested", r.name, "CSR %s; approve it with: kubectl certificate approve %s", r.csr, r.csr)
	}
	if r.err != nil {
		o.Failed = true
		o.add("failed", r.name, "%v", r.err)
		return
	}
	how := "through CSR " + r.csr
	if r.method == "local-ca" {
		how = "from the local CA (the client certificate had expired)"
	}
	o.add("renewed", r.name, "serial %s -> %s, valid until %s, %s", short(r.oldSerial), short(r.serial), r.notAfter.UTC().Format(time.RFC3339), how)
	o.Renewed = append(o.Renewed, Renewed{Cert: r.cert, NewSerial: r.serial, Rollback: r.rollback})
}

// renewLocal renews the plan's local-CA targets in one transaction.
func renewLocal(ctx context.Context, root *pki.Root, cfg *config.Config, p *plan.Plan, rep *inventory.Report, now time.Time, o RenewOptions, out *Outcome) {
	if len(p.Targets()) == 0 {
		return
	}
	backupDir := cfg.Renewal.BackupDir
	out.Results, _ = rotate.Renew(ctx, rotate.Options{
		Root: root, BackupDir: backupDir, KeepBackups: cfg.Renewal.KeepBackups, Now: now, Hooks: o.Hooks,
		Policy: rotate.Policy{Validity: cfg.Renewal.ValidityDuration, KeyAlgorithm: cfg.Renewal.KeyAlgorithm, ReuseKey: cfg.Renewal.ReuseKey},
	}, p.Targets())
	for _, r := range out.Results {
		if r.Err != nil {
			out.Failed = true
			out.add("failed", r.Name, "%v", r.Err)
			continue
		}
		out.add("renewed", r.Name, "serial %s -> %s, valid until %s, old files in %s",
			short(r.OldSerial), short(r.NewSerial), r.NotAfter.UTC().Format(time.RFC3339), r.Backup)
		for _, c := range rep.Certificates {
			if c.Name == r.Name {
				backup, name := r.Backup, r.Name
				out.Renewed = append(out.Renewed, Renewed{Cert: c, NewSerial: r.NewSerial,
					Rollback: func() error { return rotate.Restore(root, backup, name) }})
			}
		}
		if r.Name == "kubelet.conf" && cfg.Renewal.ConvertKubeletConf {
			convertKubeletConf(root, cfg, p, r, now, out)
		}
	}
}

func short(serial string) string {
	if len(serial) > 12 {
		return serial[:12] + "…"
	}
	return serial
}

// convertKubeletConf moves a just-renewed embedded kubelet.conf
// certificate into the kubelet's store (renewal.convertKubeletConf).
func convertKubeletConf(root *pki.Root, cfg *config.Config, p *plan.Plan, r rotate.Result, now time.Time, out *Outcome) {
	for _, it := range p.Items {
		if it.Name != r.Name || it.Target.Storage != rotate.StorageKubeconfig {
			continue
		}
		roots := x509.NewCertPool()
		roots.AddCert(it.Target.CA.Cert)
		store := rotate.KubeletStore{Root: root, Dir: cfg.KubeletPKIDir, Prefix: "kubelet-client", BackupDir: cfg.Renewal.BackupDir, KeepBackups: cfg.Renewal.KeepBackups}
		if err := rotate.ConvertKubeconfig(root, it.Target.CertPath, it.Target.User, store, roots, r.Backup, now); err != nil {
			out.Failed = true
			out.add("failed", r.Name, "convert to %s: %v", store.Current(), err)
			return
		}
		out.add("converted", r.Name, "now refers to %s (the old file is in %s)", store.Current(), r.Backup)
	}
}

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
		a.opts.Log.WithFields(logrus.Fields{"MESSAGE_ID": MsgRepaired, "REASON": err.Error()}).Warn("interrupted renewal not repaired at start")
		return
	}
	defer lock.Unlock()
	for _, r := range rotate.Repair(a.opts.Root, backupDir) {
		f := logrus.Fields{"MESSAGE_ID": MsgRepaired, "TRANSACTION": r.Dir, "ACTION": r.Action}
		if r.Err != nil {
			f["REASON"] = r.Err.Error()
			a.opts.Log.WithFields(f).Error("interrupted renewal could not be repaired")
			continue
		}
		a.opts.Log.WithFields(f).Warn("interrupted renewal repaired")
	}
}
