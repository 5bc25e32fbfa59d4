package integration

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestCSRAPIServerDown: the API server goes away while a request waits;
// the renewal fails with a backoff, no file changes, and once the API is
// back and the request approved, the certificate is installed.
func TestCSRAPIServerDown(t *testing.T) {
	c := sharedCluster(t)
	node := "worker-down"
	root := makeNode(t, c, nodeOpts{name: node, age: time.Minute, servingAge: 57 * time.Minute, life: time.Hour, serving: true,
		config: "kubelet: {servingCSRTimeout: 4s}\n"})
	before := storeFiles(t, root)
	d := startDaemon(t, certagentBin, root, nil)
	r := pendingCSR(t, c, node, "kubernetes.io/kubelet-serving")
	c.StopAPIServer()
	d.waitCert(t, "kubelet-serving", "a failure while the API is down", 30*time.Second, func(_, state, _, _ string) bool { return state == "failed" })
	if storeFiles(t, root) != before {
		t.Error("files changed while the API server was down")
	}
	if err := c.StartAPIServer(kubeBin); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(context.Background(), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	decide(t, c, r, true)
	t.Logf("API server back after %s", time.Since(t0))
	old := serialOfStatus(d.status(t), "kubelet-serving")
	d.waitCert(t, "kubelet-serving", "recovery after the API is back", 60*time.Second, func(serial, state, _, _ string) bool {
		return serial != old && state == "ok"
	})
}

// TestCSRSignerReturnsAnotherKey: a custom signer (the test) issues a
// certificate for a key that is not ours; certagent rejects it and keeps
// its files.
func TestCSRSignerReturnsAnotherKey(t *testing.T) {
	c := sharedCluster(t)
	ctx := context.Background()
	root := makeNode(t, c, nodeOpts{name: "worker-custom", age: time.Minute, life: time.Hour,
		config: `certificates:
- name: webhook
  certFile: /etc/webhook/tls.crt
  keyFile: /etc/webhook/tls.key
  signerName: example.com/webhook
  usages: [digital signature, server auth]
  kubeconfig: /etc/kubernetes/super-admin.conf
  timeout: 30s
`})
	ca := clusterCA(t, c)
	other, _ := pkitest.NewCA("webhook-ca", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), pkitest.ECDSA)
	cert, key, _ := other.Issue(pkitest.Spec{CommonName: "webhook.example", DNSNames: []string{"webhook.example"},
		NotBefore: time.Now().Add(-55 * time.Minute), NotAfter: time.Now().Add(5 * time.Minute), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	os.MkdirAll(filepath.Join(root, "etc/webhook"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/webhook/tls.crt"), pkitest.CertPEM(cert), 0o644)
	os.WriteFile(filepath.Join(root, "etc/webhook/tls.key"), pkitest.KeyPEM(key), 0o600)
	admin, _ := os.ReadFile(filepath.Join(c.Root, "etc/kubernetes/super-admin.conf"))
	os.WriteFile(filepath.Join(root, "etc/kubernetes/super-admin.conf"), admin, 0o600)
	c.PointKubeconfig(filepath.Join(root, "etc/kubernetes/super-admin.conf"))
	_ = ca
	before, _ := os.ReadFile(filepath.Join(root, "etc/webhook/tls.crt"))
	d := startDaemon(t, certagentBin, root, nil)

	// Act as the signer: approve, then issue for a stranger's key.
	var r *certificatesv1.CertificateSigningRequest
	deadline := time.Now().Add(20 * time.Second)
	for r == nil && time.Now().Before(deadline) {
		l, _ := c.Admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		for i := range l.Items {
			if l.Items[i].Spec.SignerName == "example.com/webhook" && len(l.Items[i].Status.Conditions) == 0 {
				r = &l.Items[i]
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r == nil {
		t.Fatalf("no CSR for the custom signer\n%s", d.log())
	}
	decide(t, c, r, true)
	stranger, _, _ := other.Issue(pkitest.Spec{CommonName: "webhook.example", DNSNames: []string{"webhook.example"}})
	r, _ = c.Admin.CertificatesV1().CertificateSigningRequests().Get(ctx, r.Name, metav1.GetOptions{})
	r.Status.Certificate = pkitest.CertPEM(stranger)
	if _, err := c.Admin.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, r, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d.waitCert(t, "webhook", "the rejection", 20*time.Second, func(_, state, reason, _ string) bool {
		return state == "failed" && strings.Contains(reason, "not for the requested key")
	})
	if after, _ := os.ReadFile(filepath.Join(root, "etc/webhook/tls.crt")); string(after) != string(before) {
		t.Error("the certificate was replaced with one for another key")
	}
}

// TestExpiredClientCertificate is the outage certagent exists for: the
// kubelet client certificate expired, the node cannot authenticate. A
// control-plane node re-signs it from the local CA; a worker with a
// bootstrap kubeconfig recovers through it; a worker without one goes
// critical with the recovery steps, and recovers as soon as an operator
// puts a bootstrap kubeconfig in place.
func TestExpiredClientCertificate(t *testing.T) {
	c := sharedCluster(t)
	expired := func(name string, o nodeOpts) (string, *daemon, string) {
		o.name, o.age, o.life = name, 2*time.Hour, time.Hour
		root := makeNode(t, c, o)
		old := strings.ToUpper(readCert(t, filepath.Join(root, "var/lib/kubelet/pki/kubelet-client-2020-01-01-00-00-00.pem")).SerialNumber.Text(16))
		d := startDaemon(t, certagentBin, root, nil)
		return root, d, old
	}
	t.Run("control-plane node", func(t *testing.T) {
		_, d, old := expired("cp-expired", nodeOpts{withCAKey: true})
		d.waitCert(t, "kubelet-client-current", "a local re-signing", 20*time.Second, func(serial, state, _, _ string) bool { return serial != old && state == "ok" })
		if s := d.status(t); s.Daemon.LastCSR == nil || s.Daemon.LastCSR.Method != "local-ca" {
			t.Errorf("method: %+v", s.Daemon.LastCSR)
		}
	})
	t.Run("worker with a bootstrap kubeconfig", func(t *testing.T) {
		_, d, old := expired("wk-bootstrap", nodeOpts{bootstrap: true})
		d.waitCert(t, "kubelet-client-current", "recovery through bootstrap", 30*time.Second, func(serial, state, _, _ string) bool { return serial != old && state == "ok" })
		if s := d.status(t); s.Daemon.LastCSR == nil || s.Daemon.LastCSR.Method != "csr-bootstrap" {
			t.Errorf("method: %+v\n%s", s.Daemon.LastCSR, d.log())
		}
	})
	t.Run("worker with nothing", func(t *testing.T) {
		root, d, old := expired("wk-stranded", nodeOpts{})
		d.waitCert(t, "kubelet-client-current", "critical", 20*time.Second, func(_, state, reason, _ string) bool {
			return state == "expired" && strings.Contains(reason, "kubeadm token create") && strings.Contains(reason, "bootstrap-kubelet.conf")
		})
		// Logged critical, with the recovery steps in the message itself.
		critical := false
		for _, l := range strings.Split(d.log(), "\n") {
			critical = critical || strings.Contains(l, "PRIORITY=2") && strings.Contains(l, `msg="certificate renewal failed: `) && strings.Contains(l, "kubeadm token create")
		}
		if !critical {
			t.Errorf("no critical entry with the recovery steps in its message:\n%s", d.log())
		}
		// The operator follows the steps: a bootstrap kubeconfig appears.
		bo := makeNode(t, c, nodeOpts{name: "wk-stranded", age: time.Minute, life: time.Hour, bootstrap: true})
		data, _ := os.ReadFile(filepath.Join(bo, "etc/kubernetes/bootstrap-kubelet.conf"))
		os.WriteFile(filepath.Join(root, "etc/kubernetes/bootstrap-kubelet.conf"), data, 0o600)
		d.waitCert(t, "kubelet-client-current", "recovery", 30*time.Second, func(serial, state, _, _ string) bool { return serial != old && state == "ok" })
	})
}

var _ = corev1.ConditionTrue
