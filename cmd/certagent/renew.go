package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/client"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/csrrenew"
	"github.com/certagent/certagent/agent/kubeclient"
	"github.com/certagent/certagent/agent/plan"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/systemd"
)

// ExitRenewFailed: at least one requested renewal did not succeed.
const ExitRenewFailed = 1

// ExitLockTimeout: the renewal lock (another certagent renewal, or a
// running kubeadm) was not free within --lock-timeout. The next free code
// after ExitUsage.
const ExitLockTimeout = 5

// lockTimeoutBounds: 0 means the default minute; a day is longer than any
// renewal or kubeadm run holds the lock.
var lockTimeoutBounds = config.Bounds{Max: 24 * time.Hour}

type renewFlags struct {
	all, force, dryRun, restart bool
	lockTimeout, timeout        time.Duration
}

// csrTimeoutBounds: a CSR's wait for approval, as in the config (0: the
// configured kubelet.clientCSRTimeout, servingCSRTimeout or timeout).
var csrTimeoutBounds = config.Bounds{Max: 24 * time.Hour}

// progressEvery is how often renew says it still waits for an approval.
var progressEvery = 15 * time.Second

// newUnits restarts systemd units for --restart (a fake in tests).
var newUnits = func() restart.Units { return systemd.Units{} }

