package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"time"
)

// CMAddr is the kube-controller-manager's secure host:port.
func (n *HANode) CMAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.CM) }

// StartControllerManager (re)starts node i's kube-controller-manager as
// kubeadm runs it: its own kubeconfig (the root's controller-manager.conf,
// which must already point at a kube-apiserver) and the root's cluster CA
// as the CSR signer, both read as they are on disk now; the certificate
// controllers only, and /healthz on its secure port (CMAddr) with a
// self-signed serving certificate. One node: no leader election.
func (h *HA) StartControllerManager(i int) error {
	n := h.Nodes[i]
	args := append(controllerManagerArgs(filepath.Join(n.Root, "etc/kubernetes/controller-manager.conf"), n.pki, true),
		// As the kubelet would run the manifest: the signer file it names.
		"--cluster-signing-cert-file="+n.pki(signerFile(n.Root)),
		fmt.Sprintf("--secure-port=%d", n.CM), "--bind-address=127.0.0.1",
		"--cert-dir="+filepath.Join(h.c.dir, "controller-manager-"+n.Name))
	return h.c.spawn("controller-manager-"+n.Name, filepath.Join(h.kubeBin, "kube-controller-manager"), args...)
}

// signingFlag finds the controller manager's signer flag in a manifest.
var signingFlag = regexp.MustCompile(`--cluster-signing-cert-file=(\S+)`)

// signerFile is the file, below the PKI directory, that the root's
// kube-controller-manager manifest names as its cluster signer
// (kubeadm's ca.crt when there is no manifest or no such flag).
func signerFile(root string) string {
	data, err := os.ReadFile(filepath.Join(root, "etc/kubernetes/manifests/kube-controller-manager.yaml"))
	if err != nil {
		return "ca.crt"
	}
	m := signingFlag.FindSubmatch(data)
	if m == nil {
		return "ca.crt"
	}
	return filepath.Base(string(m[1]))
}

// ControllerManagerHealthy asks node i's kube-controller-manager /healthz.
func (h *HA) ControllerManagerHealthy(ctx context.Context, i int) bool {
	_, ok := get(ctx, "https://"+h.Nodes[i].CMAddr()+"/healthz", &tls.Config{InsecureSkipVerify: true})
	return ok
}

// StaticPod is how a stand-in kubelet runs the static pod comp (etcd,
// kube-apiserver, kube-controller-manager) of node i: the process name
// (for Kill and PID), how to start it with its files as on disk, and
// whether it is healthy. ok is false for another component.
func (h *HA) StaticPod(comp string, i int) (proc string, start func() error, healthy func(context.Context) bool, ok bool) {
	name := h.Nodes[i].Name
	switch comp {
	case "etcd":
		return "etcd-" + name, func() error { return h.StartEtcd(i) }, func(ctx context.Context) bool { return h.EtcdHealthy(ctx, i) }, true
	case "kube-apiserver":
		return "apiserver-" + name, func() error { return h.StartAPIServer(i) }, func(ctx context.Context) bool { return h.APIReady(ctx, i) }, true
	case "kube-controller-manager":
		return "controller-manager-" + name, func() error { return h.StartControllerManager(i) },
			func(ctx context.Context) bool { return h.ControllerManagerHealthy(ctx, i) }, true
	}
	return "", nil, nil, false
}

// Single is node i seen as a Cluster (Root, URL of its kube-apiserver,
// Admin from its super-admin.conf as it is now, BootstrapToken), for the
// helpers that take one. Its processes stay the HA's: its Stop stops
// nothing.
func (h *HA) Single(ctx context.Context, i int, token string) (*Cluster, error) {
	n := h.Nodes[i]
	c := &Cluster{Root: n.Root, URL: "https://" + n.APIAddr(), BootstrapToken: token, dir: h.c.dir,
		procs: map[string]*exec.Cmd{}, ports: map[string]int{}}
	if err := c.WaitReady(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// Exited says whether the process name (still registered: not killed
// through Kill) has ended by itself: it is gone or a zombie not yet
// reaped.
func (h *HA) Exited(name string) bool {
	pid := h.PID(name)
	if pid == 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}
