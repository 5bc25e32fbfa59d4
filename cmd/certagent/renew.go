package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/plan"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// ExitRenewFailed: at least one requested renewal did not succeed.
const ExitRenewFailed = 1

type renewFlags struct {
	all, force, dryRun bool
	lockTimeout        time.Duration
}

func newRenewCommand(g *globalFlags) *cobra.Command {
	f := &renewFlags{}
	cmd := &cobra.Command{
		Use:   "renew [--dry-run] [--force] (--all | NAME...)",
		Short: "Renew certificates from the node's local CA, as a crash-safe transaction",
		Long: `renew re-signs certificates with the CA key on this node, keeping their
subject, every SAN, key usages and key type, in one transaction: stage,
verify, back up, rename, fsync, read back, roll back on failure.

NAME... renews those certificates unconditionally. --all renews every
certificate inside its renewal window; --all --force every renewable one.
--dry-run prints the plan and changes nothing.

Exit codes: 0 every requested renewal succeeded (or nothing was due);
1 at least one failed or cannot be renewed here; 4 bad flags, config or
lock timeout.`,
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
			return runRenew(cmd.Context(), cmd.OutOrStdout(), root, cfg, plan.Selection{Names: args, All: f.all, Force: f.force}, f)
		},
	}
	cmd.Flags().BoolVar(&f.all, "all", false, "renew every certificate inside its renewal window")
	cmd.Flags().BoolVar(&f.force, "force", false, "with --all: renew every renewable certificate, due or not")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "print the plan and change nothing")
	cmd.Flags().DurationVar(&f.lockTimeout, "lock-timeout", time.Minute, "how long to wait for another renewal (or kubeadm) to finish")
	return cmd
}

func runRenew(ctx context.Context, out io.Writer, root *pki.Root, cfg *config.Config, sel plan.Selection, f *renewFlags) error {
	backupDir := cfg.Renewal.BackupDir
	if f.dryRun {
		for _, d := range rotate.Interrupted(root, backupDir) {
			fmt.Fprintf(out, "interrupted transaction %s: the next renew repairs it\n", d)
		}
	} else {
		lctx, cancel := context.WithTimeout(ctx, f.lockTimeout)
		lock, err := rotate.Acquire(lctx, root, backupDir)
		cancel()
		if err != nil {
			return &exitError{code: ExitUsage, err: err}
		}
		defer lock.Unlock()
		for _, r := range rotate.Repair(root, backupDir) {
			if r.Err != nil {
				fmt.Fprintf(out, "repair    %s: %s failed: %v\n", r.Dir, r.Action, r.Err)
			} else {
				fmt.Fprintf(out, "repaired  %s: %s\n", r.Dir, r.Action)
			}
		}
		rotate.Prune(root, backupDir, cfg.Renewal.KeepBackups)
	}
	now := time.Now()
	rep, err := inventory.Scan(ctx, inventory.Options{Root: root, Config: cfg, Now: now})
	if err != nil {
		return &exitError{code: ExitUsage, err: err}
	}
	p, err := plan.Build(root, cfg, rep, sel, now)
	if err != nil {
		return &exitError{code: ExitUsage, err: err}
	}
	failed := printPlan(out, p, f.dryRun)
	if f.dryRun || len(p.Targets()) == 0 {
		if len(p.Items) == 0 {
			fmt.Fprintln(out, "nothing to renew")
		}
		return exitIf(failed)
	}
	results, _ := rotate.Renew(ctx, rotate.Options{
		Root: root, BackupDir: backupDir, KeepBackups: cfg.Renewal.KeepBackups, Now: now,
		Policy: rotate.Policy{Validity: cfg.Renewal.ValidityDuration, KeyAlgorithm: cfg.Renewal.KeyAlgorithm, ReuseKey: cfg.Renewal.ReuseKey},
		Hooks:  testHooks{crash: os.Getenv("CERTAGENT_TEST_CRASH_AT"), pause: os.Getenv("CERTAGENT_TEST_PAUSE_AT")},
	}, p.Targets())
	for _, r := range results {
		if r.Err != nil {
			failed = true
			fmt.Fprintf(out, "failed    %-26s %v\n", r.Name, r.Err)
			continue
		}
		fmt.Fprintf(out, "renewed   %-26s serial %s -> %s, valid until %s, old files in %s\n",
			r.Name, short(r.OldSerial), short(r.NewSerial), r.NotAfter.UTC().Format(time.RFC3339), r.Backup)
	}
	return exitIf(failed)
}

// printPlan prints one line per item and reports whether any requested
// certificate cannot be renewed.
func printPlan(out io.Writer, p *plan.Plan, dryRun bool) bool {
	failed := false
	for _, it := range p.Items {
		switch {
		case it.Err != nil:
			failed = true
			fmt.Fprintf(out, "failed    %-26s %v\n", it.Name, it.Err)
		case !it.Renew:
			fmt.Fprintf(out, "skipped   %-26s %s\n", it.Name, it.Reason)
		case dryRun:
			fmt.Fprintf(out, "would renew %-24s %s; CA %s; new validity %s to %s; files %s\n", it.Name, it.Reason, it.Target.CA.Name,
				it.NotBefore.Format(time.RFC3339), it.NotAfter.Format(time.RFC3339), strings.Join(it.Files, " "))
		}
		for _, w := range it.Warnings {
			fmt.Fprintf(out, "warning   %-26s %s\n", it.Name, w)
		}
	}
	return failed
}

func exitIf(failed bool) error {
	if failed {
		return &exitError{code: ExitRenewFailed}
	}
	return nil
}

func short(serial string) string {
	if len(serial) > 12 {
		return serial[:12] + "…"
	}
	return serial
}

// testHooks kill the process (CERTAGENT_TEST_CRASH_AT=<step>) or hold it
// for two seconds (CERTAGENT_TEST_PAUSE_AT=<step>) at a transaction step,
// for the crash and locking tests. Unset, they do nothing.
type testHooks struct{ crash, pause string }

func (h testHooks) Step(name string) {
	if h.pause == name {
		time.Sleep(2 * time.Second)
	}
	if h.crash == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
