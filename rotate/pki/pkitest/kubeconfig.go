package pkitest

import (
	"crypto/x509"
	"fmt"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Kubeconfig builds a one-user kubeconfig like kubeadm's. With certPath
// set the user refers to that file for certificate and key; otherwise
// certPEM and keyPEM are embedded.
func Kubeconfig(server string, ca *x509.Certificate, user string, certPEM, keyPEM []byte, certPath string) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubernetes"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: CertPEM(ca)}
	ai := &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	if certPath != "" {
		ai = &clientcmdapi.AuthInfo{ClientCertificate: certPath, ClientKey: certPath}
	}
	cfg.AuthInfos[user] = ai
	ctx := fmt.Sprintf("%s@kubernetes", user)
	cfg.Contexts[ctx] = &clientcmdapi.Context{Cluster: "kubernetes", AuthInfo: user}
	cfg.CurrentContext = ctx
	return clientcmd.Write(*cfg)
}

func (w *writer) kubeconfigs(ca *CA) error {
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	nodeUser := "system:node:" + w.l.NodeName
	for _, k := range []struct{ name, cn, org string }{
		{"admin.conf", "kubernetes-admin", "kubeadm:cluster-admins"},
		{"super-admin.conf", "kubernetes-super-admin", "system:masters"},
		{"controller-manager.conf", "system:kube-controller-manager", ""},
		{"scheduler.conf", "system:kube-scheduler", ""},
		{"kubelet.conf", nodeUser, "system:nodes"},
	} {
		path := ""
		if k.name == "kubelet.conf" && w.l.KubeletConfReference {
			path = "/var/lib/kubelet/pki/kubelet-client-current.pem"
		}
		var certPEM, keyPEM []byte
		if path == "" {
			s := Spec{CommonName: k.cn, ExtKeyUsage: client}
			if k.org != "" {
				s.Organization = []string{k.org}
			}
			cert, key, err := w.issue(ca, k.name, s)
			if err != nil {
				return err
			}
			certPEM, keyPEM = CertPEM(cert), KeyPEM(key)
		}
		user := k.cn
		// Loopback: nothing a test runs may reach for a real network.
		data, err := Kubeconfig("https://127.0.0.1:6443", ca.Cert, user, certPEM, keyPEM, path)
		if err != nil {
			return err
		}
		w.file("/etc/kubernetes/"+k.name, data, 0o600)
	}
	return nil
}

// kubelet writes the kubelet's store: a timestamped client cert+key file
// with the kubelet-client-current.pem symlink, and the self-signed
// kubelet.crt bundle (serving cert, then its own CA) the kubelet makes when
// serverTLSBootstrap is off.
func (w *writer) kubelet(ca *CA) error {
	dir := "/var/lib/kubelet/pki"
	cert, key, err := w.issue(ca, "kubelet-client-current", Spec{
		CommonName: "system:node:" + w.l.NodeName, Organization: []string{"system:nodes"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return err
	}
	stamp := cert.NotBefore.UTC().Format("2006-01-02-15-04-05")
	file := dir + "/kubelet-client-" + stamp + ".pem"
	w.file(file, append(CertPEM(cert), KeyPEM(key)...), 0o600)
	w.symlink(file, dir+"/kubelet-client-current.pem")

	selfCA, err := NewCA(fmt.Sprintf("%s-ca@%d", w.l.NodeName, w.l.Now.Unix()), w.l.Now.Add(-time.Hour), w.l.Now.Add(w.l.LeafLifetime), w.l.KeyType)
	if err != nil {
		return err
	}
	sc, sk, err := w.issue(selfCA, "kubelet.crt", Spec{CommonName: fmt.Sprintf("%s@%d", w.l.NodeName, w.l.Now.Unix()),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{w.l.NodeName}})
	if err != nil {
		return err
	}
	w.file(dir+"/kubelet.crt", CertPEM(sc, selfCA.Cert), 0o644)
	w.file(dir+"/kubelet.key", KeyPEM(sk), 0o600)
	return nil
}
