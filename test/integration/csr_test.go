package integration

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/certificate"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
	"github.com/certagent/certagent/test/cluster"
)

// clusterCA loads the shared cluster's CA.
func clusterCA(t testing.TB, c *cluster.Cluster) *pkitest.CA {
	t.Helper()
	cd, _ := os.ReadFile(filepath.Join(c.Root, "etc/kubernetes/pki/ca.crt"))
	kd, _ := os.ReadFile(filepath.Join(c.Root, "etc/kubernetes/pki/ca.key"))
	b, err := pki.ParseBundle(cd)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pki.ParseKeyPEM(kd)
	if err != nil {
		t.Fatal(err)
	}
	return &pkitest.CA{Cert: b.Certs[0], Key: k}
}

// nodeOpts describe a node of the shared cluster for a test.
type nodeOpts struct {
	name       string
	age, life  time.Duration // the client certificate was issued age ago for life
	rotate     bool          // the kubelet's rotateCertificates
	serving    bool          // also a kubelet-server-current.pem
	servingAge time.Duration // its age (of the same life); the client certificate is then fresh
	withCAKey  bool          // a control-plane node
	bootstrap  bool          // a working bootstrap-kubelet.conf
	embedded   bool          // kubelet.conf embeds its own client certificate
	config     string        // extra certagent config
}

