package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNoDaemon: `certagent status` links this package, which must not
// pull in the daemon: the loop (package agent) or any of its side effects.
// (Kubernetes' client still comes in through inventory, which imports
// rotate for the journal's state; see the README's Architecture.)
func TestLinksNoDaemon(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	daemon := []string{"agent", "agent/renewal", "agent/csrrenew", "agent/report", "agent/metrics", "agent/restart", "agent/decide", "systemd"}
	for _, dep := range strings.Fields(string(out)) {
		for _, d := range daemon {
			if dep == "github.com/certagent/certagent/"+d {
				t.Errorf("the status client imports %s", dep)
			}
		}
	}
}
