package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certagent/certagent/test/cluster"
	"github.com/certagent/certagent/test/nspawn"
)

// The CA rotation rig's nodes.
const (
	caCPName     = "node1"
	caWorkerName = "e2e-ca-worker"
	// caLeaseRenew is the kubelet's Lease renewal interval (a quarter of
	// the default nodeLeaseDurationSeconds, 40).
	caLeaseRenew = 10 * time.Second
)

// caStaticPods are the static pods the control-plane node runs (kubeadm's
// kube-scheduler is left out: no scheduler binary is built, and its
// manifest is removed so that nothing expects it).
var caStaticPods = []string{"etcd", "kube-apiserver", "kube-controller-manager"}

// caRig is a cluster of one control-plane node and one worker, as kubeadm
// leaves them, each with certagent and the real kubelet:
//   - the control-plane node: a systemd-nspawn node whose rootfs holds a
//     kubeadm root (the real kubeadm's PKI, kubeconfigs and static pod
//     manifests), running the real kubelet (kubeadm's kubelet.conf, its
//     client certificate embedded; clientCAFile the cluster CA). Its
//     etcd, kube-apiserver and kube-controller-manager run on the host
//     as processes, started by a stand-in for the kubelet's static pods
//     from the files in that root: a component is killed when its
//     manifest leaves the manifests directory and started again (reading
//     its files then) when it comes back; the real kubelet watches an
//     empty static pod directory (no container image can be pulled here).
//     certagent runs on the host for that root (`certagent run --root`),
//     restarts on, with the restart Lease, and restarts the kubelet
//     through the node's own systemd (its D-Bus system bus).
//   - the worker: a systemd-nspawn node with the real kubelet, whose
//     kubelet.conf (a certificate-authority file) and clientCAFile hold
//     the cluster CA, its client certificate issued by that CA in the
//     kubelet's store, and certagent installed from the .deb as a
//     systemd service.
//
// Both nodes share the host's network and reach the kube-apiserver on
// loopback.
type caRig struct {
	ctx    context.Context
	h      *cluster.HA
	c      *cluster.Cluster // the control-plane node as a Cluster (Admin: super-admin.conf as at the start)
	cp     string           // the control-plane node's root (its rootfs)
	tl     *restartLog      // the stand-in's restarts of the static pods
	daemon *daemon          // certagent on the control-plane node
	dbus   []string         // its environment: the node's system bus
	cpNode *realNode
	worker *realNode
}

// caCPConfig is certagent's config on the control-plane node: the
// components' ports, quick restarts (the stand-in checks manifests every
// 100 ms), the restart Lease with short times, quick retries.
const caCPConfig = `apiVersion: certagent.io/v1alpha1
kind: AgentConfiguration
agent: {nodeName: %[1]s, metricsAddress: "", retryInitial: 2s, retryMax: 10s, resyncInterval: 5s}
restart:
  fileCheckFrequency: 1s
  timeout: 45s
  kubeletHealthz: http://127.0.0.1:%[7]d/healthz
  endpoints: {etcd: "%[2]s", etcd-peer: "%[3]s", kube-apiserver: "%[4]s", kube-controller-manager: "%[5]s", kubelet: "127.0.0.1:%[6]d"}
coordination: {leaseDuration: 12s, retryInterval: 500ms, apiDownWindow: 20s, apiServers: ["%[4]s"]}
`

// caWorkerConfig is certagent's config on the worker (the rig adds the
// kubelet's ports): quick retries, no metrics port on the host's network.
// On both nodes a resync every 5 s: without a rotation in progress, a
// node reads the rotation's ConfigMap once per resync.
const caWorkerConfig = `agent: {metricsAddress: "", retryInitial: 2s, retryMax: 10s, resyncInterval: 5s}
`

