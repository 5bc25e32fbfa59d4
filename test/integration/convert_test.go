package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// TestConvertKubeletConf: with renewal.convertKubeletConf, renewing an
// embedded kubelet.conf moves its certificate into the kubelet's store and
// points kubelet.conf at kubelet-client-current.pem, as on joined nodes.
func TestConvertKubeletConf(t *testing.T) {
	root := sandbox(t)
	cfg := filepath.Join(root, "etc/certagent/config.yaml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nrenewal: {convertKubeletConf: true}\n"), 0o644)
	r := run(t, certagentBin, "renew", "--root", root, "kubelet.conf")
	if r.code != 0 || !strings.Contains(r.stdout, "converted kubelet.conf") {
		t.Fatalf("renew: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	kc, err := clientcmd.LoadFromFile(filepath.Join(root, "etc/kubernetes/kubelet.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range kc.AuthInfos {
		if len(ai.ClientCertificateData) > 0 || ai.ClientCertificate != "/var/lib/kubelet/pki/kubelet-client-current.pem" || ai.ClientKey != ai.ClientCertificate {
			t.Errorf("kubelet.conf user: %+v", ai)
		}
	}
	rep := consistent(t, root)
	certs := index(nil)
	for _, c := range rep.Certificates {
		certs[c.Name] = reportCert{Name: c.Name}
		if c.Name == "kubelet-client-current" && (len(c.UsedBy) != 1 || c.UsedBy[0] != "/etc/kubernetes/kubelet.conf") {
			t.Errorf("kubelet-client-current used by %v", c.UsedBy)
		}
	}
	if _, ok := certs["kubelet.conf"]; ok {
		t.Error("kubelet.conf still embeds a certificate")
	}
	if m, _ := filepath.Glob(filepath.Join(root, "etc/kubernetes/tmp/certagent-backup-*/kubeconfig-before-convert-*")); len(m) != 1 {
		t.Errorf("the kubeconfig as it was is not kept: %v", m)
	}
}
