package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/rotate/pki"
)

// sandboxCA is a CA of the demo's sandbox, able to sign leaves.
type sandboxCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// sandbox writes the demo's node PKI below dir: kubeadm's three CAs and
// seven leaves, the service-account pair, the control-plane kubeconfigs
// and the kubelet's store, every leaf living a year, with the chosen
// expiries (notAfter by name). It is the demo's own, small, maker: the test
// fixtures (pkitest) stay out of the shipped binary.
type sandbox struct {
	dir      string
	now      time.Time
	notAfter map[string]time.Time
	err      error
}

const sandboxLifetime = 365 * 24 * time.Hour

func (s *sandbox) write() (*sandboxCA, error) {
	pkiDir := "etc/kubernetes/pki"
	ca := s.ca(pkiDir+"/ca", "kubernetes")
	etcd := s.ca(pkiDir+"/etcd/ca", "etcd-ca")
	proxy := s.ca(pkiDir+"/front-proxy-ca", "front-proxy-ca")
	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	both := append(server, client...)
	local := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.10")}
	for _, l := range []struct {
		name, file string
		ca         *sandboxCA
		tmpl       x509.Certificate
	}{
		{"apiserver", "apiserver", ca, x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"}, ExtKeyUsage: server,
			DNSNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "node1"}, IPAddresses: []net.IP{net.ParseIP("10.96.0.1"), local[1]}}},
		{"apiserver-kubelet-client", "apiserver-kubelet-client", ca, x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"kubeadm:cluster-admins"}}, ExtKeyUsage: client}},
		{"front-proxy-client", "front-proxy-client", proxy, x509.Certificate{Subject: pkix.Name{CommonName: "front-proxy-client"}, ExtKeyUsage: client}},
		{"apiserver-etcd-client", "apiserver-etcd-client", etcd, x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver-etcd-client"}, ExtKeyUsage: client}},
		{"etcd-server", "etcd/server", etcd, x509.Certificate{Subject: pkix.Name{CommonName: "node1"}, ExtKeyUsage: both, DNSNames: []string{"localhost", "node1"}, IPAddresses: local}},
		{"etcd-peer", "etcd/peer", etcd, x509.Certificate{Subject: pkix.Name{CommonName: "node1"}, ExtKeyUsage: both, DNSNames: []string{"localhost", "node1"}, IPAddresses: local}},
		{"etcd-healthcheck-client", "etcd/healthcheck-client", etcd, x509.Certificate{Subject: pkix.Name{CommonName: "kube-etcd-healthcheck-client"}, ExtKeyUsage: client}},
	} {
		cert, key := s.leaf(l.ca, l.name, l.tmpl)
		s.pair(pkiDir+"/"+l.file, cert, key)
	}
	saKey := s.key()
	if pub, err := x509.MarshalPKIXPublicKey(saKey.Public()); err == nil {
		s.file(pkiDir+"/sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
	} else if s.err == nil {
		s.err = err
	}
	s.file(pkiDir+"/sa.key", s.keyPEM(saKey), 0o600)
	for _, k := range []struct{ name, cn, org string }{
		{"admin.conf", "kubernetes-admin", "kubeadm:cluster-admins"}, {"super-admin.conf", "kubernetes-super-admin", "system:masters"},
		{"controller-manager.conf", "system:kube-controller-manager", ""}, {"scheduler.conf", "system:kube-scheduler", ""},
		{"kubelet.conf", "system:node:node1", "system:nodes"},
	} {
		s.kubeconfig(ca, k.name, k.cn, k.org)
	}
	s.kubelet(ca)
	return ca, s.err
}

// ca writes a self-signed CA (ten years) at stem.crt/stem.key.
func (s *sandbox) ca(stem, cn string) *sandboxCA {
	key := s.key()
	tmpl := x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotBefore: s.now.Add(-time.Hour), NotAfter: s.now.Add(10 * sandboxLifetime),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	ca := &sandboxCA{key: key}
	ca.cert = s.sign(&tmpl, &tmpl, key.Public(), key)
	s.pair(stem, ca.cert, key)
	return ca
}

