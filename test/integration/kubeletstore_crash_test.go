package integration

import (
	"os"
	"path"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestKubeletStoreCrashAtEveryStep kills a real `certagent renew
// kubelet-client-current` (SIGKILL, from the inside) at each step of the
// transaction that swaps the kubelet's store: the client certificate has
// expired and the CA key is on the node, so it is re-issued from the local
// CA and written the kubelet's way. At every step -current.pem points at a
// complete file whose key matches; the next renew repairs the journal.
func TestKubeletStoreCrashAtEveryStep(t *testing.T) {
	for _, step := range []string{"staged", "backed-up", "committing", "renamed-one", "renamed", "synced", "verified"} {
		t.Run(step, func(t *testing.T) {
			root := t.TempDir()
			l := pkitest.Layout{NotAfter: map[string]time.Time{"kubelet-client-current": time.Now().Add(-time.Hour)}}
			if _, err := l.Write(root); err != nil {
				t.Fatal(err)
			}
			before := currentSerial(t, root)
			crashAt(t, step, "renew", "--root", root, "kubelet-client-current")
			afterCrash := currentSerial(t, root)
			rolledForward := repairAfterCrash(t, root, step)
			after := currentSerial(t, root)
			if renewed := after != before; renewed != rolledForward || (afterCrash != before && afterCrash != after) {
				t.Errorf("serial %s before, %s after the crash, %s after the repair", before, afterCrash, after)
			}
		})
	}
}

// currentSerial reads kubelet-client-current.pem as the kubelet does, and
// fails unless it is a link to a file in the store whose key matches.
func currentSerial(t *testing.T, root string) string {
	t.Helper()
	r, err := pki.NewRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	const cur = "/var/lib/kubelet/pki/kubelet-client-current.pem"
	target, err := os.Readlink(r.HostPath(cur))
	if err != nil || path.Dir(target) != "/var/lib/kubelet/pki" {
		t.Fatalf("%s: link to %q: %v", cur, target, err)
	}
	f, err := r.ReadFile(cur)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pki.ParseBundle(f.Data)
	if err != nil || b.Key == nil || !pki.KeyMatches(b.Certs[0], b.Key) {
		t.Fatalf("%s -> %s: not a complete matching pair: %v", cur, target, err)
	}
	return b.Certs[0].SerialNumber.String()
}
