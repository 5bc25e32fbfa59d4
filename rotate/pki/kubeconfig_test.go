package pki_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

func TestParseKubeconfig(t *testing.T) {
	ca := testCA(t)
	cert, key, err := ca.Issue(pkitest.Spec{CommonName: "kubernetes-admin"})
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := pkitest.Kubeconfig("https://127.0.0.1:6443", ca.Cert, "kubernetes-admin", pkitest.CertPEM(cert), pkitest.KeyPEM(key), "")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := pki.ParseKubeconfig(embedded, "/etc/kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	if len(creds) != 1 || !creds[0].Embedded() || !creds[0].Current || creds[0].User != "kubernetes-admin" {
		t.Fatalf("embedded: %+v", creds)
	}
	if b, err := pki.ParseBundle(creds[0].CertData); err != nil || !b.Certs[0].Equal(cert) {
		t.Fatalf("embedded cert does not round-trip: %v", err)
	}

	ref := []byte(`apiVersion: v1
kind: Config
clusters: [{name: k, cluster: {server: "https://127.0.0.1:6443"}}]
users:
- name: node
  user: {client-certificate: pki/client.pem, client-key: /var/lib/kubelet/pki/client.pem}
- name: token
  user: {token: abc}
contexts: [{name: c, context: {cluster: k, user: node}}]
current-context: c
`)
	creds, err = pki.ParseKubeconfig(ref, "/var/lib/kubelet")
	if err != nil {
		t.Fatal(err)
	}
	if len(creds) != 1 || creds[0].Embedded() || creds[0].CertPath != "/var/lib/kubelet/pki/client.pem" || creds[0].KeyPath != "/var/lib/kubelet/pki/client.pem" {
		t.Fatalf("reference: %+v", creds)
	}

	token := []byte("apiVersion: v1\nkind: Config\nusers: [{name: b, user: {token: abc.def}}]\n")
	if creds, err := pki.ParseKubeconfig(token, "/"); err != nil || len(creds) != 0 {
		t.Fatalf("token-only kubeconfig: %v %v", creds, err)
	}

	broken := []byte("apiVersion: v1\nkind: Config\nusers: [{name: b, user: {client-certificate-data: '!!notbase64!!'}}]\n")
	if _, err := pki.ParseKubeconfig(broken, "/"); err == nil || !strings.Contains(err.Error(), "kubeconfig") {
		t.Fatalf("broken base64: err = %v", err)
	}
	if _, err := pki.ParseKubeconfig([]byte("just: [unbalanced"), "/"); err == nil {
		t.Fatal("bad YAML accepted")
	}
}

// TestLoadKubeconfigClusterCAs: certificate-authority-data comes back per
// cluster, sorted; a cluster naming a CA file, or none, is left out.
func TestLoadKubeconfigClusterCAs(t *testing.T) {
	ca := testCA(t)
	kc, err := pkitest.Kubeconfig("https://127.0.0.1:6443", ca.Cert, "kubernetes-admin", nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	_, cas, err := pki.LoadKubeconfig(kc, "/etc/kubernetes")
	if err != nil || len(cas) != 1 {
		t.Fatalf("LoadKubeconfig: %v %+v", err, cas)
	}
	if b, err := pki.ParseBundle(cas[0].Data); err != nil || !b.Certs[0].Equal(ca.Cert) {
		t.Fatalf("cluster CA does not round-trip: %v", err)
	}
	file := []byte(`apiVersion: v1
kind: Config
clusters:
- {name: b, cluster: {server: "https://b", certificate-authority: /etc/kubernetes/pki/ca.crt}}
- {name: a, cluster: {server: "https://a", certificate-authority-data: "` + base64.StdEncoding.EncodeToString(pkitest.CertPEM(ca.Cert)) + `"}}
- {name: c, cluster: {server: "https://c"}}
`)
	_, cas, err = pki.LoadKubeconfig(file, "/")
	if err != nil || len(cas) != 1 || cas[0].Cluster != "a" {
		t.Fatalf("only the embedded CA of cluster a: %v %+v", err, cas)
	}
}
