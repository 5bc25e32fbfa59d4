package integration

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestAlertRules runs promtool's unit tests of the shipped alert rules.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" || os.Getenv("CERTAGENT_REQUIRE_INTEGRATION") != "" {
			t.Fatal("promtool not found (apt-get install prometheus; make test does it as root)")
		}
		t.Skip("SKIPPED: promtool not found")
	}
	cmd := exec.Command(promtool, "test", "rules", "certagent-rules_test.yaml")
	cmd.Dir = "../../packaging/alerts"
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool: %v\n%s", err, out)
	}
}
