package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/certagent/certagent/agent"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/plan"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
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
	return cmd
}

func runRenew(ctx context.Context, out, errOut io.Writer, root *pki.Root, cfg *config.Config, sel plan.Selection, f *renewFlags) error {
	req := agent.RenewRequest{Names: sel.Names, All: sel.All, Force: sel.Force, DryRun: f.dryRun}
	// With an agent running, it does the renewal, so the two never race.
	if c := agent.NewClient(root.HostPath(cfg.Agent.Socket)); c.Reachable() {
		o, err := c.Renew(ctx, req)
		if err != nil {
			return renewError(err)
		}
		fmt.Fprintln(out, "(renewed by the running certagent daemon)")
		for _, l := range o.Lines {
			fmt.Fprintln(out, l)
		}
		return exitIf(o.Failed)
	}
	o, err := agent.RenewOnce(ctx, root, cfg, req, agent.RenewOptions{
		LockTimeout: f.lockTimeout,
		LockWait: func(what string) {
			fmt.Fprintf(errOut, "certagent: waiting up to %s for %s\n", f.lockTimeout, what)
		},
		Hooks: testHooks{crash: os.Getenv("CERTAGENT_TEST_CRASH_AT"), pause: os.Getenv("CERTAGENT_TEST_PAUSE_AT")},
	})
	if err != nil {
		return renewError(err)
	}
	for _, l := range o.Lines {
		fmt.Fprintln(out, l)
	}
	return exitIf(o.Failed)
}

// renewError maps an error that stopped a whole renewal to its exit code:
// a lock that stayed taken (here or in the daemon, which answers 409 with
// the same message) has its own.
func renewError(err error) error {
	var api *agent.APIError
	if errors.Is(err, rotate.ErrLocked) || (errors.As(err, &api) && api.Code == http.StatusConflict && strings.Contains(api.Msg, rotate.ErrLocked.Error())) {
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
