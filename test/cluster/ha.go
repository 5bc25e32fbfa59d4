package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// HANode is one control-plane node of an HA cluster: its kubeadm root
// and the loopback ports of its etcd member, kube-apiserver and
// kube-controller-manager (its secure port, when StartControllerManager
// runs one).
type HANode struct {
	Name, Root                  string
	EtcdPort, PeerPort, API, CM int
}

// EtcdAddr, PeerAddr and APIAddr are the node's host:port.
func (n *HANode) EtcdAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.EtcdPort) }

// PeerAddr is the etcd member's peer host:port.
func (n *HANode) PeerAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.PeerPort) }

// APIAddr is the kube-apiserver's host:port.
func (n *HANode) APIAddr() string { return fmt.Sprintf("127.0.0.1:%d", n.API) }

func (n *HANode) pki(name string) string { return filepath.Join(n.Root, "etc/kubernetes/pki", name) }

// HA is a highly available control plane on loopback: one etcd cluster of
// a member per node, TLS everywhere as kubeadm sets it up (client and peer
// certificate authentication), a kube-apiserver per node using every
// member, and a TCP load balancer in front of the kube-apiservers (the
// kubeadm controlPlaneEndpoint).
type HA struct {
	Nodes []*HANode
	// LB is the load balancer's host:port.
	LB      string
	kubeBin string
	c       *Cluster // process bookkeeping and logs
	lb      net.Listener
}

