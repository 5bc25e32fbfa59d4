package csrrenew

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/kube"
	"github.com/certagent/certagent/agent/kube/kubefake"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// node writes a kubeadm layout and scans it.
func node(t *testing.T, l pkitest.Layout) (*pki.Root, *pkitest.Node, *inventory.Report) {
	t.Helper()
	dir := t.TempDir()
	n, err := l.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := inventory.Scan(context.Background(), inventory.Options{Root: root, Config: config.Default(), Now: l.Now})
	if err != nil {
		t.Fatal(err)
	}
	return root, n, rep
}

func certOf(t *testing.T, rep *inventory.Report, name string) *inventory.Certificate {
	t.Helper()
	for _, c := range rep.Certificates {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %s", name)
	return nil
}

// fakeClient hands out client, counting the factory's calls.
func fakeClient(client kubernetes.Interface, ca *x509.Certificate, calls *int) ClientsetFn {
	return func(string, *atomic.Int64) (kube.Interface, *x509.CertPool, error) {
		*calls++
		return kubefake.Wrap(client), poolOf(ca), nil
	}
}

// TestRenewCSRExpiredClient: an expired kubelet client certificate cannot
// authenticate a CSR: with the CA key on the node it is re-issued from the
// local CA without any client; without it and without a bootstrap
// kubeconfig the error says how to recover, and is ErrNoCredential.
func TestRenewCSRExpiredClient(t *testing.T) {
	now := time.Now()
	expired := map[string]time.Time{"kubelet-client-current": now.Add(-time.Hour)}
	tests := []struct {
		name       string
		externalCA bool
		method     string
		wantErr    error
	}{
		{name: "CA key here", method: "local-ca"},
		{name: "no CA key, no bootstrap kubeconfig", externalCA: true, method: "csr", wantErr: ErrNoCredential},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root, n, rep := node(t, pkitest.Layout{Now: now, NotAfter: expired, KubeletConfReference: true, ExternalCA: tc.externalCA})
			calls := 0
			r := Renewer{Root: root, Clock: testingclock.NewFakeClock(now), Client: fakeClient(fake.NewClientset(), n.CA.Cert, &calls)}
			res := r.RenewCSR(context.Background(), renewal.CSRJob{Config: config.Default(), Cert: certOf(t, rep, "kubelet-client-current"), Report: rep})
			if res.Method != tc.method || !errors.Is(res.Err, tc.wantErr) || calls != 0 {
				t.Fatalf("method %s err %v, %d clients built", res.Method, res.Err, calls)
			}
			if tc.wantErr != nil {
				if !strings.Contains(res.Err.Error(), "kubeadm token create") || res.NewSerial != "" {
					t.Errorf("error %v, serial %q", res.Err, res.NewSerial)
				}
				return
			}
			if res.NewSerial == "" || res.NewSerial == res.OldSerial || !res.NotAfter.After(now) || res.Rollback == nil || res.How != "(local-ca)" {
				t.Errorf("result %+v", res)
			}
		})
	}
}

// TestRenewCSRClientError: a client that cannot be built fails the
// renewal with its reason, and nothing is written.
func TestRenewCSRClientError(t *testing.T) {
	root, _, rep := node(t, pkitest.Layout{Now: time.Now(), KubeletConfReference: true})
	refused := errors.New("kubelet.conf: exec plugin: credential refused")
	r := Renewer{Root: root, Client: func(string, *atomic.Int64) (kube.Interface, *x509.CertPool, error) { return nil, nil, refused }}
	c := certOf(t, rep, "kubelet-client-current")
	res := r.RenewCSR(context.Background(), renewal.CSRJob{Config: config.Default(), Cert: c})
	if !errors.Is(res.Err, refused) || res.CSR != "" || res.Finished.IsZero() {
		t.Fatalf("result %+v", res)
	}
	if got, _ := currentCert(root, c); got == nil || strings.ToUpper(got.SerialNumber.Text(16)) != c.Serial {
		t.Error("the certificate changed")
	}
	if res := (Renewer{Root: root}).RenewCSR(context.Background(), renewal.CSRJob{Config: config.Default(), Cert: c}); res.Err == nil {
		t.Error("no client factory: no error")
	}
}

