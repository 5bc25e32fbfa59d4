package integration

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/rotate/pki/pkitest"
	"github.com/certagent/certagent/test/cluster"
	"github.com/certagent/certagent/test/nspawn"
)

// realNode is a booted node running the real kubelet and containerd
// (test/nspawn.Kubelet) against the package's shared control plane, with
// the .deb copied in (installed by install).
type realNode struct {
	*nspawn.Node
	t    *testing.T
	c    *cluster.Cluster
	name string
	dir  string // the rootfs on the host
	k    nspawn.Kubelet
	ca   *pkitest.CA
	put  func(p string, data []byte, mode os.FileMode)
}

// containerdBin returns the directory holding containerd (make test builds
// it with `test/k8stools/build.sh containerd`), or skips like requireKube.
func containerdBin(t *testing.T) string {
	t.Helper()
	d := os.Getenv("CERTAGENT_CONTAINERD_BIN")
	if d != "" {
		if _, err := os.Stat(filepath.Join(d, "containerd")); err == nil {
			return d
		}
	}
	msg := "containerd not found: set CERTAGENT_CONTAINERD_BIN (make test builds it with test/k8stools/build.sh containerd)"
	if os.Getenv("CERTAGENT_REQUIRE_INTEGRATION") != "" || os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("SKIPPED: " + msg)
	return ""
}

// bootRealNode unpacks a node, gives it the cluster CA certificate,
// lets setup write the node's credentials and certagent's config, and
// boots it with the real kubelet.
func bootRealNode(t *testing.T, k nspawn.Kubelet, setup func(r *realNode)) *realNode {
	t.Helper()
	requireRealNode(t)
	return bootRealNodeOn(t, sharedCluster(t), k, setup)
}

// requireRealNode skips (or fails, under make test) without what a real
// kubelet node needs.
func requireRealNode(t *testing.T) {
	t.Helper()
	requireNspawn(t)
	e2eDeb(t)
	requireKube(t, "kubelet")
	containerdBin(t)
}

// bootRealNodeOn is bootRealNode against the control plane c.
func bootRealNodeOn(t *testing.T, c *cluster.Cluster, k nspawn.Kubelet, setup func(r *realNode)) *realNode {
	t.Helper()
	return bootRealNodeIn(t, c, k, unpackedRootfs(t), setup)
}

// bootRealNodeIn is bootRealNodeOn on a rootfs already unpacked in dir.
func bootRealNodeIn(t *testing.T, c *cluster.Cluster, k nspawn.Kubelet, dir string, setup func(r *realNode)) *realNode {
	t.Helper()
	deb := e2eDeb(t)
	k.KubeBin, k.ContainerdBin = filepath.Dir(requireKube(t, "kubelet")), containerdBin(t)
	r := &realNode{t: t, c: c, name: k.NodeName, dir: dir, k: k, put: rootWriter(t, dir), ca: clusterCA(t, c)}
	r.put("etc/kubernetes/pki/ca.crt", pkitest.CertPEM(r.ca.Cert), 0o644)
	setup(r)
	debData, _ := os.ReadFile(deb)
	r.put("root/certagent.deb", debData, 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := k.Boot(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	r.Node = n
	t.Cleanup(func() {
		if t.Failed() {
			jl, _ := n.Exec("journalctl", "--no-pager", "-n", "60", "-u", "kubelet", "-u", "certagent")
			st, _ := n.Exec("certagent", "status")
			t.Logf("node %s at the failure:\n%s\n%s", r.name, jl, st)
		}
		n.Stop()
	})
	return r
}

// clientCert issues the node's client certificate (what the kubelet's
// bootstrap gets) valid from nb to na: certificate and key PEM.
func (r *realNode) clientCert(nb, na time.Time) (certPEM, keyPEM []byte, serial string) {
	r.t.Helper()
	c, k, err := r.ca.Issue(pkitest.Spec{CommonName: "system:node:" + r.name, Organization: []string{"system:nodes"},
		NotBefore: nb, NotAfter: na, KeyType: pkitest.ECDSA})
	if err != nil {
		r.t.Fatal(err)
	}
	return pkitest.CertPEM(c), pkitest.KeyPEM(k), strings.ToUpper(c.SerialNumber.Text(16))
}

// servingCert issues a kubelet serving certificate for the node (what an
// approved kubelet-serving CSR gives) valid from nb to na.
func (r *realNode) servingCert(nb, na time.Time) (certPEM, keyPEM []byte, serial string) {
	r.t.Helper()
	c, k, err := r.ca.Issue(pkitest.Spec{CommonName: "system:node:" + r.name, Organization: []string{"system:nodes"},
		DNSNames: []string{r.name}, IPs: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: nb, NotAfter: na, KeyType: pkitest.ECDSA})
	if err != nil {
		r.t.Fatal(err)
	}
	return pkitest.CertPEM(c), pkitest.KeyPEM(k), strings.ToUpper(c.SerialNumber.Text(16))
}

// storeClient puts a client certificate into the kubelet's store.
func (r *realNode) storeClient(certPEM, keyPEM []byte, stamp string) {
	r.store("client", certPEM, keyPEM, stamp)
}

// store puts a pair into the kubelet's store the way the kubelet does
// (kind client or server): a timestamped cert+key file, and the
// kubelet-<kind>-current.pem symlink swapped to it atomically.
func (r *realNode) store(kind string, certPEM, keyPEM []byte, stamp string) {
	r.t.Helper()
	name := "kubelet-" + kind + "-" + stamp + ".pem"
	r.put("var/lib/kubelet/pki/"+name, append(append([]byte{}, certPEM...), keyPEM...), 0o600)
	dir := filepath.Join(r.dir, "var/lib/kubelet/pki")
	tmp := filepath.Join(dir, ".kubelet-"+kind+"-test.tmp")
	os.Remove(tmp)
	if err := os.Symlink("/var/lib/kubelet/pki/"+name, tmp); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "kubelet-"+kind+"-current.pem")); err != nil {
		r.t.Fatal(err)
	}
}

