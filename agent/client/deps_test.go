package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCommandsLinkNoDaemon: the packages behind `certagent status` (this
// one), `check` (inventory) and offline `renew` (renewal, csrrenew,
// restart) do not import the daemon: the loop in package agent, its
// metrics or its cluster reporter.
func TestCommandsLinkNoDaemon(t *testing.T) {
	const mod = "github.com/certagent/certagent/"
	tests := []struct {
		command string
		pkgs    []string
	}{
		{"status", []string{"agent/client"}},
		{"check", []string{"agent/inventory"}},
		{"renew", []string{"agent/renewal", "agent/csrrenew", "agent/restart"}},
	}
	daemon := []string{"agent", "agent/report", "agent/metrics", "agent/decide"}
	for _, tc := range tests {
		t.Run(tc.command, func(t *testing.T) {
			args := []string{"list", "-deps"}
			for _, p := range tc.pkgs {
				args = append(args, mod+p)
			}
			out, err := exec.Command("go", args...).Output()
			if err != nil {
				t.Skipf("go list: %v", err)
			}
			for _, dep := range strings.Fields(string(out)) {
				for _, d := range daemon {
					if dep == mod+d {
						t.Errorf("certagent %s links %s", tc.command, dep)
					}
				}
			}
		})
	}
}