// makeNode writes a node root: the cluster CA (with its key only on a
// control-plane node), the kubelet store with a client certificate issued
// by the cluster CA, kubelet.conf pointing at it and at the cluster, the
// kubelet's config file, and certagent's config.
func makeNode(t testing.TB, c *cluster.Cluster, o nodeOpts) string {
	t.Helper()
	forgetNode(t, c, o.name)
	root := t.TempDir()
	ca := clusterCA(t, c)
	pkiDir := filepath.Join(root, "etc/kubernetes/pki")
	kdir := filepath.Join(root, "var/lib/kubelet/pki")
	os.MkdirAll(pkiDir, 0o755)
	os.MkdirAll(kdir, 0o755)
	os.WriteFile(filepath.Join(pkiDir, "ca.crt"), pkitest.CertPEM(ca.Cert), 0o644)
	if o.withCAKey {
		os.WriteFile(filepath.Join(pkiDir, "ca.key"), pkitest.KeyPEM(ca.Key), 0o600)
	}
	store := func(prefix string, spec pkitest.Spec, age time.Duration) {
		nb := time.Now().Add(-age)
		spec.NotBefore, spec.NotAfter = nb, nb.Add(o.life)
		cert, key, err := ca.Issue(spec)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(kdir, prefix+"-2020-01-01-00-00-00.pem")
		os.WriteFile(file, append(pkitest.CertPEM(cert), pkitest.KeyPEM(key)...), 0o600)
		os.Symlink("/var/lib/kubelet/pki/"+filepath.Base(file), filepath.Join(kdir, prefix+"-current.pem"))
	}
	store("kubelet-client", pkitest.Spec{CommonName: "system:node:" + o.name, Organization: []string{"system:nodes"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, o.age)
	if o.serving {
		store("kubelet-server", pkitest.Spec{CommonName: "system:node:" + o.name, Organization: []string{"system:nodes"},
			DNSNames: []string{o.name}, IPs: []net.IP{net.ParseIP("10.0.0.99")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, o.servingAge)
	}
	var certData, keyData []byte
	ref := "/var/lib/kubelet/pki/kubelet-client-current.pem"
	if o.embedded {
		nb := time.Now().Add(-o.age)
		ec, ek, _ := ca.Issue(pkitest.Spec{CommonName: "system:node:" + o.name, Organization: []string{"system:nodes"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: nb, NotAfter: nb.Add(o.life)})
		certData, keyData, ref = pkitest.CertPEM(ec), pkitest.KeyPEM(ek), ""
	}
	kc, err := pkitest.Kubeconfig(c.URL, ca.Cert, "default-auth", certData, keyData, ref)
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(root, "etc/kubernetes/kubelet.conf")
	os.WriteFile(kcPath, kc, 0o600)
	if err := c.PointKubeconfig(kcPath); err != nil {
		t.Fatal(err)
	}
	if o.bootstrap {
		bc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: k, cluster: {server: %q, tls-server-name: kubernetes, certificate-authority: /etc/kubernetes/pki/ca.crt}}]
users: [{name: tls-bootstrap-token-user, user: {token: %q}}]
contexts: [{name: b, context: {cluster: k, user: tls-bootstrap-token-user}}]
current-context: b
`, c.URL, c.BootstrapToken)
		os.WriteFile(filepath.Join(root, "etc/kubernetes/bootstrap-kubelet.conf"), []byte(bc), 0o600)
	}
	os.WriteFile(filepath.Join(root, "var/lib/kubelet/config.yaml"),
		[]byte(fmt.Sprintf("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nrotateCertificates: %v\n", o.rotate)), 0o644)
	cfg := filepath.Join(root, "etc/certagent/config.yaml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nagent: {retryInitial: 1s, retryMax: 2s}\n"+o.config), 0o644)
	return root
}

// agentStatus is the part of the status document these tests read.
type agentStatus struct {
	Certificates []struct {
		Name     string    `json:"name"`
		Serial   string    `json:"serial"`
		NotAfter time.Time `json:"notAfter"`
		Renewal  struct {
			State      string `json:"state"`
			NextAction string `json:"nextAction"`
			Reason     string `json:"reason"`
			PendingCSR string `json:"pendingCSR"`
			LastError  string `json:"lastError"`
			LastResult string `json:"lastResult"`
			Failures   int    `json:"failures"`
		} `json:"renewal"`
	} `json:"certificates"`
	Daemon struct {
		LastCSR *struct {
			Method   string  `json:"method"`
			Seconds  float64 `json:"seconds"`
			Requests int64   `json:"requests"`
		} `json:"lastCSR"`
	} `json:"daemon"`
}

func (d *daemon) status(t testing.TB) agentStatus {
	t.Helper()
	var s agentStatus
	resp, err := unixClient(d.socket).Get("http://x/v1/status")
	if err != nil {
		return s
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&s)
	return s
}

// waitCert polls the daemon until ok holds for the named certificate.
func (d *daemon) waitCert(t testing.TB, name, what string, within time.Duration, ok func(serial, state, reason, pending string) bool) agentStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	var s agentStatus
	for time.Now().Before(deadline) {
		s = d.status(t)
		for _, c := range s.Certificates {
			if c.Name == name && ok(c.Serial, c.Renewal.State, c.Renewal.Reason+" "+c.Renewal.LastError, c.Renewal.PendingCSR) {
				return s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(s, "", " ")
	t.Fatalf("%s: timed out waiting for %s\nstatus: %s\nlog:\n%s", name, what, b, d.log())
	return s
}

func serialOfStatus(s agentStatus, name string) string {
	for _, c := range s.Certificates {
		if c.Name == name {
			return c.Serial
		}
	}
	return ""
}

func storeFiles(t testing.TB, root string) string {
	t.Helper()
	ms, _ := filepath.Glob(filepath.Join(root, "var/lib/kubelet/pki/*"))
	var out []string
	for _, m := range ms {
		fi, _ := os.Lstat(m)
		data, _ := os.ReadFile(m)
		out = append(out, fmt.Sprintf("%s %v %x", filepath.Base(m), fi.Mode(), data))
	}
	return strings.Join(out, "\n")
}

// TestCSRKubeletClient: the kubelet client certificate of a worker (no CA
// key) is renewed through a CSR auto-approved by the real controller
// manager, written in the kubelet's store format, and the kubelet's own
// store code (client-go util/certificate) loads it.
func TestCSRKubeletClient(t *testing.T) {
	c := sharedCluster(t)
	root := makeNode(t, c, nodeOpts{name: "worker1", age: 55 * time.Minute, life: time.Hour})
	d := startDaemon(t, certagentBin, root, nil)
	old := serialOfStatus(d.status(t), "kubelet-client-current")
	s := d.waitCert(t, "kubelet-client-current", "a renewal", 30*time.Second, func(serial, state, _, _ string) bool {
		return serial != old && state == "ok"
	})
	if s.Daemon.LastCSR == nil || s.Daemon.LastCSR.Method != "csr" || s.Daemon.LastCSR.Requests > 6 {
		t.Errorf("last CSR: %+v", s.Daemon.LastCSR)
	}
	store, err := certificate.NewFileStore("kubelet-client", filepath.Join(root, "var/lib/kubelet/pki"), filepath.Join(root, "var/lib/kubelet/pki"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	// The symlink target is a node path: read it through the root.
	target, _ := os.Readlink(filepath.Join(root, "var/lib/kubelet/pki/kubelet-client-current.pem"))
	if !strings.HasPrefix(target, "/var/lib/kubelet/pki/kubelet-client-20") {
		t.Errorf("symlink target %q", target)
	}
	os.Remove(filepath.Join(root, "var/lib/kubelet/pki/kubelet-client-current.pem"))
	os.Symlink(filepath.Join(root, target), filepath.Join(root, "var/lib/kubelet/pki/kubelet-client-current.pem"))
	cur, err := store.Current()
	if err != nil {
		t.Fatalf("the kubelet's store cannot load it: %v", err)
	}
	if got := strings.ToUpper(cur.Leaf.SerialNumber.Text(16)); got == old || cur.Leaf.Subject.CommonName != "system:node:worker1" {
		t.Errorf("kubelet store loads %s %s", got, cur.Leaf.Subject)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/kubelet/pki/kubelet-client-2020-01-01-00-00-00.pem")); err != nil {
		t.Error("the old store file was removed")
	}
}

// TestKubeletRotationIsObserved: with rotateCertificates on and the
// certificate inside the kubelet's window, certagent only observes; past
// 95 % of the lifetime it steps in and says why.
func TestKubeletRotationIsObserved(t *testing.T) {
	c := sharedCluster(t)
	healthy := makeNode(t, c, nodeOpts{name: "worker-rot1", age: 50 * time.Minute, life: time.Hour, rotate: true})
	d := startDaemon(t, certagentBin, healthy, nil)
	s := d.waitCert(t, "kubelet-client-current", "observation", 10*time.Second, func(_, state, reason, _ string) bool {
		return state == "ok" && strings.Contains(reason, "rotateCertificates: true")
	})
	for _, cs := range s.Certificates {
		if cs.Name == "kubelet-client-current" && cs.Renewal.NextAction != "step-in" {
			t.Errorf("next action %q, want step-in", cs.Renewal.NextAction)
		}
	}
	stuck := makeNode(t, c, nodeOpts{name: "worker-rot2", age: 58 * time.Minute, life: time.Hour, rotate: true})
	d2 := startDaemon(t, certagentBin, stuck, nil)
	old := serialOfStatus(d2.status(t), "kubelet-client-current")
	d2.waitCert(t, "kubelet-client-current", "stepping in", 30*time.Second, func(serial, _, _, _ string) bool { return serial != old })
	if !strings.Contains(d2.log(), "kubelet did not rotate its certificate") {
		t.Errorf("no journal line saying why certagent stepped in:\n%s", d2.log())
	}
}

// pendingCSR waits for a CSR of the given signer from the node's identity.
func pendingCSR(t testing.TB, c *cluster.Cluster, node, signer string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		l, err := c.Admin.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
		if err == nil {
			for i := range l.Items {
				r := &l.Items[i]
				if r.Spec.SignerName == signer && r.Spec.Username == "system:node:"+node && len(r.Status.Conditions) == 0 {
					return r
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no pending %s CSR from %s", signer, node)
	return nil
}

func decide(t testing.TB, c *cluster.Cluster, r *certificatesv1.CertificateSigningRequest, approve bool) {
	t.Helper()
	cond := certificatesv1.CertificateSigningRequestCondition{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "TestApproved", Message: "approved by the test"}
	if !approve {
		cond = certificatesv1.CertificateSigningRequestCondition{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "TestDenied", Message: "denied by the test"}
	}
	r.Status.Conditions = append(r.Status.Conditions, cond)
	if _, err := c.Admin.CertificatesV1().CertificateSigningRequests().UpdateApproval(context.Background(), r.Name, r, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestCSRKubeletServing: serving CSRs are approved by nobody by default.
// certagent shows the pending request and the approve command; approved by
// an administrator it installs the certificate with the Node's addresses;
// denied, or never approved, it fails clearly, changes no file, and does
// not flood the cluster with requests.
func TestCSRKubeletServing(t *testing.T) {
	c := sharedCluster(t)
	ctx := context.Background()
	cfg := "kubelet: {servingCSRTimeout: 3s}\n"

	t.Run("approved", func(t *testing.T) {
		node := "worker-srv1"
		c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node},
			Status: corev1.NodeStatus{}}, metav1.CreateOptions{})
		n, _ := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.42"}, {Type: corev1.NodeHostName, Address: node + ".internal"}}
		if _, err := c.Admin.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		root := makeNode(t, c, nodeOpts{name: node, age: time.Minute, servingAge: 57 * time.Minute, life: time.Hour, serving: true, config: "kubelet: {servingCSRTimeout: 60s}\n"})
		d := startDaemon(t, certagentBin, root, nil)
		r := pendingCSR(t, c, node, "kubernetes.io/kubelet-serving")
		d.waitCert(t, "kubelet-serving", "the pending CSR in status", 10*time.Second, func(_, state, reason, pending string) bool {
			return state == "renewing" && pending == r.Name && strings.Contains(reason, "kubectl certificate approve "+r.Name)
		})
		if !strings.Contains(d.log(), "CSR_NAME="+r.Name) {
			t.Errorf("journal lacks the pending CSR:\n%s", d.log())
		}
		old := serialOfStatus(d.status(t), "kubelet-serving")
		decide(t, c, r, true)
		d.waitCert(t, "kubelet-serving", "the served certificate", 30*time.Second, func(serial, state, _, _ string) bool {
			return state == "ok" && serial != old
		})
		f, _ := os.ReadFile(filepath.Join(root, "var/lib/kubelet/pki", mustReadlink(t, filepath.Join(root, "var/lib/kubelet/pki/kubelet-server-current.pem"))[len("/var/lib/kubelet/pki/"):]))
		b, err := pki.ParseBundle(f)
		if err != nil || b.Key == nil || !pki.KeyMatches(b.Certs[0], b.Key) {
			t.Fatalf("served store file: %v", err)
		}
		got := fmt.Sprint(b.Certs[0].DNSNames, b.Certs[0].IPAddresses)
		if !strings.Contains(got, "10.0.0.42") || !strings.Contains(got, node+".internal") || !strings.Contains(got, "10.0.0.99") {
			t.Errorf("serving SANs %s lack the current names or the Node's addresses", got)
		}
	})

	t.Run("denied", func(t *testing.T) {
		node := "worker-srv2"
		root := makeNode(t, c, nodeOpts{name: node, age: time.Minute, servingAge: 57 * time.Minute, life: time.Hour, serving: true, config: "kubelet: {servingCSRTimeout: 60s}\n"})
		before := storeFiles(t, root)
		d := startDaemon(t, certagentBin, root, nil)
		decide(t, c, pendingCSR(t, c, node, "kubernetes.io/kubelet-serving"), false)
		d.waitCert(t, "kubelet-serving", "the denial", 20*time.Second, func(_, state, reason, _ string) bool {
			return state == "failed" && strings.Contains(reason, "denied") && strings.Contains(reason, "TestDenied")
		})
		if storeFiles(t, root) != before {
			t.Error("files changed after a denial")
		}
	})

	t.Run("never approved", func(t *testing.T) {
		node := "worker-srv3"
		root := makeNode(t, c, nodeOpts{name: node, age: time.Minute, servingAge: 57 * time.Minute, life: time.Hour, serving: true, config: cfg})
		before := storeFiles(t, root)
		d := startDaemon(t, certagentBin, root, nil)
		d.waitCert(t, "kubelet-serving", "a timeout", 20*time.Second, func(_, state, reason, _ string) bool {
			return state == "failed" && strings.Contains(reason, "not issued after 3s") && strings.Contains(reason, "kubectl certificate approve")
		})
		// Let it retry a few times (backoff 1-2 s): still one request.
		time.Sleep(8 * time.Second)
		l, _ := c.Admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		n := 0
		for _, r := range l.Items {
			if r.Spec.Username == "system:node:"+node && r.Spec.SignerName == "kubernetes.io/kubelet-serving" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d CSRs from %s after retries, want 1 (no flood)", n, node)
		}
		if storeFiles(t, root) != before {
			t.Error("files changed after a timeout")
		}
	})
}

func mustReadlink(t testing.TB, p string) string {
	t.Helper()
	s, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCSRKubeletConfEmbedded: a worker whose kubelet.conf embeds its client
// certificate (no CA key here) gets it renewed through a CSR, in place.
func TestCSRKubeletConfEmbedded(t *testing.T) {
	c := sharedCluster(t)
	root := makeNode(t, c, nodeOpts{name: "worker-embedded", age: 55 * time.Minute, life: time.Hour, embedded: true})
	rep, _ := certagentCheck(t, root)
	old := index(rep.Certificates)["kubelet.conf"]
	if old.RenewalPath != "csr" {
		t.Fatalf("kubelet.conf renewal path %q, want csr", old.RenewalPath)
	}
	d := startDaemon(t, certagentBin, root, nil)
	d.waitCert(t, "kubelet.conf", "kubelet.conf renewed", 30*time.Second, func(serial, state, _, _ string) bool {
		return serial != "" && state == "ok" && serial != old.Serial
	})
	r := run(t, certagentBin, "check", "--root", root, "-o", "json")
	if !strings.Contains(r.stdout, `"name": "kubelet.conf"`) || strings.Contains(r.stdout, "key-mismatch") {
		t.Errorf("check after the renewal:\n%s", r.stdout)
	}
}

// forgetNode deletes, when the test ends, what the cluster keeps of a
// node: its Node object and the CSRs it made. The cluster is shared by
// every test of the process, so without this a second run of the same
// test (go test -count=N) would find the first run's objects.
func forgetNode(t testing.TB, c *cluster.Cluster, name string) {
	t.Cleanup(func() {
		ctx := context.Background()
		c.Admin.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
		l, err := c.Admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			return
		}
		for _, r := range l.Items {
			if r.Spec.Username == "system:node:"+name {
				c.Admin.CertificatesV1().CertificateSigningRequests().Delete(ctx, r.Name, metav1.DeleteOptions{})
			}
		}
	})
}
