package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

func newDemoCommand() *cobra.Command {
	var dir string
	var keep bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Build a sandbox node PKI in a temp dir and check it (no cluster, no root needed)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if dir == "" {
				d, err := os.MkdirTemp("", "certagent-demo-")
				if err != nil {
					return err
				}
				dir = d
				if !keep {
					defer os.RemoveAll(d)
				}
			}
			if err := writeSandbox(dir, time.Now()); err != nil {
				return err
			}
			fmt.Fprintf(out, "Sandbox node PKI in %s: a kubeadm layout with 1-year leaves,\n", dir)
			fmt.Fprintln(out, "apiserver due in 20 days, front-proxy-client expired yesterday, one broken file.")
			fmt.Fprintf(out, "\n$ certagent check --root %s\n\n", dir)
			root, err := pki.NewRoot(dir)
			if err != nil {
				return err
			}
			rep, err := inventory.Scan(cmd.Context(), inventory.Options{Root: root})
			if err != nil {
				return err
			}
			if err := rep.WriteTable(out); err != nil {
				return err
			}
			fmt.Fprintf(out, "\n(check exits %d here: 2 means something is expired or broken.)\n", rep.ExitCode())
			if keep {
				fmt.Fprintf(out, "Kept %s; try: certagent check --root %s -o json\n", dir, dir)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "write the sandbox here instead of a temp dir (kept)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temp dir")
	return cmd
}

// writeSandbox writes the demo's node PKI: a kubeadm control-plane layout
// with a kubelet store, some certificates near expiry, one expired and one
// broken file.
func writeSandbox(dir string, now time.Time) error {
	_, err := pkitest.Layout{
		Now: now,
		NotAfter: map[string]time.Time{
			"apiserver":          now.Add(20 * 24 * time.Hour),
			"front-proxy-client": now.Add(-24 * time.Hour),
			"admin.conf":         now.Add(60 * 24 * time.Hour),
		},
	}.Write(dir)
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	broken := filepath.Join(dir, "etc/kubernetes/pki/custom-webhook.crt")
	return os.WriteFile(broken, []byte("-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3\n"), 0o644)
}
