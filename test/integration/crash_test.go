package integration

import (
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// sandbox writes a pkitest node (ECDSA, fast to renew) and returns its root.
func sandbox(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	if _, err := (pkitest.Layout{}).Write(root); err != nil {
		t.Fatal(err)
	}
	return root
}

// repairAndCheck runs the next renew, which repairs what a crash left, and
// asserts every pair on disk matches and chains.
func repairAndCheck(t *testing.T, root string) string {
	t.Helper()
	r := run(t, certagentBin, "renew", "--root", root, "--all")
	if r.code != 0 {
		t.Fatalf("renew after crash: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	consistent(t, root)
	return r.stdout
}

// TestCrashAtEveryStep kills a real `certagent renew` (SIGKILL, from the
// inside) at each step of the transaction, on a real kubeadm PKI.
func TestCrashAtEveryStep(t *testing.T) {
	orig := kubeadmPKI(t, "8760h")
	for _, step := range []string{"staged", "backed-up", "committing", "renamed-one", "renamed", "synced", "verified"} {
		t.Run(step, func(t *testing.T) {
			root := t.TempDir()
			copyTree(t, orig, root)
			crashAt(t, step, "renew", "--root", root, "--all", "--force")
			repairAfterCrash(t, root, step)
		})
	}
}

// crashAt runs certagent with args, killed (SIGKILL, from the inside) at
// a step of its transaction.
func crashAt(t *testing.T, step string, args ...string) {
	t.Helper()
	cmd := exec.Command(certagentBin, args...)
	cmd.Env = append(os.Environ(), "CERTAGENT_TEST_CRASH_AT="+step)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("renew was not killed at %s: %v\n%s", step, err, out)
	}
}

// repairAfterCrash checks that a dry run reports the transaction a crash
// at step left, and that the next renew repairs it as that step calls
// for (see repairAndCheck). It reports whether it rolled forward.
func repairAfterCrash(t *testing.T, root, step string) bool {
	t.Helper()
	chk := run(t, certagentBin, "renew", "--root", root, "--all", "--dry-run")
	if !strings.Contains(chk.stdout, "interrupted transaction") {
		t.Errorf("dry-run does not report the interrupted transaction:\n%s", chk.stdout)
	}
	out := repairAndCheck(t, root)
	want := map[string]string{"staged": "discarded staged files", "backed-up": "discarded staged files"}[step]
	if want == "" {
		want = "rolled forward"
	}
	if !strings.Contains(out, "repaired") || !strings.Contains(out, want) {
		t.Errorf("repair after %s: want %q in\n%s", step, want, out)
	}
	return want == "rolled forward"
}

// TestKillAtRandomMoments SIGKILLs real renewals at random times, 120
// times, and checks after each restart that every pair matches and chains.
func TestKillAtRandomMoments(t *testing.T) {
	root := sandbox(t)
	// How long one renewal takes here bounds the random delays.
	start := time.Now()
	if r := run(t, certagentBin, "renew", "--root", root, "--all", "--force"); r.code != 0 {
		t.Fatalf("renew: %s", r.stdout)
	}
	span := time.Since(start)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	killed, repaired := 0, 0
	for i := 0; i < 120; i++ {
		cmd := exec.Command(certagentBin, "renew", "--root", root, "--all", "--force")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int63n(int64(span))))
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil {
			killed++
		}
		if strings.Contains(repairAndCheck(t, root), "repaired") {
			repaired++
		}
		if t.Failed() {
			t.Fatalf("inconsistent after kill %d", i)
		}
	}
	t.Logf("120 runs: %d killed mid-run, %d left a transaction to repair", killed, repaired)
	if killed == 0 {
		t.Error("no run was killed: the random delays are too long to test anything")
	}
	backups, _ := filepath.Glob(filepath.Join(root, "etc/kubernetes/tmp/certagent-backup-*"))
	if len(backups) > 5 {
		t.Errorf("%d backup directories kept, want at most 5", len(backups))
	}
}
