package agent

import (
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/rotate/pki"
)

// TestReporterNeverBlocks: with no API server, events wait in a bounded
// buffer, the oldest dropped first, and the caller is never held up.
func TestReporterNeverBlocks(t *testing.T) {
	root, _ := pki.NewRoot(t.TempDir())
	r := NewReporter(root, "/etc/kubernetes/kubelet.conf", logrus.New())
	r.SetNode("node1")
	start := time.Now()
	for i := 0; i < 250; i++ {
		r.Event("Normal", "CertificateRenewed", "x")
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("queueing 250 events took %s", d)
	}
	if n := r.Pending(); n != 100 {
		t.Errorf("%d events kept, want the buffer's 100", n)
	}
}
