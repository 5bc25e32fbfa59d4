package renewal

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestRenewAllTwice: with renewBefore at or near the lifetime every
// certificate is inside its window from the start, so each `renew --all`
// renewed everything again. The one-shot now follows the daemon's rule:
// never renew a certificate again within a tenth of its lifetime of its
// issue, so the second run renews nothing and says why.
func TestRenewAllTwice(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		name        string
		renewBefore string
		first       bool // the first run renews (the certificates are 100 days old)
	}{
		{name: "longer than the lifetime", renewBefore: "400d", first: true},
		{name: "the lifetime", renewBefore: "365d", first: true},
		{name: "just under the lifetime", renewBefore: "364d23h", first: true},
		{name: "a normal lead", renewBefore: "30d", first: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			start := time.Now()
			if _, err := (pkitest.Layout{Now: start.Add(-100 * day)}).Write(dir); err != nil {
				t.Fatal(err)
			}
			root, err := pki.NewRoot(dir)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nrenewBefore: " + tc.renewBefore + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			renewed := func(at time.Time) (int, []string) {
				out, err := RenewOnce(context.Background(), root, cfg, api.RenewRequest{All: true}, RenewOptions{Now: at})
				if err != nil {
					t.Fatal(err)
				}
				if out.Failed {
					t.Fatalf("a renewal failed: %v", out.Lines)
				}
				n := 0
				var lines []string
				for _, l := range out.Lines {
					if l.Kind == "renewed" {
						n++
					}
					lines = append(lines, l.String())
				}
				return n, lines
			}
			n, lines := renewed(start)
			if (n > 0) != tc.first {
				t.Fatalf("first run renewed %d:\n%s", n, strings.Join(lines, "\n"))
			}
			// An hour later: the renewed certificates are an hour old.
			if n, lines := renewed(start.Add(time.Hour)); n != 0 {
				t.Fatalf("second run renewed %d again:\n%s", n, strings.Join(lines, "\n"))
			} else if tc.first && !strings.Contains(strings.Join(lines, "\n"), "a tenth of its") {
				t.Errorf("the second run does not say why it holds back:\n%s", strings.Join(lines, "\n"))
			}
			// A tenth of the lifetime later they are due again.
			if n, lines := renewed(start.Add(37 * day)); (n > 0) != tc.first {
				t.Errorf("a tenth of the lifetime later renewed %d:\n%s", n, strings.Join(lines, "\n"))
			}
		})
	}
}
