package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/agent/inventory"
)

func jsonEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc
}

// outputFormats are the values of every -o flag.
var outputFormats = []string{"table", "json", "yaml"}

// addOutputFlag registers -o with its shell completion.
func addOutputFlag(cmd *cobra.Command, output *string) {
	cmd.Flags().StringVarP(output, "output", "o", "table", "output format: table, json or yaml")
	cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp))
}

// checkOutput refuses an unknown -o value with a usage error.
func checkOutput(output string) error {
	if !slices.Contains(outputFormats, output) {
		return &exitError{code: ExitUsage, err: fmt.Errorf("-o must be table, json or yaml, got %q", output)}
	}
	return nil
}

// writeYAML writes what writeJSON writes, as YAML: the JSON document is
// converted (sigs.k8s.io/yaml), so field names are the JSON ones exactly.
func writeYAML(w io.Writer, writeJSON func(io.Writer) error) error {
	var b bytes.Buffer
	if err := writeJSON(&b); err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(b.Bytes())
	if err != nil {
		return err
	}
	_, err = w.Write(y)
	return err
}

// completeCertNames completes certificate names from a scan of the node
// (check's names), under --root and --config as given so far; names
// already on the line are left out.
func completeCertNames(g *globalFlags) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		root, cfg, err := g.load()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		rep, err := inventory.Scan(cmd.Context(), inventory.Options{Root: root, Config: cfg, Now: time.Now()})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
		}
		var out []cobra.Completion
		for _, c := range rep.Certificates {
			if !slices.Contains(args, c.Name) {
				out = append(out, cobra.CompletionWithDesc(c.Name, string(c.RenewalPath)+", "+string(c.State)))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
