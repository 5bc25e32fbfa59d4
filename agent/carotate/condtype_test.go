package carotate_test

import (
	"testing"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/report"
)

// The command tells a node that runs certagent by the condition the
// reporter keeps.
func TestHealthConditionIsTheReporters(t *testing.T) {
	if carotate.HealthConditionType != report.ConditionType {
		t.Fatalf("%q != %q", carotate.HealthConditionType, report.ConditionType)
	}
}