func newRenewCommand(g *globalFlags) *cobra.Command {
	f := &renewFlags{}
	cmd := &cobra.Command{
		Use:   "renew [--dry-run] [--force] (--all | NAME...)",
		Short: "Renew certificates: from the node's local CA as a crash-safe transaction, or through a CSR",
		Long: `renew re-signs certificates with the CA key on this node, keeping their
subject, every SAN, key usages and key type, in one transaction: stage,
verify, back up, rename, fsync, read back, roll back on failure.

NAME... renews those certificates unconditionally; those the cluster
issues (renewal path csr) through a CertificateSigningRequest, the
daemon's way, waiting --timeout for its approval. --all renews every
certificate inside its renewal window; --all --force every renewable one.
--dry-run prints the plan and changes nothing.

Exit codes: 0 every requested renewal succeeded (or nothing was due);
1 at least one failed or cannot be renewed here; 4 bad flags or config;
5 the renewal lock stayed taken for --lock-timeout.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.all == (len(args) > 0) {
				return &exitError{code: ExitUsage, err: fmt.Errorf("give certificate names or --all, not both or neither")}
			}
			if f.force && !f.all {
				return &exitError{code: ExitUsage, err: fmt.Errorf("--force goes with --all (named certificates are always renewed)")}
			}
			root, cfg, err := g.load()
			if err != nil {
				return err
			}
			return runRenew(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), root, cfg, plan.Selection{Names: args, All: f.all, Force: f.force}, f)
		},
	}
	cmd.ValidArgsFunction = completeCertNames(g)
	cmd.Flags().BoolVar(&f.all, "all", false, "renew every certificate inside its renewal window")
	cmd.Flags().BoolVar(&f.force, "force", false, "with --all: renew every renewable certificate, due or not")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "print the plan and change nothing")
	f.lockTimeout = time.Minute
	cmd.Flags().Var(newDurationFlag(&f.lockTimeout, nil, lockTimeoutBounds), "lock-timeout", "how long to wait for another renewal (or kubeadm) to finish (at most 1d)")
	cmd.Flags().Var(newDurationFlag(&f.timeout, nil, csrTimeoutBounds), "timeout", "how long a renewal through a CSR waits for approval (default the configured timeout; at most 1d)")
	cmd.Flags().BoolVar(&f.restart, "restart", false, "after an offline renewal, restart what uses the renewed certificates now (D-Bus, static pods), with the daemon's checks")
	return cmd
}

func runRenew(ctx context.Context, out, errOut io.Writer, root *pki.Root, cfg *config.Config, sel plan.Selection, f *renewFlags) error {
	req := api.RenewRequest{Names: sel.Names, All: sel.All, Force: sel.Force, DryRun: f.dryRun, TimeoutSeconds: int64(f.timeout / time.Second)}
	if f.timeout > 0 && req.TimeoutSeconds == 0 {
		req.TimeoutSeconds = 1
	}
	// With an agent running, it does the renewal, so the two never race.
	if c := client.New(root.HostPath(cfg.Agent.Socket)); c.Reachable() {
		fmt.Fprintln(errOut, "certagent: the running certagent daemon renews; it restarts what uses the renewed certificates (unless agent.noRestart)")
		// The daemon's lock wait, then the longest CSR wait, then some.
		wait := f.timeout
		if wait == 0 {
			wait = max(cfg.Kubelet.ClientCSRTimeoutDuration, cfg.Kubelet.ServingCSRTimeoutDuration)
			for _, cc := range cfg.Certificates {
				wait = max(wait, cc.TimeoutDuration)
			}
		}
		dctx, cancel := context.WithTimeout(ctx, 4*time.Minute+wait)
		defer cancel()
		o, err := c.Renew(dctx, req)
		if err != nil {
			return renewError(err)
		}
		fmt.Fprintln(out, "(renewed by the running certagent daemon)")
		for _, l := range o.Lines {
			fmt.Fprintln(out, l)
		}
		return exitIf(o.Failed)
	}
	o, err := renewal.RenewOnce(ctx, root, cfg, req, renewal.RenewOptions{
		LockTimeout: f.lockTimeout,
		LockWait: func(what string) {
			fmt.Fprintf(errOut, "certagent: waiting up to %s for %s\n", f.lockTimeout, what)
		},
		CSRTimeout: f.timeout,
		CSRWaiting: func(name, csr string) func() { return progress(errOut, name, csr) },
		Hooks:      testHooks(),
		CSR:        csrrenew.Renewer{Root: root, Client: kubeclient.ForCSR(root), Hooks: testHooks()},
	})
	if err != nil {
		return renewError(err)
	}
	for _, l := range o.Lines {
		fmt.Fprintln(out, l)
	}
	failed := o.Failed
	if len(o.Renewed) > 0 && !f.dryRun {
		if !nextSteps(ctx, out, errOut, root, cfg, o.Renewed, f.restart) {
			failed = true
		}
	}
	return exitIf(failed)
}

// progress says that a renewal waits for its CSR, how to approve it, and,
// every progressEvery, that it still waits. The returned function stops it.
func progress(w io.Writer, name, csr string) func() {
	fmt.Fprintf(w, "certagent: %s: waiting for CSR %s to be approved and issued; approve it with: kubectl certificate approve %s\n", name, csr, csr)
	stop, done := make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fmt.Fprintf(w, "certagent: %s: still waiting for CSR %s (%s)\n", name, csr, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(stop); <-done }
}

// nextSteps says what must reload the renewed certificates and whether
// anyone will restart it; with restart, it restarts them now with the
// daemon's Restarter (health and served-certificate checks, rollback).
// It returns false when a restart failed.
func nextSteps(ctx context.Context, out, errOut io.Writer, root *pki.Root, cfg *config.Config, renewed []restart.Renewed, restartNow bool) bool {
	var names []string
	for _, r := range renewed {
		names = append(names, r.Cert.Name)
	}
	reloads := restart.Reloads(root, cfg, names)
	if len(reloads) == 0 {
		fmt.Fprintln(out, "next: nothing certagent knows of must restart to load them; restart what reads them (restart.units names such services)")
		return true
	}
	if !restartNow {
		for _, rl := range reloads {
			switch {
			case rl.ByItself && rl.Present:
				fmt.Fprintf(out, "next: %s (static pod %s) reads %s anew by itself: no restart needed; certagent status shows whether it serves the new certificate (certagent renew --restart waits for it, and restarts it if it does not show)\n",
					rl.Component, rl.Manifest, strings.Join(rl.Certificates, ", "))
			case rl.Unit != "":
				fmt.Fprintf(out, "next: %s must restart to load %s: systemctl restart %s (or certagent renew --restart)\n", rl.Component, strings.Join(rl.Certificates, ", "), rl.Unit)
			case rl.Present:
				fmt.Fprintf(out, "next: %s (static pod %s) must restart to load %s: move %s out of %s for longer than the kubelet's file check period and back (or certagent renew --restart)\n",
					rl.Component, rl.Manifest, strings.Join(rl.Certificates, ", "), rl.Manifest, cfg.Restart.ManifestsDir)
			default:
				fmt.Fprintf(out, "next: %s must restart to load %s (it does not run as a static pod here: restart it where it runs)\n", rl.Component, strings.Join(rl.Certificates, ", "))
			}
		}
		if !slices.ContainsFunc(reloads, func(rl restart.Reload) bool { return !rl.ByItself || !rl.Present }) {
			return true
		}
		fmt.Fprintf(out, "next: certagent will not restart them: no daemon answered on %s, and a daemon restarts only after its own renewals (it reports a served certificate older than the disk as stale)\n", cfg.Agent.Socket)
		return true
	}
	log := logrus.New()
	log.SetOutput(errOut)
	r := &restart.Restarter{Root: root, Units: newUnits(), Clock: clock.RealClock{}, Log: log}
	r.Gate = &restartGate{root: root, restarter: r, log: log}
	rolledBack := r.Restart(ctx, cfg, renewed, nil)
	for _, cs := range r.Results(cfg) {
		verb := "restarted"
		if cs.LastAction == api.ActionReload {
			verb = "reloaded"
		}
		fmt.Fprintf(out, "%-9s %-26s %s\n", verb, cs.Name, cs.LastResult)
	}
	for name, err := range rolledBack {
		fmt.Fprintf(out, "%-9s %-26s %v\n", "failed", name, err)
	}
	ok := len(rolledBack) == 0
	for _, cs := range r.Results(cfg) {
		ok = ok && cs.LastResult == "ok"
	}
	return ok
}

// renewError maps an error that stopped a whole renewal to its exit code:
// a lock that stayed taken (here or in the daemon, which answers 409 with
// the same message) has its own.
func renewError(err error) error {
	var apiErr *client.APIError
	if errors.Is(err, rotate.ErrLocked) || (errors.As(err, &apiErr) && apiErr.Code == http.StatusConflict && strings.Contains(apiErr.Msg, rotate.ErrLocked.Error())) {
		return &exitError{code: ExitLockTimeout, err: err}
	}
	return &exitError{code: ExitUsage, err: err}
}

func exitIf(failed bool) error {
	if failed {
		return &exitError{code: ExitRenewFailed}
	}
	return nil
}
