package pkitest

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Layout describes a kubeadm-style node PKI to write below a directory
// that acts as the node's "/". Zero fields take kubeadm's defaults.
type Layout struct {
	Now          time.Time     // default time.Now()
	LeafLifetime time.Duration // default 365 days
	CALifetime   time.Duration // default 10 years
	KeyType      KeyType       // default ECDSA
	NodeName     string        // default node1
	// NotAfter overrides the expiry of certificates by name: kubeadm names
	// (apiserver, admin.conf, ...), kubelet.conf, kubelet-client-current.
	NotAfter map[string]time.Time
	// KubeletConfReference makes kubelet.conf point at
	// kubelet-client-current.pem instead of embedding its own certificate.
	KubeletConfReference bool
	// ExternalCA leaves ca.key out, as on a cluster whose CA lives elsewhere.
	ExternalCA bool
}

// Node is what Layout.Write made.
type Node struct {
	Root                   string
	CA, EtcdCA, FrontProxy *CA
}

type leaf struct {
	name, file string // file is relative to the pki directory
	ca         **CA
	spec       Spec
}

// Write creates the layout below root.
func (l Layout) Write(root string) (*Node, error) {
	if l.Now.IsZero() {
		l.Now = time.Now()
	}
	if l.LeafLifetime == 0 {
		l.LeafLifetime = 365 * 24 * time.Hour
	}
	if l.CALifetime == 0 {
		l.CALifetime = 10 * 365 * 24 * time.Hour
	}
	if l.NodeName == "" {
		l.NodeName = "node1"
	}
	w := &writer{root: root, l: l}
	n := &Node{Root: root}
	pki := "/etc/kubernetes/pki"
	for _, c := range []struct {
		name, file string
		ca         **CA
	}{{"kubernetes", "ca", &n.CA}, {"etcd-ca", "etcd/ca", &n.EtcdCA}, {"front-proxy-ca", "front-proxy-ca", &n.FrontProxy}} {
		ca, err := NewCA(c.name, l.Now.Add(-time.Hour), l.Now.Add(l.CALifetime), l.KeyType)
		if err != nil {
			return nil, err
		}
		*c.ca = ca
		w.file(pki+"/"+c.file+".crt", CertPEM(ca.Cert), 0o644)
		if !(l.ExternalCA && c.file == "ca") {
			w.file(pki+"/"+c.file+".key", KeyPEM(ca.Key), 0o600)
		}
	}
	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	nodeIP := net.ParseIP("10.0.0.10")
	local := []net.IP{net.ParseIP("127.0.0.1"), nodeIP, net.ParseIP("::1")}
	leaves := []leaf{
		{"apiserver", "apiserver", &n.CA, Spec{CommonName: "kube-apiserver", ExtKeyUsage: server,
			DNSNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", l.NodeName},
			IPs:      []net.IP{net.ParseIP("10.96.0.1"), nodeIP}}},
		{"apiserver-kubelet-client", "apiserver-kubelet-client", &n.CA, Spec{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"kubeadm:cluster-admins"}, ExtKeyUsage: client}},
		{"front-proxy-client", "front-proxy-client", &n.FrontProxy, Spec{CommonName: "front-proxy-client", ExtKeyUsage: client}},
		{"apiserver-etcd-client", "apiserver-etcd-client", &n.EtcdCA, Spec{CommonName: "kube-apiserver-etcd-client", ExtKeyUsage: client}},
		{"etcd-server", "etcd/server", &n.EtcdCA, Spec{CommonName: l.NodeName, ExtKeyUsage: both, DNSNames: []string{"localhost", l.NodeName}, IPs: local}},
		{"etcd-peer", "etcd/peer", &n.EtcdCA, Spec{CommonName: l.NodeName, ExtKeyUsage: both, DNSNames: []string{"localhost", l.NodeName}, IPs: local}},
		{"etcd-healthcheck-client", "etcd/healthcheck-client", &n.EtcdCA, Spec{CommonName: "kube-etcd-healthcheck-client", ExtKeyUsage: client}},
	}
	for _, lf := range leaves {
		cert, key, err := w.issue(*lf.ca, lf.name, lf.spec)
		if err != nil {
			return nil, err
		}
		w.file(pki+"/"+lf.file+".crt", CertPEM(cert), 0o644)
		w.file(pki+"/"+lf.file+".key", KeyPEM(key), 0o600)
	}
	if err := w.serviceAccount(pki); err != nil {
		return nil, err
	}
	if err := w.kubeconfigs(n.CA); err != nil {
		return nil, err
	}
	if err := w.kubelet(n.CA); err != nil {
		return nil, err
	}
	return n, w.err
}

type writer struct {
	root string
	l    Layout
	err  error
}

func (w *writer) file(nodePath string, data []byte, mode os.FileMode) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.root, nodePath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.err = err
		return
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		w.err = err
		return
	}
	w.err = os.Chmod(p, mode)
}

func (w *writer) symlink(target, nodePath string) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.root, nodePath)
	_ = os.Remove(p)
	w.err = os.Symlink(target, p)
}

func (w *writer) issue(ca *CA, name string, s Spec) (*x509.Certificate, crypto.Signer, error) {
	s.KeyType = w.l.KeyType
	s.NotBefore = w.l.Now.Add(-time.Hour)
	s.NotAfter = w.l.Now.Add(w.l.LeafLifetime - time.Hour)
	if na, ok := w.l.NotAfter[name]; ok {
		s.NotAfter, s.NotBefore = na, na.Add(-w.l.LeafLifetime)
	}
	return ca.Issue(s)
}

func (w *writer) serviceAccount(pki string) error {
	key, err := NewKey(w.l.KeyType)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return err
	}
	w.file(pki+"/sa.key", KeyPEM(key), 0o600)
	w.file(pki+"/sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
	return nil
}
