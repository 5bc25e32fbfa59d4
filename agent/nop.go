package agent

import (
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
)

// nopRecorder records nothing (no metrics configured).
type nopRecorder struct{}

func (nopRecorder) Scanned(*inventory.Report, time.Duration) {}
func (nopRecorder) Renewed(string, string, time.Time)        {}
func (nopRecorder) Failed(string)                            {}
func (nopRecorder) CSRWaited(time.Duration)                  {}
func (nopRecorder) Served([]api.ComponentStatus)             {}

// nopReporter reports nothing (agent.reportToCluster: false).
type nopReporter struct{}

func (nopReporter) Event(string, string, string)   {}
func (nopReporter) Condition(bool, string, string) {}
func (nopReporter) SetNode(string)                 {}
func (nopReporter) Err() string                    { return "" }
