package nspawn

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// Kubelet is a node running the real kubelet and containerd as systemd
// units, on the host's network so that it reaches a control plane on the
// host's loopback (test/cluster). The binaries are bind-mounted read-only
// from their caches (test/k8stools/build.sh), never copied.
//
// The kubelet reads /etc/kubernetes/kubelet.conf (the test writes it, see
// StoreKubeconfig) and keeps its certificates in /var/lib/kubelet/pki.
// The kubelet binds Port (10250) and 127.0.0.1:HealthzPort (10248) on the
// host: nodes that run at once need ports of their own.
type Kubelet struct {
	KubeBin       string // host directory holding kubelet
	ContainerdBin string // host directory holding containerd and containerd-shim-runc-v2
	NodeName      string // --hostname-override: the CN of the client certificate is system:node:<NodeName>
	// Rotate is the KubeletConfiguration's rotateCertificates.
	Rotate bool
	// ServerTLSBootstrap is its serverTLSBootstrap.
	ServerTLSBootstrap bool
	// Port and HealthzPort are the kubelet's (0: 10250 and 10248).
	Port, HealthzPort int
	// StaticPodPath is the kubelet's staticPodPath (default
	// /etc/kubernetes/manifests).
	StaticPodPath string
}

// Ports returns the kubelet's port and healthz port.
func (k Kubelet) Ports() (port, healthz int) {
	port, healthz = k.Port, k.HealthzPort
	if port == 0 {
		port = 10250
	}
	if healthz == 0 {
		healthz = 10248
	}
	return port, healthz
}

// KubeletConfigPath is where the kubelet's configuration lies in the node
// (certagent's default kubelet.configFile).
const KubeletConfigPath = "/var/lib/kubelet/config.yaml"

// The values the kubelet insists on reading from /proc/sys, which is
// read-only in nspawn: shown to the kubelet unit alone, the host's sysctls
// stay as they are.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory": "1",
	"kernel/panic":         "10",
	"kernel/panic_on_oops": "1",
}

const containerdUnit = `[Unit]
Description=containerd (certagent's test node)
[Service]
ExecStart=/usr/local/bin/containerd
Delegate=yes
KillMode=process
Restart=always
RestartSec=1
[Install]
WantedBy=multi-user.target
`

const kubeletUnitTemplate = `[Unit]
Description=kubelet (certagent's test node)
Wants=containerd.service
After=containerd.service
[Service]
ExecStart=/usr/local/bin/kubelet --config=%s --kubeconfig=/etc/kubernetes/kubelet.conf --hostname-override=%s
Restart=always
RestartSec=2
%s[Install]
WantedBy=multi-user.target
`

