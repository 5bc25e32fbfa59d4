package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
// leaves them, each with certagent:
//   - the control-plane node lives on the host: a kubeadm root (the real
//     kubeadm's PKI, kubeconfigs and static pod manifests) whose etcd,
//     kube-apiserver and kube-controller-manager run as processes started
//     by a stand-in kubelet from the files in the root (a component is
//     killed when its manifest leaves the manifests directory and started
//     again when it comes back); the same stand-in registers the Node and
//     renews its Lease with the root's kubelet.conf. certagent runs for
//     the root (`certagent run --root`), restarts on, with the restart
//     Lease.
//   - the worker is a systemd-nspawn node with the real kubelet and
//     containerd, whose kubelet.conf and clientCAFile hold the cluster CA,
//     its client certificate issued by that CA, and certagent installed
//     from the .deb as a systemd service.
type caRig struct {
	ctx     context.Context
	h       *cluster.HA
	c       *cluster.Cluster // the control-plane node as a Cluster (Admin: super-admin.conf as at the start)
	cp      string           // the control-plane node's root
	tl      *restartLog      // the stand-in's restarts of the static pods
	daemon  *daemon          // certagent on the control-plane node
	worker  *realNode
	cpBeats *beats // the control-plane stand-in kubelet's Lease renewals
}

// caCPConfig is certagent's config on the control-plane node: the
// stand-in's ports, quick restarts (the stand-in checks manifests every
// 100 ms), the restart Lease with short times, quick retries.
const caCPConfig = `apiVersion: certagent.io/v1alpha1
kind: AgentConfiguration
agent: {nodeName: %[1]s, metricsAddress: "", retryInitial: 2s, retryMax: 10s}
restart: {fileCheckFrequency: 1s, timeout: 90s, endpoints: {etcd: "%[2]s", etcd-peer: "%[3]s", kube-apiserver: "%[4]s", kube-controller-manager: "%[5]s"}}
coordination: {leaseDuration: 12s, retryInterval: 500ms, apiDownWindow: 20s, apiServers: ["%[4]s"]}
`

// caWorkerConfig is certagent's config on the worker (the rig adds the
// kubelet's ports): quick retries, no metrics port on the host's network.
const caWorkerConfig = `agent: {metricsAddress: "", retryInitial: 2s, retryMax: 10s}
`

// startCARig brings the rig up; everything stops with the test.
func startCARig(t *testing.T, ctx context.Context) *caRig {
	t.Helper()
	requireRealNode(t)
	for _, b := range []string{"kubeadm", "kube-apiserver", "kube-controller-manager"} {
		requireKube(t, b)
	}
	root := t.TempDir()
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
	rig := &caRig{ctx: ctx, h: h, c: c, cp: root, tl: &restartLog{}, cpBeats: &beats{}}
	runHAStaticPods(t, ctx, h, rig.tl, caStaticPods...)
	rig.standInKubelet(t)

	cfg := fmt.Sprintf(caCPConfig, caCPName, n.EtcdAddr(), n.PeerAddr(), n.APIAddr(), n.CMAddr())
	put := rootWriter(t, root)
	put("etc/certagent/config.yaml", []byte(cfg), 0o644)
	rig.daemon = startDaemon(t, certagentBin, root, nil, "--no-restart=false")

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

// kubeadmManifests writes kubeadm's static pod manifests into the root
// (the stand-in runs the components with the test's loopback ports, the
// manifests say what runs here), kube-scheduler's left out.
func kubeadmManifests(t *testing.T, root string) {
	t.Helper()
	for _, phase := range [][]string{{"init", "phase", "control-plane", "all"}, {"init", "phase", "etcd", "local"}} {
		args := append(phase, "--config", "/etc/kubernetes/kubeadm.yaml", "--rootfs", root)
		if out, err := exec.Command(filepath.Join(kubeBin, "kubeadm"), args...).CombinedOutput(); err != nil {
			t.Fatalf("kubeadm %v: %v\n%s", phase, err, out)
		}
	}
	if err := os.Remove(filepath.Join(root, "etc/kubernetes/manifests/kube-scheduler.yaml")); err != nil {
		t.Fatal(err)
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

// standInKubelet is the control-plane node's kubelet as the API sees it:
// the Node as `kubeadm init` leaves it (the control-plane label, set
// with the admin credential as kubeadm does), and the node's Lease
// renewed every caLeaseRenew with kubelet.conf read again at each
// renewal (as a restarted kubelet would read it). Renewals are recorded.
func (rig *caRig) standInKubelet(t *testing.T) {
	t.Helper()
	_, err := rig.c.Admin.CoreV1().Nodes().Create(rig.ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: caCPName, Labels: map[string]string{"node-role.kubernetes.io/control-plane": "", "kubernetes.io/hostname": caCPName}}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(rig.cp, "etc/kubernetes/kubelet.conf")
	renew := func() error {
		cs, done, err := freshClient(kubeconfig)
		if err != nil {
			return err
		}
		defer done()
		leases := cs.CoordinationV1().Leases("kube-node-lease")
		ctx, cancel := context.WithTimeout(rig.ctx, 5*time.Second)
		defer cancel()
		now := metav1.NewMicroTime(time.Now())
		l, err := leases.Get(ctx, caCPName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			secs := int32(40)
			_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: caCPName, Namespace: "kube-node-lease"},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptrTo(caCPName), LeaseDurationSeconds: &secs, RenewTime: &now}}, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		l.Spec.RenewTime = &now
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	}
	if err := renew(); err != nil {
		t.Fatalf("the control-plane node's first Lease: %v", err)
	}
	go func() {
		// The kubelet's way: every renew interval, a failure retried
		// after 200 ms doubled up to 7 s.
		backoff := 200 * time.Millisecond
		for rig.ctx.Err() == nil {
			err := renew()
			rig.cpBeats.add(time.Now(), err)
			if err == nil {
				backoff = 200 * time.Millisecond
				time.Sleep(caLeaseRenew)
				continue
			}
			time.Sleep(backoff)
			backoff = min(2*backoff, 7*time.Second)
		}
	}()
}

func ptrTo[T any](v T) *T { return &v }