// startCARig brings the rig up; everything stops with the test.
func startCARig(t *testing.T, ctx context.Context) *caRig {
	t.Helper()
	requireRealNode(t)
	for _, b := range []string{"kubeadm", "kube-apiserver", "kube-controller-manager"} {
		requireKube(t, b)
	}
	root := unpackedRootfs(t)
	if err := makeKubeadmNode(root, "8760h", "RSA-2048", caCPName, "10.0.0.11"); err != nil {
		t.Fatal(err)
	}
	kubeadmManifests(t, root)
	h, err := cluster.StartHA(ctx, kubeBin, t.TempDir(), []string{caCPName}, []string{root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	n := h.Nodes[0]
	for _, f := range []string{"admin", "super-admin", "controller-manager", "scheduler", "kubelet"} {
		pointAt(t, filepath.Join(root, "etc/kubernetes", f+".conf"), n.APIAddr())
	}
	c, err := h.Single(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.BootstrapToken, err = cluster.BootstrapRBAC(ctx, c.Admin); err != nil {
		t.Fatal(err)
	}
	applyRBAC(t, c.Admin)
	if err := h.StartControllerManager(0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "kube-controller-manager healthy", time.Minute, func() bool { return h.ControllerManagerHealthy(ctx, 0) })
	rig := &caRig{ctx: ctx, h: h, c: c, cp: root, tl: &restartLog{}}
	runHAStaticPods(t, ctx, h, rig.tl, caStaticPods...)

	cpk := nspawn.Kubelet{NodeName: caCPName, Port: 10290, HealthzPort: 10288, StaticPodPath: "/etc/kubernetes/kubelet-static-pods"}
	rig.cpNode = bootRealNodeIn(t, c, cpk, root, func(r *realNode) {})
	rig.markControlPlane(t)
	port, healthz := cpk.Ports()
	cfg := fmt.Sprintf(caCPConfig, caCPName, n.EtcdAddr(), n.PeerAddr(), n.APIAddr(), n.CMAddr(), port, healthz)
	rootWriter(t, root)("etc/certagent/config.yaml", []byte(cfg), 0o644)
	// The node's /run is its own tmpfs: its bus is reached through the
	// root of its init.
	rig.dbus = []string{fmt.Sprintf("DBUS_SYSTEM_BUS_ADDRESS=unix:path=/proc/%d/root/run/dbus/system_bus_socket", rig.cpNode.Leader)}
	rig.daemon = startDaemon(t, certagentBin, root, rig.dbus, "--no-restart=false")

	rig.worker = bootRealNodeOn(t, c, nspawn.Kubelet{NodeName: caWorkerName, Port: 10280, HealthzPort: 10278}, func(r *realNode) {
		now := time.Now()
		cert, key, _ := r.clientCert(now.Add(-time.Minute), now.Add(2*time.Hour))
		r.storeClient(cert, key, now.UTC().Format("2006-01-02-15-04-05"))
		r.put("etc/kubernetes/kubelet.conf", []byte(nspawn.StoreKubeconfig(c.URL, "kubernetes")), 0o600)
		r.config(caWorkerConfig)
	})
	rig.worker.leaseAfter(time.Time{}, 90*time.Second, "the worker kubelet's first Lease")
	rig.worker.install()
	return rig
}

// restartDaemon starts certagent on the control-plane node again.
func (rig *caRig) restartDaemon(t *testing.T) {
	rig.daemon = startDaemon(t, certagentBin, rig.cp, rig.dbus, "--no-restart=false")
}

// markControlPlane waits for the kubelet to register the control-plane
// node and labels it, as kubeadm's mark-control-plane phase does with the
// admin credential (a kubelet may not set node-role labels itself).
func (rig *caRig) markControlPlane(t *testing.T) {
	t.Helper()
	nodes := rig.c.Admin.CoreV1().Nodes()
	waitFor(t, "the control-plane node registered", 90*time.Second, func() bool {
		_, err := nodes.Get(rig.ctx, caCPName, metav1.GetOptions{})
		return err == nil
	})
	patch := []byte(`{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}`)
	if _, err := nodes.Patch(rig.ctx, caCPName, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// kubeadmManifests writes kubeadm's static pod manifests into the root
// (the stand-in runs the components with the test's loopback ports, the
// manifests say what runs here), kube-scheduler's left out.
func kubeadmManifests(t *testing.T, root string) {
	t.Helper()
	kubeadmStaticPods(t, root)
	if err := os.Remove(filepath.Join(root, "etc/kubernetes/manifests/kube-scheduler.yaml")); err != nil {
		t.Fatal(err)
	}
}

// kubeadmStaticPods writes every static pod manifest of kubeadm init
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) into
// the root.
func kubeadmStaticPods(t *testing.T, root string) {
	t.Helper()
	for _, phase := range [][]string{{"init", "phase", "control-plane", "all"}, {"init", "phase", "etcd", "local"}} {
		args := append(phase, "--config", "/etc/kubernetes/kubeadm.yaml", "--rootfs", root)
		if out, err := exec.Command(filepath.Join(kubeBin, "kubeadm"), args...).CombinedOutput(); err != nil {
			t.Fatalf("kubeadm %v: %v\n%s", phase, err, out)
		}
	}
}

// waitFor polls ok every 100 ms until it holds, or fails the test.
func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