// KubeletConfiguration returns the kubelet's configuration file: what a
// kubelet needs to run in an nspawn node on this kind of host (cgroupfs,
// cgroup v1 allowed, no QoS cgroups or allocatable enforcement, swap
// allowed), client certificates checked against the cluster CA.
func (k Kubelet) KubeletConfiguration() string {
	port, healthz := k.Ports()
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
staticPodPath: %s
rotateCertificates: %t
serverTLSBootstrap: %t
port: %d
healthzPort: %d
`, k.staticPodPath(), k.Rotate, k.ServerTLSBootstrap, port, healthz)
}

func (k Kubelet) staticPodPath() string {
	if k.StaticPodPath == "" {
		return "/etc/kubernetes/manifests"
	}
	return k.StaticPodPath
}

// Install writes the units (enabled), the kubelet's configuration and the
// sysctl files into the rootfs dir. The kubeconfig and certificates are
// the caller's.
func (k Kubelet) Install(dir string) error {
	if k.NodeName == "" || k.KubeBin == "" || k.ContainerdBin == "" {
		return fmt.Errorf("nspawn.Kubelet: NodeName, KubeBin and ContainerdBin are required")
	}
	var binds strings.Builder
	for name, v := range kubeletSysctls {
		f := "/etc/kubernetes/test-sysctl/" + strings.ReplaceAll(name, "/", "-")
		if err := writeIn(dir, f, v+"\n", 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&binds, "BindReadOnlyPaths=%s:/proc/sys/%s\n", f, name)
	}
	files := map[string]string{
		"/etc/systemd/system/containerd.service": containerdUnit,
		"/etc/systemd/system/kubelet.service":    fmt.Sprintf(kubeletUnitTemplate, KubeletConfigPath, k.NodeName, binds.String()),
		KubeletConfigPath:                        k.KubeletConfiguration(),
	}
	for p, body := range files {
		if err := writeIn(dir, p, body, 0o644); err != nil {
			return err
		}
	}
	for _, d := range []string{strings.TrimPrefix(k.staticPodPath(), "/"), "var/lib/kubelet/pki", "etc/systemd/system/multi-user.target.wants"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, u := range []string{"containerd.service", "kubelet.service"} {
		link := filepath.Join(dir, "etc/systemd/system/multi-user.target.wants", u)
		os.Remove(link)
		if err := os.Symlink("/etc/systemd/system/"+u, link); err != nil {
			return err
		}
	}
	return nil
}

// BootOptions are the systemd-nspawn options the kubelet needs: the host's
// network, /dev/kmsg (its OOM watcher exits without it), CAP_SYSLOG to
// read it (the host restricts dmesg), and the binaries bind-mounted.
func (k Kubelet) BootOptions() []string {
	opts := []string{"--bind-ro=/dev/kmsg", "--capability=CAP_SYSLOG",
		"--bind-ro=" + filepath.Join(k.KubeBin, "kubelet") + ":/usr/local/bin/kubelet"}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2"} {
		opts = append(opts, "--bind-ro="+filepath.Join(k.ContainerdBin, b)+":/usr/local/bin/"+b)
	}
	return opts
}

// Boot installs the kubelet into dir and boots the node. It fails at
// once when the kubelet's ports are taken on the host (a node left running
// by a test binary that was killed keeps them: its container outlives
// systemd-nspawn).
func (k Kubelet) Boot(ctx context.Context, dir string) (*Node, error) {
	port, healthz := k.Ports()
	for _, addr := range []string{fmt.Sprintf(":%d", port), fmt.Sprintf("127.0.0.1:%d", healthz)} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("the kubelet's port is taken on the host (a node of an earlier run still up? see ss -ltnp): %w", err)
		}
		l.Close()
	}
	if err := k.Install(dir); err != nil {
		return nil, err
	}
	return BootWith(ctx, dir, k.BootOptions()...)
}

// StoreKubeconfig is a kubelet.conf in the kubelet's store format, as
// kubeadm's kubelet-finalize leaves it: the client certificate and key
// are both the store's kubelet-client-current.pem.
func StoreKubeconfig(server, serverName string) string {
	return kubeconfig(server, serverName, "system:node",
		"    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem\n")
}

// EmbeddedKubeconfig is a kubelet.conf with the client certificate and key
// embedded, as `kubeadm init` writes it before kubelet-finalize.
func EmbeddedKubeconfig(server, serverName, certDataB64, keyDataB64 string) string {
	return kubeconfig(server, serverName, "system:node",
		"    client-certificate-data: "+certDataB64+"\n    client-key-data: "+keyDataB64+"\n")
}

// TokenKubeconfig is a bootstrap kubeconfig authenticating with a
// bootstrap token, as `kubeadm join` writes bootstrap-kubelet.conf.
func TokenKubeconfig(server, serverName, token string) string {
	return kubeconfig(server, serverName, "tls-bootstrap-token-user", "    token: "+token+"\n")
}

func kubeconfig(server, serverName, user, creds string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: %s
    tls-server-name: %s
    certificate-authority: /etc/kubernetes/pki/ca.crt
contexts:
- name: %[3]s@kubernetes
  context: {cluster: kubernetes, user: %[3]s}
current-context: %[3]s@kubernetes
users:
- name: %[3]s
  user:
%[4]s`, server, serverName, user, creds)
}

func writeIn(dir, p, body string, mode os.FileMode) error {
	full := filepath.Join(dir, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	return os.WriteFile(full, []byte(body), mode)
}
