// Package renewal is the one renewal `certagent renew` and the daemon
// share: under the lock, repair what a crash left, scan, plan, renew from
// the local CA in one transaction and through the cluster with an injected
// CSRRenewer; and the one Result type every renewal path returns.
package renewal

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/plan"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Outcome is the result of one renewal run.
type Outcome struct {
	api.RenewResponse
	// Results are the local transaction's, one per certificate.
	Results []Result   `json:"-"`
	Plan    *plan.Plan `json:"-"`
	// Renewed lists every certificate renewed (from the local CA or
	// through a CSR), as it was before, for the restarts that follow.
	Renewed []restart.Renewed `json:"-"`
	// CSR lists the certificates asked for by name that are renewed
	// through the cluster, when RenewOptions.DeferCSR left them to the
	// caller.
	CSR []*inventory.Certificate `json:"-"`
	// Report is the scan the plan was made from.
	Report *inventory.Report `json:"-"`
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
	// CSR renews through the cluster (required when a certificate the
	// cluster issues is to be renewed here).
	CSR CSRRenewer
}

// RenewOnce runs one renewal under the lock: repair what a crash left,
// scan, plan, renew. A returned error means nothing was attempted (the
// lock, a scan or the request itself failed); per-certificate failures are
// in the outcome.
func RenewOnce(ctx context.Context, root *pki.Root, cfg *config.Config, req api.RenewRequest, o RenewOptions) (*Outcome, error) {
	out := &Outcome{}
	backupDir := cfg.Renewal.BackupDir
	if req.DryRun {
		for _, d := range rotate.Interrupted(root, backupDir) {
			out.Add("interrupted", "", "transaction %s: the next renew repairs it", d)
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
				out.Add("repair-failed", "", "%s: %s failed: %v", r.Dir, r.Action, r.Err)
			} else {
				out.Add("repaired", "", "%s: %s", r.Dir, r.Action)
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
			out.Add("failed", it.Name, "%v", it.Err)
		case it.CSR != nil && req.DryRun:
			out.Add("would-renew", it.Name, "%s", it.Reason)
		case it.CSR != nil:
		case !it.Renew:
			out.Add("skipped", it.Name, "%s", it.Reason)
		case req.DryRun:
			issuer := "new self-signed pair"
			if it.Target.CA != nil {
				issuer = "CA " + it.Target.CA.Name
			}
			out.Add("would-renew", it.Name, "%s; %s; new validity %s to %s; files %s", it.Reason, issuer,
				it.NotBefore.Format(time.RFC3339), it.NotAfter.Format(time.RFC3339), strings.Join(it.Files, " "))
		}
		for _, w := range it.Warnings {
			out.Add("warning", it.Name, "%s", w)
		}
	}
	if len(p.Items) == 0 {
		out.Add("nothing", "", "nothing to renew")
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
		out.AddCSR(runCSROnce(ctx, root, cfg, it.CSR, rep, o))
	}
	return out, nil
}

// runCSROnce renews one certificate through the cluster for `certagent
// renew`, keeping the key of a request in flight in the state directory
// (as the daemon does), so that running it again waits for the same one.
func runCSROnce(ctx context.Context, root *pki.Root, cfg *config.Config, c *inventory.Certificate, rep *inventory.Report, o RenewOptions) Result {
	if o.CSR == nil {
		return Failed(c, "csr", errors.New("no CSR renewer configured"))
	}
	job := CSRJob{Config: cfg, Cert: c, Report: rep, Timeout: o.CSRTimeout, ReusePending: true}
	if dir, err := root.HostDir(cfg.Agent.StateDir, 0o700); err == nil {
		job.PendingDir = dir
	}
	var done func()
	job.Waiting = func(csr string) {
		if o.CSRWaiting != nil {
			done = o.CSRWaiting(c.Name, csr)
		}
	}
	r := o.CSR.RenewCSR(ctx, job)
	if done != nil {
		done()
	}
	return r
}

// renewLocal renews the plan's local-CA targets in one transaction.
func renewLocal(ctx context.Context, root *pki.Root, cfg *config.Config, p *plan.Plan, rep *inventory.Report, now time.Time, o RenewOptions, out *Outcome) {
	if len(p.Targets()) == 0 {
		return
	}
	backupDir := cfg.Renewal.BackupDir
	results, _ := rotate.Renew(ctx, rotate.Options{
		Root: root, BackupDir: backupDir, KeepBackups: cfg.Renewal.KeepBackups, Now: now, Hooks: o.Hooks,
		Policy: rotate.Policy{Validity: cfg.Renewal.ValidityDuration, KeyAlgorithm: cfg.Renewal.KeyAlgorithm, ReuseKey: cfg.Renewal.ReuseKey},
	}, p.Targets())
	for _, r := range results {
		c := certNamed(rep, r.Name)
		if c != nil {
			out.Results = append(out.Results, fromRotate(root, c, r))
		}
		if r.Err != nil {
			out.Failed = true
			out.Add("failed", r.Name, "%v", r.Err)
			continue
		}
		out.Add("renewed", r.Name, "serial %s -> %s, valid until %s, old files in %s",
			short(r.OldSerial), short(r.NewSerial), r.NotAfter.UTC().Format(time.RFC3339), r.Backup)
		if c != nil {
			out.Renewed = append(out.Renewed, out.Results[len(out.Results)-1].Renewed())
		}
		if r.Name == "kubelet.conf" && cfg.Renewal.ConvertKubeletConf {
			convertKubeletConf(root, cfg, p, r, now, out)
		}
	}
}

// certNamed returns the certificate of the scan with the name, or nil.
func certNamed(rep *inventory.Report, name string) *inventory.Certificate {
	for _, c := range rep.Certificates {
		if c.Name == name {
			return c
		}
	}
	return nil
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
			out.Add("failed", r.Name, "convert to %s: %v", store.Current(), err)
			return
		}
		out.Add("converted", r.Name, "now refers to %s (the old file is in %s)", store.Current(), r.Backup)
	}
}