// config writes certagent's configuration (kept by dpkg --force-confold):
// body, and restart: with the kubelet's ports (body must not have one).
func (r *realNode) config(body string) {
	port, healthz := r.k.Ports()
	restart := fmt.Sprintf("restart:\n  timeout: 60s\n  kubeletHealthz: http://127.0.0.1:%d/healthz\n  endpoints: {kubelet: 127.0.0.1:%d}\n", healthz, port)
	r.put("etc/certagent/config.yaml", []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n"+body+restart), 0o640)
}

// install installs the .deb and waits for certagent to be READY.
func (r *realNode) install() {
	r.t.Helper()
	in(r.t, r.Node, "dpkg", "-i", "--force-confold", "/root/certagent.deb")
	waitIn(r.t, "certagent active", 30*time.Second, func() bool { return prop(r.Node, "certagent.service", "ActiveState") == "active" }, r.Node)
}

// lease is the node's Lease renewTime (zero before the first one).
func (r *realNode) lease() time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := r.c.Admin.CoordinationV1().Leases("kube-node-lease").Get(ctx, r.name, metav1.GetOptions{})
	if err != nil || l.Spec.RenewTime == nil {
		return time.Time{}
	}
	return l.Spec.RenewTime.Time
}

// leaseAfter waits for a Lease renewal later than after and returns its time.
func (r *realNode) leaseAfter(after time.Time, within time.Duration, what string) time.Time {
	r.t.Helper()
	var got time.Time
	waitIn(r.t, what, within, func() bool { got = r.lease(); return got.After(after) }, r.Node)
	return got
}

// status is certagent's status document in the node.
func (r *realNode) status() (agentStatus, string) {
	out, _ := r.Exec("certagent", "status", "-o", "json")
	var s agentStatus
	json.Unmarshal(out, &s)
	return s, string(out)
}

// clientState is the kubelet client certificate's line in status.
func (r *realNode) clientState() (serial, state, reason, result string) {
	s, _ := r.status()
	for _, c := range s.Certificates {
		if c.Name == "kubelet-client-current" {
			return c.Serial, c.Renewal.State, c.Renewal.Reason, c.Renewal.LastResult
		}
	}
	return "", "", "", ""
}

// journalAt returns the time of the first journal entry of certagent with
// the MESSAGE_ID (and CERT_NAME, when given) logged after since.
func (r *realNode) journalAt(id, cert string, since time.Time) (time.Time, map[string]any) {
	out, _ := r.Exec("journalctl", "-u", "certagent", "-o", "json", "--no-pager", "MESSAGE_ID="+id)
	for _, line := range strings.Split(string(out), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) != nil || (cert != "" && e["CERT_NAME"] != cert) {
			continue
		}
		us, _ := strconv.ParseInt(fmt.Sprint(e["__REALTIME_TIMESTAMP"]), 10, 64)
		if at := time.UnixMicro(us); at.After(since) {
			return at, e
		}
	}
	return time.Time{}, nil
}

// unitStarted is when the unit's current main process started.
func (r *realNode) unitStarted(unit string) time.Time {
	out, _ := r.Exec("systemctl", "show", "-p", "ExecMainStartTimestamp", "--value", "--timestamp=us+utc", unit)
	at, _ := time.Parse("Mon 2006-01-02 15:04:05.000000 MST", strings.TrimSpace(string(out)))
	return at
}

// rss is a unit's main process's resident memory, from /proc in the node.
func (r *realNode) rss(unit string) string {
	out, _ := r.Exec("sh", "-c", "grep VmRSS /proc/"+prop(r.Node, unit, "MainPID")+"/status")
	return strings.TrimSpace(strings.TrimPrefix(string(out), "VmRSS:"))
}
