package integration

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/nspawn"
)

const (
	msgRenewed     = "5bb61177dc074362822c1a458b6a50ca"
	msgRestartDone = "271eedc13f474c33becd23a12b4f4e1d"
	msgCSRPending  = "683b4d79cee84e7088889439925c8984"
	clientCertName = "kubelet-client-current"
)

// workerConfig is certagent's config on the real-kubelet worker: a fixed
// lead so the renewal falls at a known time, quick retries, no metrics
// port on the host's network.
const workerConfig = `renewBefore: 90s
agent: {metricsAddress: "", retryInitial: 2s, retryMax: 10s}
`

// TestE2ERealKubeletWorker is the product's promise shown with the real
// kubelet: on a worker whose kubelet does not rotate its certificate
// (rotateCertificates: false), certagent installed from the .deb renews
// the client certificate through a CSR before it dies, restarts the
// kubelet over D-Bus, and the node's Lease keeps advancing after the old
// certificate's notAfter. certagent's Events and Node condition appear on
// the Node, sent with the node's own credential (the node has no other).
func TestE2ERealKubeletWorker(t *testing.T) {
	t.Parallel()
	tl := newTimeline()
	var oldSerial string
	node := bootRealNode(t, nspawn.Kubelet{NodeName: "e2e-worker"}, func(r *realNode) {
		var cert, key []byte
		cert, key, oldSerial = r.clientCert(tl.start.Add(-30*time.Second), tl.notAfter)
		r.storeClient(cert, key, tl.start.UTC().Format("2006-01-02-15-04-05"))
		r.put("etc/kubernetes/kubelet.conf", []byte(nspawn.StoreKubeconfig(r.c.URL, "kubernetes")), 0o600)
		r.config(workerConfig)
	})
	if !t.Run("certagent owns rotation", func(t *testing.T) {
		r := node.on(t)
		var serial string
		r.proveRenewal(tl, func() bool {
			var result string
			serial, _, _, result = r.clientState()
			return serial != "" && serial != oldSerial && strings.HasPrefix(result, "renewed")
		})
		if s, _ := r.status(); s.Daemon.LastCSR == nil || s.Daemon.LastCSR.Method != "csr" {
			t.Errorf("lastCSR %+v, want method csr", s.Daemon.LastCSR)
		}
		r.checkIssuedByCSR(serial)
		r.checkClusterView("CertificateRenewed", corev1.ConditionTrue)
	}) {
		return
	}
	t.Run("seed outage", func(t *testing.T) { node.on(t).seedOutage() })
}

// on is the node seen from a subtest (failures go to t).
func (r *realNode) on(t *testing.T) *realNode {
	c := *r
	c.t = t
	return &c
}

// seedOutage is the outage certagent exists for, on the running node: the
// client certificate has expired and the kubelet, restarted, cannot renew
// the Lease. Without a bootstrap kubeconfig certagent goes critical with
// the recovery steps (status and journal); once one appears (the real
// bootstrap token of the control plane, with kubeadm's RBAC), it renews
// through it unattended, restarts the kubelet, and the Lease moves again.
func (r *realNode) seedOutage() {
	t := r.t
	in(t, r.Node, "systemctl", "stop", "certagent")
	now := time.Now()
	cert, key, dead := r.clientCert(now.Add(-2*time.Hour), now.Add(-time.Hour))
	r.storeClient(cert, key, "2020-01-01-00-00-00")
	in(t, r.Node, "systemctl", "restart", "kubelet")
	restarted := time.Now()
	waitIn(t, "three Lease periods with the expired certificate", 40*time.Second, func() bool {
		if l := r.lease(); l.After(restarted) {
			t.Fatalf("the Lease moved at %s with an expired certificate", l)
		}
		return time.Since(restarted) > 30*time.Second
	}, r.Node)

	in(t, r.Node, "systemctl", "start", "certagent")
	waitIn(t, "status critical with the recovery steps", 30*time.Second, func() bool {
		serial, state, reason, _ := r.clientState()
		return serial == dead && state == "expired" && strings.Contains(reason, "kubeadm token create") && strings.Contains(reason, "/etc/kubernetes/bootstrap-kubelet.conf")
	}, r.Node)
	if out, err := r.Exec("certagent", "status"); exitOf(err) != 2 {
		t.Errorf("certagent status exits %d, want 2 (critical):\n%s", exitOf(err), out)
	}
	waitIn(t, "the recovery steps in the journal at priority crit", 20*time.Second, func() bool {
		out, _ := r.Exec("journalctl", "-u", "certagent", "-p", "crit", "-o", "json", "--no-pager")
		for _, line := range strings.Split(string(out), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) == nil && e["CERT_NAME"] == clientCertName && strings.Contains(line, "kubeadm token create") {
				t.Logf("critical journal entry: %.600s", line)
				return true
			}
		}
		return false
	}, r.Node)

	// The operator follows the steps: a bootstrap kubeconfig with a token.
	fixed := time.Now()
	r.put("etc/kubernetes/bootstrap-kubelet.conf", []byte(nspawn.TokenKubeconfig(r.c.URL, "kubernetes", r.c.BootstrapToken)), 0o600)
	var serial string
	waitIn(t, "recovery through the bootstrap kubeconfig", 60*time.Second, func() bool {
		var state string
		serial, state, _, _ = r.clientState()
		return serial != dead && state == "ok"
	}, r.Node)
	if s, _ := r.status(); s.Daemon.LastCSR == nil || s.Daemon.LastCSR.Method != "csr-bootstrap" {
		t.Errorf("lastCSR %+v, want method csr-bootstrap", s.Daemon.LastCSR)
	}
	r.checkIssuedByCSR(serial)
	moved := r.leaseAfter(restarted, 60*time.Second, "the Lease moving again")
	t.Logf("figures: bootstrap kubeconfig written to Lease moving again: %s", moved.Sub(fixed).Round(time.Millisecond))
}