// TestRenewCSRPendingKey: a request that is not answered in time keeps
// its key, and the next attempt (with ReusePending) waits on the same
// request; a denied one drops the key, so the next makes a new request.
func TestRenewCSRPendingKey(t *testing.T) {
	root, n, rep := node(t, pkitest.Layout{Now: time.Now(), KubeletConfReference: true})
	pending := t.TempDir()
	client := fake.NewClientset()
	answerCSRs(client, n.CA, "", nil)
	calls := 0
	r := Renewer{Root: root, Client: fakeClient(client, n.CA.Cert, &calls)}
	job := renewal.CSRJob{Config: config.Default(), Cert: certOf(t, rep, "kubelet-client-current"), Report: rep,
		Timeout: 200 * time.Millisecond, PendingDir: pending, ReusePending: true}
	first := r.RenewCSR(context.Background(), job)
	var timeout *rotate.CSRTimeoutError
	if !errors.As(first.Err, &timeout) || first.CSR == "" || Unissuable(first.Err) {
		t.Fatalf("first attempt %+v", first)
	}
	if keys, _ := filepath.Glob(filepath.Join(pending, "pending-*.key")); len(keys) != 1 {
		t.Fatalf("kept keys %v", keys)
	}
	second := r.RenewCSR(context.Background(), job)
	if second.CSR != first.CSR {
		t.Errorf("second request %s, want the first's %s", second.CSR, first.CSR)
	}

	denied := fake.NewClientset()
	answerCSRs(denied, n.CA, "deny", nil)
	r.Client = fakeClient(denied, n.CA.Cert, &calls)
	third := r.RenewCSR(context.Background(), job)
	if !Unissuable(third.Err) {
		t.Fatalf("denied: %v", third.Err)
	}
	if keys, _ := filepath.Glob(filepath.Join(pending, "pending-*.key")); len(keys) != 0 {
		t.Errorf("a denied request's key is kept: %v", keys)
	}
}

// TestOwner: who renews a kubelet certificate, by kubelet.rotation and the
// kubelet's own config.
func TestOwner(t *testing.T) {
	now := time.Now()
	root, _, rep := node(t, pkitest.Layout{Now: now, KubeletConfReference: true})
	client := certOf(t, rep, "kubelet-client-current")
	crt := certOf(t, rep, "kubelet.crt")
	kubeletConfig := func(body string) {
		p := root.HostPath("/var/lib/kubelet/config.yaml")
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, rotation, kubeletConfig string
		cert                          *inventory.Certificate
		kubelet                       bool
		why                           string
	}{
		{name: "certagent rotates", rotation: "certagent", cert: client},
		{name: "the kubelet rotates", rotation: "kubelet", cert: client, kubelet: true, why: "kubelet.rotation: kubelet"},
		{name: "auto, rotateCertificates on", rotation: "auto", kubeletConfig: "rotateCertificates: true\n", cert: client, kubelet: true, why: "rotateCertificates: true"},
		{name: "auto, rotateCertificates off", rotation: "auto", kubeletConfig: "rotateCertificates: false\n", cert: client},
		{name: "auto, no kubelet config", rotation: "auto", cert: client},
		{name: "kubelet.crt: never the kubelet's", rotation: "kubelet", cert: crt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(root.HostPath("/var/lib/kubelet/config.yaml"))
			if tc.kubeletConfig != "" {
				kubeletConfig(tc.kubeletConfig)
			}
			cfg := config.Default()
			cfg.Kubelet.Rotation = tc.rotation
			o := Owner(root, cfg, tc.cert)
			if o.Kubelet != tc.kubelet || !strings.Contains(o.Why, tc.why) {
				t.Errorf("owner %+v, want kubelet %v (%s)", o, tc.kubelet, tc.why)
			}
			if o.Kubelet && !o.StepIn.Equal(tc.cert.NotBefore.Add(tc.cert.NotAfter.Sub(tc.cert.NotBefore)*95/100)) {
				t.Errorf("steps in at %s", o.StepIn)
			}
		})
	}
}

