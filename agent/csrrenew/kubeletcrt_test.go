package csrrenew

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/kube"
	"github.com/certagent/certagent/agent/kube/kubefake"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestRenewKubeletCrtCSR: with kubelet.servingCertificate: csr, `renew
// kubelet.crt` asks the kubelet-serving signer for the node's serving
// certificate with the old names and writes the issued certificate and its
// key over kubelet.crt/kubelet.key as a matched pair (not into the
// kubelet's kubelet-server store), for the kubelet restart to follow.
func TestRenewKubeletCrtCSR(t *testing.T) {
	dir := t.TempDir()
	node, err := (pkitest.Layout{}).Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := pki.NewRoot(dir)
	client := fake.NewClientset()
	var asked *x509.CertificateRequest
	var signer string
	answerCSRs(client, node.CA, "approve", func(req *x509.CertificateRequest, name string) { asked, signer = req, name })
	cfg, err := config.Parse([]byte("apiVersion: " + config.APIVersion + "\nkind: " + config.Kind + "\nkubelet: {servingCertificate: csr}\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := renewal.RenewOnce(context.Background(), root, cfg, api.RenewRequest{Names: []string{"kubelet.crt"}}, renewal.RenewOptions{
		CSRTimeout: 5 * time.Second,
		CSR: Renewer{Root: root, Client: func(string, *atomic.Int64) (kube.Interface, *x509.CertPool, error) {
			return kubefake.Wrap(client), poolOf(node.CA.Cert), nil
		}},
	})
	if err != nil || out.Failed {
		t.Fatalf("%v %+v", err, out.Lines)
	}
	if signer != certificatesv1.KubeletServingSignerName || asked.Subject.CommonName != "system:node:node1" || !slices.Equal(asked.DNSNames, []string{"node1"}) {
		t.Errorf("asked %s for %s %v", signer, asked.Subject, asked.DNSNames)
	}
	crt, _ := root.ReadFile("/var/lib/kubelet/pki/kubelet.crt")
	key, _ := root.ReadFile("/var/lib/kubelet/pki/kubelet.key")
	b, err := pki.ParseBundle(crt.Data)
	if err != nil {
		t.Fatal(err)
	}
	k, err := pki.ParseKeyPEM(key.Data)
	if err != nil || !pki.KeyMatches(b.Certs[0], k) || !pki.SignedBy(b.Certs[0], node.CA.Cert) {
		t.Fatalf("kubelet.crt/kubelet.key: not a matched pair from the cluster CA (%v)", err)
	}
	if crt.Mode != 0o644 || key.Mode != 0o600 {
		t.Errorf("modes %04o %04o", crt.Mode, key.Mode)
	}
	if len(out.Renewed) != 1 || out.Renewed[0].Cert.Name != "kubelet.crt" || out.Renewed[0].Rollback == nil {
		t.Errorf("renewed %+v", out.Renewed)
	}
	if text := linesText(out); !strings.Contains(text, "renewed   kubelet.crt") {
		t.Errorf("lines:\n%s", text)
	}
}

func linesText(o *renewal.Outcome) string {
	var s strings.Builder
	for _, l := range o.Lines {
		s.WriteString(l.String() + "\n")
	}
	return s.String()
}
