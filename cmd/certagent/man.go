package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newManCommand generates the man pages of every command, for packagers
// (hidden: operators read them with man, not through certagent).
func newManCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write a man page for every command into DIR (for packaging)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			hdr := &doc.GenManHeader{Title: "CERTAGENT", Section: "8", Source: "certagent " + version, Manual: "System Administration"}
			if err := doc.GenManTree(root, hdr, args[0]); err != nil {
				return &exitError{code: ExitUsage, err: fmt.Errorf("man pages: %w", err)}
			}
			return nil
		},
	}
}