// TestRenewCSREmbeddedKubeletConf: a kubelet.conf that embeds its client
// certificate (a node joined long ago) is renewed in place by the
// transaction (a backup, a rollback that puts the old one back), not into
// the kubelet's store.
func TestRenewCSREmbeddedKubeletConf(t *testing.T) {
	root, n, rep := node(t, pkitest.Layout{Now: time.Now(), ExternalCA: true})
	c := certOf(t, rep, "kubelet.conf")
	if c.Kind != inventory.KindKubeconfigEmbedded || c.RenewalPath != inventory.RenewCSR {
		t.Fatalf("kubelet.conf is %s, renewed by %s", c.Kind, c.RenewalPath)
	}
	client := fake.NewClientset()
	answerCSRs(client, n.CA, "approve", nil)
	calls := 0
	r := Renewer{Root: root, Client: fakeClient(client, n.CA.Cert, &calls)}
	res := r.RenewCSR(context.Background(), renewal.CSRJob{Config: config.Default(), Cert: c, Report: rep, Timeout: 5 * time.Second})
	if res.Err != nil || res.Backup == "" || res.Method != "csr" || res.CSR == "" || res.Rollback == nil {
		t.Fatalf("result %+v", res)
	}
	now, err := currentCert(root, c)
	if err != nil || strings.ToUpper(now.SerialNumber.Text(16)) != res.NewSerial {
		t.Fatalf("kubelet.conf holds %v (%v), want serial %s", now, err, res.NewSerial)
	}
	if err := res.Rollback(); err != nil {
		t.Fatal(err)
	}
	if back, _ := currentCert(root, c); back == nil || strings.ToUpper(back.SerialNumber.Text(16)) != c.Serial {
		t.Error("the rollback did not put the old certificate back")
	}
}

// TestRenewCSRKubeletStoreRollback: a certificate issued into the
// kubelet's store is one journaled transaction like every other renewal:
// the result names its backup, and the rollback (after a failed restart)
// points -current.pem back at the old file and removes the new one.
func TestRenewCSRKubeletStoreRollback(t *testing.T) {
	root, n, rep := node(t, pkitest.Layout{Now: time.Now(), KubeletConfReference: true})
	c := certOf(t, rep, "kubelet-client-current")
	current := root.HostPath("/var/lib/kubelet/pki/kubelet-client-current.pem")
	before, err := os.Readlink(current)
	if err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset()
	answerCSRs(client, n.CA, "approve", nil)
	calls := 0
	r := Renewer{Root: root, Client: fakeClient(client, n.CA.Cert, &calls)}
	res := r.RenewCSR(context.Background(), renewal.CSRJob{Config: config.Default(), Cert: c, Report: rep, Timeout: 5 * time.Second})
	if res.Err != nil || res.Backup == "" || res.Rollback == nil {
		t.Fatalf("result %+v", res)
	}
	after, err := os.Readlink(current)
	if err != nil || after == before {
		t.Fatalf("-current.pem -> %s (%v), was %s", after, err, before)
	}
	if err := res.Rollback(); err != nil {
		t.Fatal(err)
	}
	if back, _ := os.Readlink(current); back != before {
		t.Errorf("after the rollback -current.pem -> %s, want %s", back, before)
	}
	if !strings.HasPrefix(after, "/var/lib/kubelet/pki/kubelet-client-") {
		t.Fatalf("-current.pem -> %s, not a file of the store", after)
	}
	if _, err := os.Lstat(root.HostPath(after)); !os.IsNotExist(err) {
		t.Errorf("the new file %s stays after the rollback: %v", after, err)
	}
}