// StartHA starts etcd members and kube-apiservers for the node roots
// (kubeadm PKIs sharing their CAs), named by names.
func StartHA(ctx context.Context, kubeBin, work string, names, roots []string) (*HA, error) {
	h := &HA{kubeBin: kubeBin, c: &Cluster{dir: work, procs: map[string]*exec.Cmd{}, ports: map[string]int{}}}
	for i, r := range roots {
		n := &HANode{Name: names[i], Root: r}
		for _, p := range []*int{&n.EtcdPort, &n.PeerPort, &n.API, &n.CM} {
			var err error
			if *p, err = FreePort(); err != nil {
				return nil, err
			}
		}
		h.Nodes = append(h.Nodes, n)
	}
	if err := h.startLB(); err != nil {
		return nil, err
	}
	for i := range h.Nodes {
		if err := h.StartEtcd(i); err != nil {
			h.Stop()
			return nil, err
		}
	}
	for i := range h.Nodes {
		if err := h.StartAPIServer(i); err != nil {
			h.Stop()
			return nil, err
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for i := range h.Nodes {
		for !h.APIReady(ctx, i) {
			if time.Now().After(deadline) {
				h.Stop()
				return nil, fmt.Errorf("kube-apiserver %d not ready:\n%s", i, h.Log("apiserver-"+h.Nodes[i].Name))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return h, nil
}

// Log returns a process's output.
func (h *HA) Log(name string) string { return h.c.Log(name) }

// StartEtcd (re)starts node i's etcd member with its certificates as on disk.
func (h *HA) StartEtcd(i int) error {
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		return fmt.Errorf("etcd not found (apt-get install etcd-server): %w", err)
	}
	n := h.Nodes[i]
	var initial []string
	for _, m := range h.Nodes {
		initial = append(initial, m.Name+"=https://"+m.PeerAddr())
	}
	return h.c.spawn("etcd-"+n.Name, etcd, "--name", n.Name, "--data-dir", filepath.Join(h.c.dir, "etcd-"+n.Name),
		"--listen-client-urls", "https://"+n.EtcdAddr(), "--advertise-client-urls", "https://"+n.EtcdAddr(),
		"--listen-peer-urls", "https://"+n.PeerAddr(), "--initial-advertise-peer-urls", "https://"+n.PeerAddr(),
		"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new", "--initial-cluster-token", "certagent-ha",
		"--cert-file", n.pki("etcd/server.crt"), "--key-file", n.pki("etcd/server.key"),
		"--client-cert-auth", "--trusted-ca-file", n.pki("etcd/ca.crt"),
		"--peer-cert-file", n.pki("etcd/peer.crt"), "--peer-key-file", n.pki("etcd/peer.key"),
		"--peer-client-cert-auth", "--peer-trusted-ca-file", n.pki("etcd/ca.crt"))
}

// StartAPIServer (re)starts node i's kube-apiserver, on every etcd member.
func (h *HA) StartAPIServer(i int) error {
	n := h.Nodes[i]
	var servers []string
	for _, m := range h.Nodes {
		servers = append(servers, "https://"+m.EtcdAddr())
	}
	args := append(apiServerArgs(n.pki, n.API), "--etcd-servers="+strings.Join(servers, ","),
		"--etcd-cafile="+n.pki("etcd/ca.crt"), "--etcd-certfile="+n.pki("apiserver-etcd-client.crt"),
		"--etcd-keyfile="+n.pki("apiserver-etcd-client.key"),
		// kubeadm's front proxy: the request header CA is a client CA too.
		"--requestheader-client-ca-file="+n.pki("front-proxy-ca.crt"), "--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+n.pki("front-proxy-client.crt"), "--proxy-client-key-file="+n.pki("front-proxy-client.key"))
	return h.c.spawn("apiserver-"+n.Name, filepath.Join(h.kubeBin, "kube-apiserver"), args...)
}

// Kill stops a process at once ("etcd-<node>", "apiserver-<node>").
func (h *HA) Kill(name string) {
	h.c.mu.Lock()
	p := h.c.procs[name]
	delete(h.c.procs, name)
	h.c.mu.Unlock()
	if p != nil {
		p.Process.Signal(syscall.SIGKILL)
		p.Wait()
	}
}

// PID returns a process's id (0: not running).
func (h *HA) PID(name string) int { return h.c.PID(name) }

// EtcdHealthy asks node i's member /health with its healthcheck client.
func (h *HA) EtcdHealthy(ctx context.Context, i int) bool {
	_, ok := h.EtcdHealth(ctx, i)
	return ok
}

// EtcdHealth says whether node i's member is up (its process answers
// /version, which needs no leader) and whether it is healthy (/health,
// which in etcd 3.4 needs a leader and a quorum read: during an election
// a live member can take longer than the probe timeout to answer it).
func (h *HA) EtcdHealth(ctx context.Context, i int) (up, healthy bool) {
	n := h.Nodes[i]
	pair, err := tls.LoadX509KeyPair(n.pki("etcd/healthcheck-client.crt"), n.pki("etcd/healthcheck-client.key"))
	if err != nil {
		return false, false
	}
	tc := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}}
	version, _ := get(ctx, "https://"+n.EtcdAddr()+"/version", tc)
	if !strings.Contains(version, "etcdserver") {
		// Ask once more before calling a member down: on a loaded
		// machine a live member can miss one 2 s probe, and one such
		// miss broke the quorum check of a run with no second member
		// restarted. A member that is down misses both.
		version, _ = get(ctx, "https://"+n.EtcdAddr()+"/version", tc)
	}
	body, ok := get(ctx, "https://"+n.EtcdAddr()+"/health", tc)
	return strings.Contains(version, "etcdserver"), ok && strings.Contains(body, `"health":"true"`)
}

// APIReady asks node i's kube-apiserver /readyz.
func (h *HA) APIReady(ctx context.Context, i int) bool {
	_, ok := get(ctx, "https://"+h.Nodes[i].APIAddr()+"/readyz", &tls.Config{InsecureSkipVerify: true})
	return ok
}

func get(ctx context.Context, url string, tc *tls.Config) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode == http.StatusOK
}

// startLB accepts on a loopback port and forwards each connection to the
// first kube-apiserver that takes it, starting with a different one each
// time.
func (h *HA) startLB() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	h.lb, h.LB = l, l.Addr().String()
	var mu sync.Mutex
	next := 0
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			first := next
			next++
			mu.Unlock()
			go h.forward(in, first)
		}
	}()
	return nil
}

func (h *HA) forward(in net.Conn, first int) {
	defer in.Close()
	for k := range h.Nodes {
		n := h.Nodes[(first+k)%len(h.Nodes)]
		out, err := net.DialTimeout("tcp", n.APIAddr(), time.Second)
		if err != nil {
			continue
		}
		defer out.Close()
		go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
		io.Copy(in, out)
		return
	}
}

// Stop kills every process and the load balancer.
func (h *HA) Stop() {
	if h.lb != nil {
		h.lb.Close()
	}
	h.c.mu.Lock()
	var names []string
	for n := range h.c.procs {
		names = append(names, n)
	}
	h.c.mu.Unlock()
	for _, n := range names {
		h.Kill(n)
	}
}

// CAPool is node 0's cluster CA, to verify kube-apiservers.
func (h *HA) CAPool() (*x509.CertPool, error) {
	b, err := os.ReadFile(h.Nodes[0].pki("ca.crt"))
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p, nil
}
