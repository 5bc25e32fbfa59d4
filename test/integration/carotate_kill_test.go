package integration

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/carotate"
)

// killedRotation runs a second rotation (away from the CA the first one
// made) and SIGKILLs certagent in the middle of each phase once: the
// command, and the control-plane node's daemon (while it has a static
// pod's manifest out, when the phase restarts one). Each time the daemon
// is started again and the command rerun; the last rerun finishes it.
func (rig *caRig) killedRotation(t *testing.T, roots map[string]string, admin *adminPoller, leases *leaseWatch) {
	start := time.Now()
	oldCA := firstCert(t, filepath.Join(rig.cp, "etc/kubernetes/pki/ca.crt"))
	_, _, marks := admin.snapshot()
	prevID := marks[len(marks)-1].id
	args := []string{"ca", "rotate", "--root", rig.cp, "--timeout", "3m", "--new"}
	for _, p := range []carotate.Phase{carotate.Prepare, carotate.Trust, carotate.Reissue, carotate.Finish} {
		cmd := exec.Command(certagentBin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		at, ok := rig.waitPhase(admin, prevID, p)
		if !ok {
			cmd.Process.Kill()
			cmd.Wait()
			rig.dump(t)
			t.Fatalf("the rotation did not reach phase %s within 3 minutes; the command printed:\n%s", p, out.String())
		}
		where := "at once"
		if p != carotate.Prepare {
			where = rig.waitMiddle(t, admin, p)
		}
		cmd.Process.Kill()
		cmd.Wait()
		rig.daemon.cmd.Process.Kill()
		rig.daemon.cmd.Wait()
		t.Logf("phase %s (seen %s): SIGKILLed the command and the control-plane daemon %s, %s into the phase; the command had printed:\n%s",
			p, at.Format("15:04:05.000"), where, time.Since(at).Round(time.Millisecond), out.String())
		rig.restartDaemon(t)
		// The operator reruns once the API answers again (the daemon was
		// killed with a manifest out: the kube-apiserver is coming back).
		waitFor(t, "the kube-apiserver ready", time.Minute, func() bool { return rig.h.APIReady(rig.ctx, 0) })
	}
	r := run(t, certagentBin, args...)
	if r.code != 0 {
		rig.dump(t)
		t.Fatalf("the rerun: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("figures: the rerun finished the rotation, %s after it began:\n%s%s", time.Since(start).Round(time.Millisecond), r.stdout, r.stderr)
	rig.waitLeaseAfter(t, leases, time.Now())
	rig.checkRotated(t, start, oldCA, roots, admin, leases, false)
}

// waitPhase waits, at most 3 minutes, until the administrator sees a
// rotation other than prevID at phase p (or later), and returns when.
func (rig *caRig) waitPhase(admin *adminPoller, prevID string, p carotate.Phase) (time.Time, bool) {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		_, _, marks := admin.snapshot()
		m := marks[len(marks)-1]
		if m.id != "" && m.id != prevID && m.phase.Index() >= p.Index() {
			return m.at, true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Time{}, false
}

// waitMiddle waits, in phase p, for the control-plane daemon to have a
// static pod's manifest out (the middle of a restart), at most until the
// phase ends or a minute passed, and says which it was.
func (rig *caRig) waitMiddle(t *testing.T, admin *adminPoller, p carotate.Phase) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if out, _ := filepath.Glob(filepath.Join(rig.cp, "etc/kubernetes/manifests/.certagent-*")); len(out) > 0 {
			return "with " + strings.TrimPrefix(filepath.Base(out[0]), ".certagent-") + " out of the manifests"
		}
		_, _, marks := admin.snapshot()
		if marks[len(marks)-1].phase != p {
			return "as the phase ended (no static pod restart seen)"
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "after a minute (no static pod restart seen)"
}