// timeline is a scenario's old client certificate: it dies at notAfter,
// and certagent (renewBefore: 90s) renews it from due.
type timeline struct{ start, due, notAfter time.Time }

func newTimeline() timeline {
	start := time.Now()
	notAfter := start.Add(180 * time.Second).Truncate(time.Second)
	return timeline{start, notAfter.Add(-90 * time.Second), notAfter}
}

// proveRenewal installs certagent on the booted node and follows the
// renewal: renewed reports the new certificate on disk (before the old one
// dies); then the kubelet is restarted over D-Bus, the restarted kubelet
// renews the Lease, and the Lease still moves after the old notAfter.
// It logs the figures.
func (r *realNode) proveRenewal(tl timeline, renewed func() bool) {
	t := r.t
	t.Helper()
	first := r.leaseAfter(tl.start, 60*time.Second, "the kubelet's first Lease")
	t.Logf("test start to first Lease: %s", first.Sub(tl.start).Round(time.Millisecond))
	oldPID := mainPID(t, r.Node, "kubelet.service")
	r.install()
	if time.Now().After(tl.due) {
		t.Fatalf("the node came up after the renewal was due (%s): the test's timeline is too short", tl.due)
	}
	waitIn(t, "the client certificate renewed", time.Until(tl.notAfter), renewed, r.Node)
	onDisk, _ := r.journalAt(msgRenewed, "", tl.start)

	var restarted time.Time
	waitIn(t, "the kubelet restarted by certagent", 90*time.Second, func() bool {
		restarted, _ = r.journalAt(msgRestartDone, "", onDisk)
		return !restarted.IsZero()
	}, r.Node)
	if mainPID(t, r.Node, "kubelet.service") == oldPID {
		t.Fatal("kubelet.service has the same MainPID: not restarted")
	}
	kubeletStart := r.unitStarted("kubelet.service")
	firstNew := r.leaseAfter(kubeletStart, 30*time.Second, "a Lease renewal by the restarted kubelet")

	// The old certificate is dead, the Lease still moves: the node never
	// lost the cluster. (This alone does not show the restart mattered:
	// run with noRestart, the kubelet v1.37.2 picked the swapped store
	// file up by itself before the old notAfter; the new main process and
	// its Lease renewal above show the restart.)
	waitIn(t, "the old certificate's notAfter", time.Until(tl.notAfter)+5*time.Second, func() bool { return time.Now().After(tl.notAfter.Add(time.Second)) })
	after := r.leaseAfter(tl.notAfter.Add(time.Second), 40*time.Second, "a Lease renewal after the old certificate expired")
	since := func(at time.Time) time.Duration { return at.Sub(tl.due).Round(time.Millisecond) }
	t.Logf("figures: due %s; new certificate on disk +%s; kubelet restarted +%s (healthy +%s); first Lease renewal by it +%s; Lease at %s after the old notAfter",
		tl.due.Format(time.RFC3339), since(onDisk), since(kubeletStart), since(restarted), since(firstNew), after.Sub(tl.notAfter).Round(time.Millisecond))
	t.Logf("RSS in the node: kubelet %s, containerd %s", r.rss("kubelet.service"), r.rss("containerd.service"))
}

// checkIssuedByCSR finds the approved CSR that issued the certificate with
// this serial, asked by the node itself for the kubelet client signer.
func (r *realNode) checkIssuedByCSR(serial string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := r.c.Admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	for _, csr := range list.Items {
		b, _ := pem.Decode(csr.Status.Certificate)
		if b == nil {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil || strings.ToUpper(c.SerialNumber.Text(16)) != serial {
			continue
		}
		approved := false
		for _, cond := range csr.Status.Conditions {
			approved = approved || cond.Type == certv1.CertificateApproved
		}
		if csr.Spec.SignerName != certv1.KubeAPIServerClientKubeletSignerName || !approved ||
			(csr.Spec.Username != "system:node:"+r.name && !strings.HasPrefix(csr.Spec.Username, "system:bootstrap:")) {
			r.t.Errorf("CSR %s: signer %s, approved %v, asked by %s", csr.Name, csr.Spec.SignerName, approved, csr.Spec.Username)
		}
		return
	}
	r.t.Errorf("no CSR issued the certificate %s", serial)
}

// checkClusterView waits for certagent's Event with the reason on the
// Node and for its CertificateRotationHealthy condition with the status.
func (r *realNode) checkClusterView(reason string, cond corev1.ConditionStatus) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitIn(r.t, "certagent's Event "+reason+" on the Node", 30*time.Second, func() bool {
		evs, err := r.c.Admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + r.name})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Reason == reason && e.Source.Component == "certagent" && e.InvolvedObject.Kind == "Node" {
				return true
			}
		}
		return false
	}, r.Node)
	waitIn(r.t, "the CertificateRotationHealthy condition", 30*time.Second, func() bool {
		n, err := r.c.Admin.CoreV1().Nodes().Get(ctx, r.name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == "CertificateRotationHealthy" {
				return c.Status == cond
			}
		}
		return false
	}, r.Node)
}
