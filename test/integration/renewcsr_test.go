package integration

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestRenewCSRFromCLI: `certagent renew kubelet-serving` on a worker (no
// CA key, no daemon) asks the real API server through a CSR, prints the
// request's name and the approve command while it waits, installs the
// certificate once an administrator approves it, and says what must
// reload it. With a daemon running, the same command is answered by the
// daemon (its own CSR job, auto-approved by the controller manager) with
// the same lines.
func TestRenewCSRFromCLI(t *testing.T) {
	c := sharedCluster(t)

	t.Run("offline, approved by an administrator", func(t *testing.T) {
		node := "worker-cli1"
		root := makeNode(t, c, nodeOpts{name: node, age: time.Minute, servingAge: time.Minute, life: time.Hour, serving: true})
		rep, _ := certagentCheck(t, root)
		old := index(rep.Certificates)["kubelet-serving"]
		if old.RenewalPath != "csr" {
			t.Fatalf("renewal path %q", old.RenewalPath)
		}
		cmd := exec.Command(certagentBin, "renew", "--root", root, "--timeout", "60s", "kubelet-serving")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r := pendingCSR(t, c, node, "kubernetes.io/kubelet-serving")
		decide(t, c, r, true)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("renew: %v\n%s%s", err, stdout.String(), stderr.String())
		}
		out := stdout.String()
		for _, want := range []string{
			"requested kubelet-serving", "CSR " + r.Name + "; approve it with: kubectl certificate approve " + r.Name,
			"renewed   kubelet-serving", "through CSR " + r.Name,
			"next: kubelet must restart to load kubelet-serving: systemctl restart kubelet.service",
			"next: certagent will not restart them",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout lacks %q:\n%s", want, out)
			}
		}
		if !strings.Contains(stderr.String(), "waiting for CSR "+r.Name+" to be approved and issued; approve it with: kubectl certificate approve "+r.Name) {
			t.Errorf("no progress on stderr:\n%s", stderr.String())
		}
		rep, _ = certagentCheck(t, root)
		if s := index(rep.Certificates)["kubelet-serving"].Serial; s == old.Serial {
			t.Error("kubelet-serving not replaced on disk")
		}
	})

	t.Run("through the daemon", func(t *testing.T) {
		node := "worker-cli2"
		root := makeNode(t, c, nodeOpts{name: node, age: time.Minute, life: time.Hour})
		d := startDaemon(t, certagentBin, root, nil)
		old := serialOfStatus(d.status(t), "kubelet-client-current")
		res := run(t, certagentBin, "renew", "--root", root, "--timeout", "60s", "kubelet-client-current")
		if res.code != 0 {
			t.Fatalf("exit %d\n%s%s\n%s", res.code, res.stdout, res.stderr, d.log())
		}
		for _, want := range []string{"(renewed by the running certagent daemon)", "requested kubelet-client-current", "kubectl certificate approve certagent-",
			"renewed   kubelet-client-current", "through CSR certagent-"} {
			if !strings.Contains(res.stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, res.stdout)
			}
		}
		d.waitCert(t, "kubelet-client-current", "the new serial in status", 10*time.Second, func(serial, state, _, _ string) bool {
			return serial != old && state == "ok"
		})
	})
}
