package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/test/cluster"
)

// TestControlPlaneLoadsRenewedCertificates: the real etcd and
// kube-apiserver read their renewed serving (and etcd's peer, the API
// server's kubelet and front proxy client) certificates by themselves.
// `certagent renew --restart` sees the new serials served and restarts
// neither; a renewed etcd client certificate of kube-apiserver, which a
// running server does not read again, still restarts it.
func TestControlPlaneLoadsRenewedCertificates(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, h, tl := startOneControlPlane(t, ctx, "apiVersion: v1\nkind: Pod\n")
	n := h.Nodes[0]
	cfg := filepath.Join(root, "etc/certagent/config.yaml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, []byte(fmt.Sprintf("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n"+
		"restart: {fileCheckFrequency: 1s, timeout: 90s, reloadWait: 60s, endpoints: {etcd: %q, etcd-peer: %q, kube-apiserver: %q}}\n"+
		"coordination: {apiServers: [%q]}\n", n.EtcdAddr(), n.PeerAddr(), n.APIAddr(), n.APIAddr())), 0o644)
	served := func(addr string) string {
		t.Helper()
		// etcd asks for a client certificate; the serial is read before.
		return servedSerialAt(addr)
	}
	disk := func(name string) string {
		return strings.ToUpper(readCert(t, filepath.Join(root, "etc/kubernetes/pki", name)).SerialNumber.Text(16))
	}
	renew := func(names ...string) string {
		t.Helper()
		r := run(t, certagentBin, append([]string{"renew", "--root", root, "--config", cfg, "--restart"}, names...)...)
		if r.code != 0 {
			t.Fatalf("renew --restart %v: exit %d\n%s%s", names, r.code, r.stdout, r.stderr)
		}
		return r.stdout
	}

	start := time.Now()
	out := renew("etcd-server", "etcd-peer", "apiserver", "apiserver-kubelet-client", "front-proxy-client")
	took := time.Since(start)
	for _, w := range []string{"reloaded  etcd ", "reloaded  kube-apiserver "} {
		if !strings.Contains(out, w) {
			t.Errorf("lacks %q:\n%s", w, out)
		}
	}
	if got, want := served(n.EtcdAddr()), disk("etcd/server.crt"); got != want {
		t.Errorf("etcd serves %s, disk %s", got, want)
	}
	if got, want := served(n.PeerAddr()), disk("etcd/peer.crt"); got != want {
		t.Errorf("etcd's peer port serves %s, disk %s", got, want)
	}
	if got, want := served(n.APIAddr()), disk("apiserver.crt"); got != want {
		t.Errorf("kube-apiserver serves %s, disk %s", got, want)
	}
	if !h.APIReady(ctx, 0) {
		t.Error("kube-apiserver not ready after the renewals")
	}
	tl.mu.Lock()
	restarts, crashes := len(tl.restarts), len(tl.crashes)
	tl.mu.Unlock()
	if restarts+crashes > 0 {
		t.Errorf("restarted: %s", tl.summary())
	}
	t.Logf("figures: five certificates renewed and confirmed served without a restart in %s:\n%s", took.Round(time.Millisecond), out)

	start = time.Now()
	out = renew("apiserver-etcd-client")
	if !strings.Contains(out, "restarted kube-apiserver ") {
		t.Errorf("a renewed etcd client certificate did not restart kube-apiserver:\n%s", out)
	}
	t.Logf("figures: apiserver-etcd-client renewed, kube-apiserver restarted and confirmed in %s", time.Since(start).Round(time.Millisecond))
	// The stand-in kubelet records the restart once the server is ready.
	waitFor(t, "the stand-in kubelet to see kube-apiserver restarted and ready", time.Minute, func() bool {
		return len(tl.since(start, "kube-apiserver")) > 0
	})
}

// startOneControlPlane starts one kubeadm control-plane node's real etcd
// and kube-apiserver (its root, with kube-apiserver's manifest as given,
// what certagent reads of it), under a stand-in kubelet whose restarts
// the log records.
func startOneControlPlane(t *testing.T, ctx context.Context, apiserverManifest string) (string, *cluster.HA, *restartLog) {
	t.Helper()
	requireKube(t, "kubeadm")
	requireKube(t, "kube-apiserver")
	root := t.TempDir()
	if err := makeKubeadmNode(root, "8760h", "ECDSA-P256", "node1", "10.0.0.11"); err != nil {
		t.Fatal(err)
	}
	manifests := filepath.Join(root, "etc/kubernetes/manifests")
	os.MkdirAll(manifests, 0o755)
	os.WriteFile(filepath.Join(manifests, "etcd.yaml"), []byte("apiVersion: v1\nkind: Pod\n"), 0o600)
	os.WriteFile(filepath.Join(manifests, "kube-apiserver.yaml"), []byte(apiserverManifest), 0o600)
	h, err := cluster.StartHA(ctx, kubeBin, t.TempDir(), []string{"node1"}, []string{root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	tl := &restartLog{}
	runHAStaticPods(t, ctx, h, tl)
	return root, h, tl
}
