package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	certv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/cluster"
	"github.com/certagent/certagent/test/nspawn"
)

// TestE2ERealKubeletRotatesItself: the kubelet owns its client certificate
// (rotateCertificates: true). On a control plane whose approver is the
// test (csrapproving is off), certagent first only observes while the
// kubelet's own CSR is approved: no CSR of its own, no restart, and the
// Lease moves past the old notAfter. Then the approver stops approving the
// kubelet: its next CSR stays pending, certagent steps in before the
// certificate dies (its own CSR, approved as an operator would), restarts
// the kubelet, and the Lease moves past that certificate's notAfter too.
func TestE2ERealKubeletRotatesItself(t *testing.T) {
	t.Parallel()
	requireRealNode(t)
	root, work := t.TempDir(), t.TempDir()
	if err := makeKubeadmPKI(root, "1h", "RSA-2048"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The signer's lifetime: three minutes, so the kubelet's second
	// rotation and certagent's step-in (at 95 %) fall inside the test.
	c, err := cluster.Start(ctx, kubeBin, root, work, 3*time.Minute, cluster.WithoutApproval())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	start := time.Now()
	firstNotAfter := start.Add(110 * time.Second).Truncate(time.Second)
	// The serving certificate: certagent steps in (95 %) after the client
	// certificate's part is over.
	servingNotAfter := start.Add(320 * time.Second).Truncate(time.Second)
	var firstSerial string
	k := nspawn.Kubelet{NodeName: "e2e-rotating", Rotate: true, ServerTLSBootstrap: true, Port: 10270, HealthzPort: 10268}
	r := bootRealNodeOn(t, c, k, func(r *realNode) {
		cert, key, serial := r.clientCert(start.Add(-40*time.Second), firstNotAfter)
		firstSerial = serial
		stamp := start.UTC().Format("2006-01-02-15-04-05")
		r.storeClient(cert, key, stamp)
		cert, key, _ = r.servingCert(start.Add(-40*time.Second), servingNotAfter)
		r.store("server", cert, key, stamp)
		r.put("etc/kubernetes/kubelet.conf", []byte(nspawn.StoreKubeconfig(r.c.URL, "kubernetes")), 0o600)
		r.config("agent: {metricsAddress: \"\", retryInitial: 2s, retryMax: 10s}\n")
	})
	r.leaseAfter(start, 60*time.Second, "the kubelet's first Lease")
	kubeletPID := mainPID(t, r.Node, "kubelet.service")
	r.install()

	// The kubelet rotates; certagent watches.
	ap := startApprover(c, "system:node:"+r.name, certv1.KubeAPIServerClientKubeletSignerName, "csr-")
	var second string
	waitIn(t, "certagent waiting for the kubelet (step-in)", 30*time.Second, func() bool {
		s, _ := r.status()
		for _, cert := range s.Certificates {
			if cert.Name == clientCertName {
				return cert.Renewal.NextAction == "step-in"
			}
		}
		return false
	}, r.Node)
	waitIn(t, "the kubelet's own rotation", time.Until(firstNotAfter), func() bool {
		second, _, _, _ = r.clientState()
		return second != "" && second != firstSerial
	}, r.Node)
	r.leaseAfter(firstNotAfter.Add(time.Second), time.Until(firstNotAfter)+40*time.Second, "a Lease renewal after the first certificate expired")
	if at, _ := r.journalAt(msgRestartDone, "", start); !at.IsZero() || mainPID(t, r.Node, "kubelet.service") != kubeletPID {
		t.Errorf("certagent restarted the kubelet (at %s) while the kubelet rotated by itself", at)
	}
	if mine := r.nodeCSRs("certagent-"); len(mine) != 0 {
		t.Errorf("certagent made CSRs %v while the kubelet rotated by itself", mine)
	}
	t.Logf("the kubelet's own CSRs, approved: %v", ap.stop())

	// Rotation breaks: nobody approves the kubelet. certagent steps in.
	ap = startApprover(c, "system:node:"+r.name, certv1.KubeAPIServerClientKubeletSignerName, "certagent-")
	defer ap.stop()
	// The certificate certagent must replace is the one on disk once the
	// kubelet asks for one nobody approves: with 3-minute certificates the
	// kubelet may have rotated again, itself, while its approver ran.
	waitIn(t, "the kubelet asking for a certificate nobody approves", 4*time.Minute, func() bool {
		return len(r.nodeCSRs("csr-")) > 0
	}, r.Node)
	second, _, _, _ = r.clientState()
	secondNotAfter := r.clientNotAfter()
	var third string
	waitIn(t, "certagent stepping in before the certificate dies", time.Until(secondNotAfter), func() bool {
		var result string
		third, _, _, result = r.clientState()
		// The kubelet's CSR is pending: a new certificate is certagent's.
		return third != "" && third != second && strings.HasPrefix(result, "renewed")
	}, r.Node)
	steppedIn := time.Now()
	if pending := r.nodeCSRs("csr-"); len(pending) == 0 {
		t.Error("no pending CSR of the kubelet: its rotation was not what broke")
	}
	waitIn(t, "the kubelet restarted by certagent", 60*time.Second, func() bool {
		at, _ := r.journalAt(msgRestartDone, "", start)
		return !at.IsZero()
	}, r.Node)
	r.leaseAfter(r.unitStarted("kubelet.service"), 30*time.Second, "a Lease renewal by the restarted kubelet")
	r.leaseAfter(secondNotAfter.Add(time.Second), time.Until(secondNotAfter)+40*time.Second, "a Lease renewal after the second certificate expired")
	t.Logf("figures: certagent's certificate on disk %s before the kubelet's died; approved %v",
		secondNotAfter.Sub(steppedIn).Round(time.Millisecond), ap.stop())
	r.checkClusterView("CertificateRenewed", corev1.ConditionTrue)
	r.servingPendingThenServed()
}

// servingPendingThenServed: with serverTLSBootstrap: true and nobody
// approving serving CSRs, certagent steps in for the serving certificate;
// its CSR is shown pending with the approve command (status and journal);
// once approved, the kubelet serves the new certificate on its port
// (checked by a TLS handshake).
func (r *realNode) servingPendingThenServed() {
	t := r.t
	var name, reason string
	waitIn(t, "certagent's serving CSR pending", 3*time.Minute, func() bool {
		s, _ := r.status()
		for _, c := range s.Certificates {
			if c.Name == "kubelet-serving" {
				name, reason = c.Renewal.PendingCSR, c.Renewal.Reason
			}
		}
		return strings.HasPrefix(name, "certagent-")
	}, r.Node)
	if !strings.Contains(reason, "kubectl certificate approve "+name) {
		t.Errorf("status reason %q lacks the approve command", reason)
	}
	waitIn(t, "the pending CSR in the journal", 20*time.Second, func() bool {
		_, e := r.journalAt(msgCSRPending, "kubelet-serving", time.Time{})
		return e != nil && e["CSR_NAME"] == name && e["REASON"] == "kubectl certificate approve "+name
	}, r.Node)
	approved := time.Now()
	ap := startApprover(r.c, "system:node:"+r.name, certv1.KubeletServingSignerName, name)
	defer ap.stop()
	port, _ := r.k.Ports()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var disk string
	waitIn(t, "the new serving certificate served", 90*time.Second, func() bool {
		s, _ := r.status()
		for _, c := range s.Certificates {
			if c.Name == "kubelet-serving" && strings.HasPrefix(c.Renewal.LastResult, "renewed") {
				disk = c.Serial
			}
		}
		return disk != "" && servedSerialIn(r.Node, addr) == strings.TrimLeft(disk, "0")
	}, r.Node)
	t.Logf("figures: serving CSR approved to the new certificate served on %s: %s", addr, time.Since(approved).Round(time.Millisecond))
}

// clientNotAfter is the current client certificate's notAfter per status.
func (r *realNode) clientNotAfter() time.Time {
	s, _ := r.status()
	for _, c := range s.Certificates {
		if c.Name == clientCertName {
			return c.NotAfter
		}
	}
	r.t.Fatal("no kubelet-client-current in status")
	return time.Time{}
}

// nodeCSRs lists the node's pending CSRs whose name has the prefix.
func (r *realNode) nodeCSRs(prefix string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := r.c.Admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, csr := range list.Items {
		if csr.Spec.Username == "system:node:"+r.name && strings.HasPrefix(csr.Name, prefix) && len(csr.Status.Conditions) == 0 {
			out = append(out, csr.Name)
		}
	}
	return out
}

// approver approves, as an operator would, the pending CSRs that user made
// for the signer whose names have a prefix, until stopped.
type approver struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	names  []string
}

func startApprover(c *cluster.Cluster, user, signer, prefix string) *approver {
	ctx, cancel := context.WithCancel(context.Background())
	a := &approver{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for ctx.Err() == nil {
			list, err := c.Admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
			for i := 0; err == nil && i < len(list.Items); i++ {
				csr := &list.Items[i]
				if csr.Spec.Username != user || csr.Spec.SignerName != signer || !strings.HasPrefix(csr.Name, prefix) || len(csr.Status.Conditions) > 0 {
					continue
				}
				csr.Status.Conditions = append(csr.Status.Conditions, certv1.CertificateSigningRequestCondition{
					Type: certv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "TestApprover", Message: "approved by the test"})
				if _, err := c.Admin.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err == nil {
					a.mu.Lock()
					a.names = append(a.names, csr.Name)
					a.mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	return a
}

// stop stops approving and returns what was approved.
func (a *approver) stop() []string {
	a.cancel()
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.names
}