// leaf signs a year-long certificate for tmpl, ending at notAfter[name]
// when chosen.
func (s *sandbox) leaf(ca *sandboxCA, name string, tmpl x509.Certificate) (*x509.Certificate, crypto.Signer) {
	tmpl.NotAfter = s.now.Add(sandboxLifetime - time.Hour)
	if na, ok := s.notAfter[name]; ok {
		tmpl.NotAfter = na
	}
	tmpl.NotBefore = tmpl.NotAfter.Add(-sandboxLifetime)
	return s.issue(ca, tmpl)
}

// issue signs a new key's certificate for tmpl, dates included.
func (s *sandbox) issue(ca *sandboxCA, tmpl x509.Certificate) (*x509.Certificate, crypto.Signer) {
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	key := s.key()
	return s.sign(&tmpl, ca.cert, key.Public(), ca.key), key
}

func (s *sandbox) sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, by crypto.Signer) *x509.Certificate {
	if s.err != nil {
		return &x509.Certificate{}
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		s.err = err
		return &x509.Certificate{}
	}
	tmpl.SerialNumber = serial.Add(serial, big.NewInt(1))
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, by)
	if err == nil {
		var c *x509.Certificate
		if c, err = x509.ParseCertificate(der); err == nil {
			return c
		}
	}
	s.err = err
	return &x509.Certificate{}
}

func (s *sandbox) key() crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil && s.err == nil {
		s.err = err
	}
	return k
}

// kubeconfig writes etc/kubernetes/<name> with an embedded credential.
func (s *sandbox) kubeconfig(ca *sandboxCA, name, cn, org string) {
	subject := pkix.Name{CommonName: cn}
	if org != "" {
		subject.Organization = []string{org}
	}
	cert, key := s.leaf(ca, name, x509.Certificate{Subject: subject, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	user := cn
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubernetes"] = &clientcmdapi.Cluster{Server: "https://10.0.0.10:6443", CertificateAuthorityData: pki.EncodeCertPEM(ca.cert)}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: pki.EncodeCertPEM(cert), ClientKeyData: s.keyPEM(key)}
	cfg.Contexts[user+"@kubernetes"] = &clientcmdapi.Context{Cluster: "kubernetes", AuthInfo: user}
	cfg.CurrentContext = user + "@kubernetes"
	data, err := clientcmd.Write(*cfg)
	if err != nil && s.err == nil {
		s.err = err
	}
	s.file("etc/kubernetes/"+name, data, 0o600)
}

// kubelet writes the kubelet's store: the client pair behind the
// kubelet-client-current.pem link, and its self-signed kubelet.crt.
func (s *sandbox) kubelet(ca *sandboxCA) {
	dir := "var/lib/kubelet/pki"
	cert, key := s.leaf(ca, "kubelet-client-current", x509.Certificate{Subject: pkix.Name{CommonName: "system:node:node1", Organization: []string{"system:nodes"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	file := "kubelet-client-" + s.now.UTC().Format("2006-01-02-15-04-05") + ".pem"
	s.file(dir+"/"+file, append(pki.EncodeCertPEM(cert), s.keyPEM(key)...), 0o600)
	if s.err == nil {
		s.err = os.Symlink("/"+dir+"/"+file, filepath.Join(s.dir, dir, "kubelet-client-current.pem"))
	}
	sk := s.key()
	tmpl := x509.Certificate{Subject: pkix.Name{CommonName: fmt.Sprintf("node1@%d", s.now.Unix())}, DNSNames: []string{"node1"},
		NotBefore: s.now.Add(-time.Hour), NotAfter: s.now.Add(sandboxLifetime), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, BasicConstraintsValid: true}
	s.pair(dir+"/kubelet", s.sign(&tmpl, &tmpl, sk.Public(), sk), sk)
}

func (s *sandbox) pair(stem string, cert *x509.Certificate, key crypto.Signer) {
	s.file(stem+".crt", pki.EncodeCertPEM(cert), 0o644)
	s.file(stem+".key", s.keyPEM(key), 0o600)
}

func (s *sandbox) file(rel string, data []byte, mode os.FileMode) {
	if s.err != nil {
		return
	}
	p := filepath.Join(s.dir, rel)
	if s.err = os.MkdirAll(filepath.Dir(p), 0o755); s.err == nil {
		s.err = os.WriteFile(p, data, mode)
	}
}

// keyPEM encodes k; a failure is the sandbox's error.
func (s *sandbox) keyPEM(k crypto.Signer) []byte {
	b, err := pki.EncodeKeyPEM(k, "")
	if err != nil && s.err == nil {
		s.err = err
	}
	return b
}
