package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
)

// globalFlags are shared by every subcommand.
type globalFlags struct {
	root       string
	configPath string
}

func newRootCommand() *cobra.Command {
	g := &globalFlags{}
	cmd := &cobra.Command{
		Use:   "certagent",
		Short: "Keep a Kubernetes node's certificates from ever expiring unnoticed",
		Long: `certagent finds every certificate of a Kubernetes node (the kubeadm PKI,
the kubeconfigs, the kubelet's store and configured paths), reports their
health and renews them before they expire.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.PersistentFlags().StringVar(&g.root, "root", "/", "directory that acts as / for every path (like kubeadm's --rootfs)")
	cmd.PersistentFlags().StringVar(&g.configPath, "config", "", "config file (default "+config.DefaultPath+" below --root, optional)")
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: ExitUsage, err: fmt.Errorf("%w\nsee '%s --help'", err, c.CommandPath())}
	})
	cmd.AddCommand(newCheckCommand(g), newRenewCommand(g), newRunCommand(g), newStatusCommand(g), newCACommand(g), newVersionCommand(), newDemoCommand(), newManCommand())
	return cmd
}

// load opens the root and reads the config: an explicit --config is a
// host path and must exist; the default lives below --root and is optional.
func (g *globalFlags) load() (*pki.Root, *config.Config, error) {
	root, err := pki.NewRoot(g.root)
	if err != nil {
		return nil, nil, &exitError{code: ExitUsage, err: err}
	}
	var cfg *config.Config
	if g.configPath != "" {
		cfg, err = config.Load(g.configPath, false)
	} else {
		cfg, err = config.LoadIn(root, config.DefaultPath, true)
		if errors.Is(err, fs.ErrPermission) {
			// A member of the certagent group may not read the config (it
			// is 0640 root:root); the defaults still find the socket.
			fmt.Fprintf(os.Stderr, "certagent: %v; using the defaults\n", err)
			cfg, err = config.Default(), nil
		}
	}
	if err != nil {
		return nil, nil, &exitError{code: ExitUsage, err: err}
	}
	return root, cfg, nil
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print certagent's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version)
			return err
		},
	}
}
