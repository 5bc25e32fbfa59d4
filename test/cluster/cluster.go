// Package cluster starts a real control plane on loopback for certagent's
// integration tests: etcd (Debian's etcd-server), the real kube-apiserver
// and kube-controller-manager (csrsigning, csrapproving, csrcleaner) built
// by test/k8stools, on a PKI made by the real kubeadm, with the RBAC
// bindings kubeadm creates for node certificate auto-approval.
package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is a running control plane.
type Cluster struct {
	// Root is the kubeadm node root whose PKI the control plane uses.
	Root string
	// URL is the API server's loopback address.
	URL   string
	Admin kubernetes.Interface
	// AdminConfig is super-admin.conf's identity (system:masters).
	AdminConfig *rest.Config
	// BootstrapToken is "<id>.<secret>" for bootstrap kubeconfigs.
	BootstrapToken string

	dir        string
	noApproval bool
	mu         sync.Mutex // guards procs
	procs      map[string]*exec.Cmd
	ports      map[string]int
}

// FreePort asks the kernel for an unused loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Option changes how Start sets the control plane up.
type Option func(*Cluster)

// WithoutApproval leaves the csrapproving controller out: no CSR is
// approved unless a test approves it (a cluster whose approver is broken).
func WithoutApproval() Option { return func(c *Cluster) { c.noApproval = true } }

// Start brings up etcd, kube-apiserver and kube-controller-manager for the
// kubeadm root. kubeBin holds the Kubernetes binaries; work holds data and
// logs. signingDuration is the controller-manager's default certificate
// lifetime (0: a year).
func Start(ctx context.Context, kubeBin, root, work string, signingDuration time.Duration, opts ...Option) (*Cluster, error) {
	c := &Cluster{Root: root, dir: work, procs: map[string]*exec.Cmd{}, ports: map[string]int{}}
	for _, o := range opts {
		o(c)
	}
	for _, n := range []string{"etcd", "etcd-peer", "apiserver"} {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		c.ports[n] = p
	}
	c.URL = fmt.Sprintf("https://127.0.0.1:%d", c.ports["apiserver"])
	if err := c.startEtcd(); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.StartAPIServer(kubeBin); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.WaitReady(ctx, 60*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	token, err := BootstrapRBAC(ctx, c.Admin)
	if err != nil {
		c.Stop()
		return nil, err
	}
	c.BootstrapToken = token
	if err := c.startControllerManager(kubeBin, signingDuration); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) pki(name string) string { return filepath.Join(c.Root, "etc/kubernetes/pki", name) }

func (c *Cluster) spawn(name, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(c.dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	c.mu.Lock()
	c.procs[name] = cmd
	c.mu.Unlock()
	return nil
}

// Log returns a component's output, for failure messages.
func (c *Cluster) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, name+".log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (c *Cluster) startEtcd() error {
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		return fmt.Errorf("etcd not found (apt-get install etcd-server): %w", err)
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", c.ports["etcd-peer"])
	client := fmt.Sprintf("http://127.0.0.1:%d", c.ports["etcd"])
	return c.spawn("etcd", etcd, "--data-dir", filepath.Join(c.dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "default="+peer)
}

// StartAPIServer (re)starts kube-apiserver with the PKI as it is on disk
// now: after a renewal this serves the new certificate.
func (c *Cluster) StartAPIServer(kubeBin string) error {
	return c.spawn("apiserver", filepath.Join(kubeBin, "kube-apiserver"),
		append(apiServerArgs(c.pki, c.ports["apiserver"]), fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", c.ports["etcd"]))...)
}

// apiServerArgs are the flags of a test kube-apiserver on port, with the
// PKI pki names, except those for etcd.
func apiServerArgs(pki func(string) string, port int) []string {
	return []string{fmt.Sprintf("--secure-port=%d", port),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
		"--tls-cert-file=" + pki("apiserver.crt"), "--tls-private-key-file=" + pki("apiserver.key"),
		"--client-ca-file=" + pki("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + pki("sa.pub"), "--service-account-signing-key-file=" + pki("sa.key"),
		"--authorization-mode=Node,RBAC", "--service-cluster-ip-range=10.96.0.0/12",
		"--enable-bootstrap-token-auth", "--enable-admission-plugins=NodeRestriction",
		"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"), "--kubelet-client-key=" + pki("apiserver-kubelet-client.key")}
}

// StopAPIServer kills kube-apiserver at once (to test an unreachable API;
// a graceful stop waits a minute for open watches).
func (c *Cluster) StopAPIServer() {
	c.mu.Lock()
	p := c.procs["apiserver"]
	delete(c.procs, "apiserver")
	c.mu.Unlock()
	if p != nil {
		p.Process.Kill()
		p.Wait()
	}
}

// RestConfig builds a client config from one of the node's kubeconfigs,
// pointed at the loopback API server (the kubeadm certificate has no
// 127.0.0.1 SAN, so the server name is "kubernetes").
func (c *Cluster) RestConfig(kubeconfig string) (*rest.Config, error) {
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return nil, err
	}
	for _, cl := range cfg.Clusters {
		cl.Server, cl.TLSServerName = c.URL, "kubernetes"
	}
	return clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
}

// PointKubeconfig rewrites a kubeconfig file to reach this API server.
func (c *Cluster) PointKubeconfig(path string) error {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return err
	}
	for _, cl := range cfg.Clusters {
		cl.Server, cl.TLSServerName = c.URL, "kubernetes"
	}
	return clientcmd.WriteToFile(*cfg, path)
}

// WaitReady waits for /readyz as the super admin.
func (c *Cluster) WaitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		if c.Admin == nil {
			cfg, err := c.RestConfig(filepath.Join(c.Root, "etc/kubernetes/super-admin.conf"))
			if err != nil {
				return err
			}
			cfg.QPS, cfg.Burst = 100, 200
			c.AdminConfig = cfg
			if c.Admin, err = kubernetes.NewForConfig(cfg); err != nil {
				return err
			}
		}
		body, err := c.Admin.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %s: %v\n%s", d, last, c.Log("apiserver"))
}

// BootstrapRBAC creates what kubeadm init would for certificates: node
// auto-approval (own client certificates and bootstrap requests), the
// controller-manager's certificate-controller role, the kubeadm
// cluster-admins binding (admin.conf's group), and a bootstrap token,
// which it returns ("<id>.<secret>").
func BootstrapRBAC(ctx context.Context, admin kubernetes.Interface) (string, error) {
	bind := func(name, role string, subjects ...rbacv1.Subject) error {
		_, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role},
			Subjects:   subjects,
		}, metav1.CreateOptions{})
		return err
	}
	group := func(n string) rbacv1.Subject {
		return rbacv1.Subject{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: n}
	}
	user := func(n string) rbacv1.Subject {
		return rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: n}
	}
	const bootstrappers = "system:bootstrappers:kubeadm:default-node-token"
	for _, b := range []struct {
		name, role string
		subj       rbacv1.Subject
	}{
		{"kubeadm:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", group("system:nodes")},
		{"kubeadm:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", group(bootstrappers)},
		{"kubeadm:kubelet-bootstrap", "system:node-bootstrapper", group(bootstrappers)},
		{"certagent-test:certificate-controller", "system:controller:certificate-controller", user("system:kube-controller-manager")},
		{"kubeadm:cluster-admins", "cluster-admin", group("kubeadm:cluster-admins")},
	} {
		if err := bind(b.name, b.role, b.subj); err != nil {
			return "", fmt.Errorf("RBAC %s: %w", b.name, err)
		}
	}
	_, err := admin.CoreV1().Secrets("kube-system").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-abcdef", Namespace: "kube-system"},
		Type:       "bootstrap.kubernetes.io/token",
		StringData: map[string]string{
			"token-id": "abcdef", "token-secret": "0123456789abcdef",
			"usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
			"auth-extra-groups": bootstrappers,
		},
	}, metav1.CreateOptions{})
	return "abcdef.0123456789abcdef", err
}

