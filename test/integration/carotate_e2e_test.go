package integration

import (
	"context"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestE2ECARotation is issue 18's proof, on one control-plane node (the
// real etcd, kube-apiserver and kube-controller-manager on the host, from
// a real kubeadm root) and one worker (the real kubelet in a systemd
// node), each with certagent: `certagent ca rotate` runs through every
// phase while an administrator polls the API (admin.conf read again at
// each request) and the kubelets' Leases are watched.
func TestE2ECARotation(t *testing.T) {
	// About 4.5 min on 2 cores; `make test-ca-rotation` runs it alone.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rig := startCARig(t, ctx)
	roots := map[string]string{"cp": rig.cp, "worker": rig.worker.dir}
	adminConf := filepath.Join(rig.cp, "etc/kubernetes/admin.conf")
	oldCA := firstCert(t, filepath.Join(rig.cp, "etc/kubernetes/pki/ca.crt"))
	admin := pollAdmin(ctx, adminConf)
	leases := watchLeases(ctx, adminConf, caWorkerName, caCPName)
	if !t.Run("harness", func(t *testing.T) { rig.checkHarness(t, oldCA, roots, admin, leases) }) {
		return
	}
	if !t.Run("harness restarts", func(t *testing.T) { rig.checkRestarts(t, admin, leases) }) {
		return
	}
	if !t.Run("rotation", func(t *testing.T) {
		start := time.Now()
		r := run(t, certagentBin, "ca", "rotate", "--root", rig.cp, "--timeout", "3m")
		took := time.Since(start)
		if r.code != 0 {
			rig.dump(t)
			t.Fatalf("certagent ca rotate: exit %d after %s\n%s%s", r.code, took, r.stdout, r.stderr)
		}
		t.Logf("figures: certagent ca rotate took %s:\n%s%s", took.Round(time.Millisecond), r.stdout, r.stderr)
		rig.waitLeaseAfter(t, leases, time.Now())
		rig.checkRotated(t, start, oldCA, roots, admin, leases, true)
		if t.Failed() {
			t.Logf("worker certagent:\n%s", rig.worker.journal(start))
		}
	}) {
		return
	}
	t.Run("killed in every phase", func(t *testing.T) { rig.killedRotation(t, roots, admin, leases) })
}

// dump logs what the nodes' certagents say, for a failure.
func (rig *caRig) dump(t *testing.T) {
	t.Helper()
	var log string
	for _, l := range strings.Split(rig.daemon.log(), "\n") {
		if !strings.Contains(l, "renewal scheduled") {
			log += l + "\n"
		}
	}
	if len(log) > 12000 {
		log = log[len(log)-12000:]
	}
	st := run(t, certagentBin, "ca", "status", "--root", rig.cp)
	jl, _ := rig.worker.Exec("journalctl", "-u", "certagent", "-n", "80", "--no-pager")
	t.Logf("ca status:\n%s%s\ncontrol-plane certagent:\n%s\nworker certagent:\n%s", st.stdout, st.stderr, log, jl)
	rig.tl.mu.Lock()
	t.Logf("control-plane components that exited by themselves: %q", rig.tl.crashes)
	rig.tl.mu.Unlock()
	for _, p := range []string{"apiserver-", "controller-manager-"} {
		t.Logf("%s%s (end of its log):\n%s", p, caCPName, rig.h.Log(p+caCPName))
	}
}

// checkRestarts shows the stand-in and the pollers at work on a plain
// renewal: certagent renews the kube-apiserver's etcd client certificate and
// controller-manager.conf and restarts both through their manifests; the
// administrator's failures all fall while the one kube-apiserver is down.
func (rig *caRig) checkRestarts(t *testing.T, admin *adminPoller, leases *leaseWatch) {
	start := time.Now()
	// kube-apiserver reads its serving certificate anew by itself, not
	// its etcd client's: that renewal restarts it.
	r := run(t, certagentBin, "renew", "--root", rig.cp, "apiserver-etcd-client", "controller-manager.conf")
	if r.code != 0 {
		t.Fatalf("renew: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	waitFor(t, "kube-apiserver and kube-controller-manager restarted", 2*time.Minute, func() bool {
		return len(rig.tl.since(start, "kube-apiserver")) > 0 && len(rig.tl.since(start, "kube-controller-manager")) > 0
	})
	rig.waitLeaseAfter(t, leases, time.Now())
	outages := rig.tl.since(start, "kube-apiserver")
	trust, outside, inside := classify(admin, start, outages)
	if len(trust)+len(outside) > 0 {
		t.Errorf("administrator's requests failed for trust: %v; failed outside the kube-apiserver restart: %v", trust, outside)
	}
	for _, n := range []string{caWorkerName, caCPName} {
		if g := leases.gaps(n, start); len(g) > 0 {
			t.Logf("%s Lease: longest gap %s (%s..%s)", n, g[0].length().Round(time.Millisecond), g[0].from.Format("15:04:05.000"), g[0].to.Format("15:04:05.000"))
		}
	}
	for _, iv := range rig.tl.since(start, "") {
		t.Logf("restart %-30s %s .. %s (%s)", iv.what, iv.start.Format("15:04:05.000"), iv.end.Format("15:04:05.000"), iv.end.Sub(iv.start).Round(time.Millisecond))
	}
	t.Logf("administrator's requests failed while the kube-apiserver restarted: %d", inside)
}

// waitLeaseAfter waits for a Lease renewal of each node after at.
func (rig *caRig) waitLeaseAfter(t *testing.T, leases *leaseWatch, at time.Time) {
	t.Helper()
	waitFor(t, "a Lease renewal of each node", 3*caLeaseRenew, func() bool {
		return leases.count(caWorkerName, at) > 0 && leases.count(caCPName, at) > 0
	})
}

// classify sorts the administrator's failures since start: refused for
// trust (never allowed), other failures outside the kube-apiserver's
// outages (never allowed), and the count of those inside one (a single
// kube-apiserver restarting is unavailable, whatever the certificates).
func classify(admin *adminPoller, start time.Time, outages []interval) (trust, outside []reqFailure, inside int) {
	_, failures, _ := admin.snapshot()
	for _, f := range failures {
		switch {
		case f.at.Before(start):
		case isTrustError(f.err):
			trust = append(trust, f)
		case during(f.at, outages, time.Second):
			inside++
		default:
			outside = append(outside, f)
		}
	}
	return trust, outside, inside
}

// checkHarness shows the rig is what the proof needs before any rotation:
// the old CA in every bundle and under every leaf of both nodes, the
// Leases of both nodes moving, the administrator's requests answered,
// certagent reporting on both Nodes.
func (rig *caRig) checkHarness(t *testing.T, ca *x509.Certificate, roots map[string]string, admin *adminPoller, leases *leaseWatch) {
	start := time.Now()
	u := findCA(t, ca, roots)
	expectEverywhere(t, "the CA", u)
	t.Logf("before the rotation, the old CA is in %d bundles and signed %d certificates in use:\n  %s\n  %s",
		len(u.bundles), len(u.leaves), strings.Join(u.bundles, "\n  "), strings.Join(u.leaves, "\n  "))
	waitFor(t, "two Lease renewals of each node", 45*time.Second, func() bool {
		return leases.count(caWorkerName, start) >= 2 && leases.count(caCPName, start) >= 2
	})
	waitFor(t, "certagent's condition on both Nodes", time.Minute, func() bool {
		for _, n := range []string{caCPName, caWorkerName} {
			node, err := rig.c.Admin.CoreV1().Nodes().Get(rig.ctx, n, metav1.GetOptions{})
			if err != nil || !hasCondition(node, "CertificateRotationHealthy", corev1.ConditionTrue) {
				return false
			}
		}
		return true
	})
	ok, failures, _ := admin.snapshot()
	if ok < 10 || len(failures) > 0 {
		t.Errorf("administrator's requests: %d answered, failures %v", ok, failures)
	}
	for _, n := range []string{caWorkerName, caCPName} {
		if g := leases.gaps(n, start); len(g) > 0 && g[0].length() >= 2*caLeaseRenew {
			t.Errorf("%s Lease: a gap of %s with nothing restarting", n, g[0].length())
		}
	}
	t.Logf("harness: %d administrator requests answered; Leases renewed (worker %d, control plane %d times) in %s",
		ok, leases.count(caWorkerName, start), leases.count(caCPName, start), time.Since(start).Round(time.Millisecond))
}

func hasPrefix(l []string, prefix string) bool {
	for _, s := range l {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func hasCondition(n *corev1.Node, typ string, status corev1.ConditionStatus) bool {
	for _, c := range n.Status.Conditions {
		if string(c.Type) == typ {
			return c.Status == status
		}
	}
	return false
}
