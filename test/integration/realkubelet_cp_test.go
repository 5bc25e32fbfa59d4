package integration

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
	"github.com/certagent/certagent/test/nspawn"
)

// TestE2ERealKubeletControlPlane: a control-plane node (the cluster CA key
// is here) whose kubelet.conf embeds the client certificate, as `kubeadm
// init` writes it before kubelet-finalize. certagent renews it from the
// local CA, moves it to the kubelet's store (convertKubeletConf), restarts
// the real kubelet, which keeps heartbeating after the old certificate died.
func TestE2ERealKubeletControlPlane(t *testing.T) {
	t.Parallel()
	tl := newTimeline()
	var oldSerial string
	k := nspawn.Kubelet{NodeName: "e2e-control-plane", Port: 10260, HealthzPort: 10258}
	r := bootRealNode(t, k, func(r *realNode) {
		cert, key, serial := r.clientCert(tl.start.Add(-30*time.Second), tl.notAfter)
		oldSerial = serial
		b64 := base64.StdEncoding.EncodeToString
		r.put("etc/kubernetes/kubelet.conf", []byte(nspawn.EmbeddedKubeconfig(r.c.URL, "kubernetes", b64(cert), b64(key))), 0o600)
		r.put("etc/kubernetes/pki/ca.key", pkitest.KeyPEM(r.ca.Key), 0o600)
		// A renewal keeps the old lifetime unless told: an hour, as the
		// controller-manager signs, so this renewal is the only one.
		r.config(workerConfig + "renewal: {convertKubeletConf: true, validity: 1h}\n")
	})
	conf := filepath.Join(r.dir, "etc/kubernetes/kubelet.conf")
	store := filepath.Join(r.dir, "var/lib/kubelet/pki/kubelet-client-current.pem")
	var serial string
	r.proveRenewal(tl, func() bool {
		cfg, err := clientcmd.LoadFromFile(conf)
		if err != nil {
			return false
		}
		for _, ai := range cfg.AuthInfos {
			if len(ai.ClientCertificateData) > 0 || ai.ClientCertificate != "/var/lib/kubelet/pki/kubelet-client-current.pem" {
				return false
			}
		}
		serial, _, _, _ = r.clientState()
		return serial != "" && serial != oldSerial
	})
	// The store file: the new pair, issued by the cluster CA.
	link, err := os.Readlink(store)
	if err != nil {
		t.Fatal(err)
	}
	data := mustRead(t, filepath.Join(r.dir, link)) // the link is absolute in the node
	b, err := pki.ParseBundle(data)
	if err != nil || len(b.Certs) == 0 {
		t.Fatalf("store file: %v", err)
	}
	c := b.Certs[0]
	if strings.ToUpper(c.SerialNumber.Text(16)) != serial || c.Subject.CommonName != "system:node:"+r.name || c.CheckSignatureFrom(r.ca.Cert) != nil {
		t.Errorf("store certificate %s %s, status says %s", c.SerialNumber.Text(16), c.Subject, serial)
	}
	if !c.NotAfter.After(tl.notAfter.Add(50 * time.Minute)) {
		t.Errorf("renewed certificate ends %s, not after the old one", c.NotAfter)
	}
	if _, e := r.journalAt(msgRenewed, "", tl.start); e == nil || e["METHOD"] != "local-ca" {
		t.Errorf("renewed event %v, want METHOD=local-ca", e)
	}
	r.checkClusterView("CertificateRenewed", corev1.ConditionTrue)
}