func (c *Cluster) startControllerManager(kubeBin string, signing time.Duration) error {
	kc := filepath.Join(c.dir, "controller-manager.conf")
	data, err := os.ReadFile(filepath.Join(c.Root, "etc/kubernetes/controller-manager.conf"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(kc, data, 0o600); err != nil {
		return err
	}
	if err := c.PointKubeconfig(kc); err != nil {
		return err
	}
	args := append(controllerManagerArgs(kc, c.pki, !c.noApproval), "--secure-port=0")
	if signing > 0 {
		args = append(args, "--cluster-signing-duration="+signing.String())
	}
	return c.spawn("controller-manager", filepath.Join(kubeBin, "kube-controller-manager"), args...)
}

// controllerManagerArgs are the flags of a test kube-controller-manager
// with the kubeconfig, signing with the cluster CA of the PKI pki names:
// the certificate controllers only (approval when approve), no leader
// election, no secure port flags.
func controllerManagerArgs(kubeconfig string, pki func(string) string, approve bool) []string {
	controllers := "csrsigning,csrapproving,csrcleaner"
	if !approve {
		controllers = "csrsigning,csrcleaner"
	}
	return []string{"--kubeconfig=" + kubeconfig, "--controllers=" + controllers,
		"--cluster-signing-cert-file=" + pki("ca.crt"), "--cluster-signing-key-file=" + pki("ca.key"),
		"--leader-elect=false", "--use-service-account-credentials=false"}
}

// Stop kills every component and removes nothing (logs stay in work).
func (c *Cluster) Stop() {
	c.mu.Lock()
	procs := c.procs
	c.procs = map[string]*exec.Cmd{}
	c.mu.Unlock()
	for _, n := range []string{"controller-manager", "apiserver", "etcd"} {
		if p := procs[n]; p != nil {
			if n == "etcd" {
				p.Process.Signal(syscall.SIGTERM)
			} else {
				p.Process.Kill() // test components: no graceful minute
			}
			done := make(chan struct{})
			go func() { p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				p.Process.Kill()
				<-done
			}
		}
	}
}

// PID returns a component's process id (0 when it is not running).
func (c *Cluster) PID(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[name]; p != nil && p.Process != nil {
		return p.Process.Pid
	}
	return 0
}
