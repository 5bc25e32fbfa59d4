package pki_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// restNode is a root with a CA, a client key pair (also as a combined file
// behind the kubelet's symlink) and a token file.
type restNode struct {
	root                 *pki.Root
	dir                  string
	caPEM, certPEM, pair []byte
	keyPEM               []byte
}

func newRestNode(t *testing.T) *restNode {
	t.Helper()
	ca := testCA(t)
	cert, key, err := ca.Issue(pkitest.Spec{CommonName: "system:node:node1", Organization: []string{"system:nodes"}})
	if err != nil {
		t.Fatal(err)
	}
	n := &restNode{dir: t.TempDir(), caPEM: pkitest.CertPEM(ca.Cert), certPEM: pkitest.CertPEM(cert), keyPEM: pkitest.KeyPEM(key)}
	n.pair = append(append([]byte(nil), n.certPEM...), n.keyPEM...)
	for p, data := range map[string][]byte{
		"etc/kubernetes/pki/ca.crt":                         n.caPEM,
		"var/lib/kubelet/pki/kubelet-client-2020-01-01.pem": n.pair,
		"etc/kubernetes/token":                              []byte("abcdef.0123456789abcdef\n"),
	} {
		os.MkdirAll(filepath.Join(n.dir, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(n.dir, p), data, 0o600)
	}
	// An absolute link target: it must resolve inside the root.
	os.Symlink("/var/lib/kubelet/pki/kubelet-client-2020-01-01.pem", filepath.Join(n.dir, "var/lib/kubelet/pki/kubelet-client-current.pem"))
	if n.root, err = pki.NewRoot(n.dir); err != nil {
		t.Fatal(err)
	}
	return n
}

// kubeconfig writes /etc/kubernetes/test.conf with one cluster and the
// current user, plus an extra user that is not current.
func (n *restNode) kubeconfig(t *testing.T, cluster, user, extra string) string {
	t.Helper()
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	r := strings.NewReplacer("{{CA}}", b64(n.caPEM), "{{CERT}}", b64(n.certPEM), "{{KEY}}", b64(n.keyPEM))
	users := fmt.Sprintf("- name: u\n  user: {%s}\n", r.Replace(user))
	if extra != "" {
		users += fmt.Sprintf("- name: other\n  user: {%s}\n", r.Replace(extra))
	}
	kc := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster: {%s}\nusers:\n%scontexts: [{name: c, context: {cluster: k, user: u}}]\ncurrent-context: c\n",
		r.Replace(cluster), users)
	if err := os.WriteFile(filepath.Join(n.dir, "etc/kubernetes/test.conf"), []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	return "/etc/kubernetes/test.conf"
}

const (
	server    = `server: "https://127.0.0.1:6443"`
	execCred  = `exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/touch, args: [/tmp/certagent-canary], interactiveMode: Never}`
	oidcCred  = `auth-provider: {name: oidc, config: {idp-issuer-url: "https://127.0.0.1:1", client-id: x}}`
	embedCert = `client-certificate-data: {{CERT}}, client-key-data: {{KEY}}`
)

// assertNothingToRun: the config carries no plugin, no file path that
// client-go would open on the host, no basic auth, no impersonation.
func assertNothingToRun(t *testing.T, rc *rest.Config) {
	t.Helper()
	if rc.ExecProvider != nil || rc.AuthProvider != nil || rc.AuthConfigPersister != nil {
		t.Errorf("a credential plugin survived: exec %+v, auth-provider %+v", rc.ExecProvider, rc.AuthProvider)
	}
	if rc.CertFile != "" || rc.KeyFile != "" || rc.CAFile != "" || rc.BearerTokenFile != "" {
		t.Errorf("a host path survived: cert %q key %q ca %q token %q", rc.CertFile, rc.KeyFile, rc.CAFile, rc.BearerTokenFile)
	}
	if rc.Username != "" || rc.Password != "" || rc.Impersonate.UserName != "" || len(rc.Impersonate.Groups) > 0 {
		t.Errorf("basic auth or impersonation survived: %q %+v", rc.Username, rc.Impersonate)
	}
}

func TestRESTConfigAllowed(t *testing.T) {
	for _, tc := range []struct {
		name, cluster, user, extra string
		cert, key                  bool // CertData/KeyData are the node's pair
		token                      string
		proxy                      bool
	}{
		{name: "embedded", cluster: server + ", certificate-authority-data: {{CA}}", user: embedCert, cert: true, key: true},
		{name: "files, relative CA, key behind the kubelet's symlink", cluster: server + ", certificate-authority: pki/ca.crt",
			user: "client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem, client-key: /var/lib/kubelet/pki/kubelet-client-current.pem", cert: true, key: true},
		{name: "bootstrap token", cluster: server + ", certificate-authority: /etc/kubernetes/pki/ca.crt", user: "token: abcdef.0123456789abcdef", token: "abcdef.0123456789abcdef"},
		{name: "token file in the root", cluster: server + ", certificate-authority-data: {{CA}}", user: "tokenFile: token", token: "abcdef.0123456789abcdef"},
		{name: "proxy-url kept", cluster: server + `, certificate-authority-data: {{CA}}, proxy-url: "http://127.0.0.1:3128"`, user: embedCert, cert: true, key: true, proxy: true},
		{name: "impersonation ignored", cluster: server + ", certificate-authority-data: {{CA}}", user: embedCert + ", as: system:admin, as-groups: [system:masters]", cert: true, key: true},
		{name: "a plugin on a user that is not current", cluster: server + ", certificate-authority-data: {{CA}}", user: embedCert, extra: execCred, cert: true, key: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newRestNode(t)
			rc, err := pki.RESTConfig(n.root, n.kubeconfig(t, tc.cluster, tc.user, tc.extra))
			if err != nil {
				t.Fatal(err)
			}
			assertNothingToRun(t, rc)
			if rc.Host != "https://127.0.0.1:6443" || !bytes.Equal(rc.CAData, n.caPEM) {
				t.Errorf("host %q, CA %q", rc.Host, rc.CAData)
			}
			if tc.cert != (len(rc.CertData) > 0 && bytes.Contains(n.pair, rc.CertData) && bytes.Contains(rc.CertData, n.certPEM)) {
				t.Errorf("client certificate: %q", rc.CertData)
			}
			if tc.key != (len(rc.KeyData) > 0 && bytes.Contains(rc.KeyData, n.keyPEM)) {
				t.Errorf("client key: %q", rc.KeyData)
			}
			if rc.BearerToken != tc.token || (rc.Proxy != nil) != tc.proxy {
				t.Errorf("token %q, proxy %v", rc.BearerToken, rc.Proxy != nil)
			}
		})
	}
}

func TestRESTConfigRefused(t *testing.T) {
	ca := server + ", certificate-authority-data: {{CA}}"
	for _, tc := range []struct {
		name, cluster, user, want string
		refused                   bool // wraps ErrRefusedCredential
	}{
		{name: "exec plugin", cluster: ca, user: execCred, want: `exec plugin (command "/bin/touch")`, refused: true},
		{name: "auth-provider", cluster: ca, user: oidcCred, want: `auth-provider ("oidc")`, refused: true},
		{name: "exec and auth-provider", cluster: ca, user: execCred + ", " + oidcCred, want: "exec plugin", refused: true},
		{name: "exec beside a certificate", cluster: ca, user: embedCert + ", " + execCred, want: "exec plugin", refused: true},
		{name: "auth-provider beside a token", cluster: ca, user: "token: x, " + oidcCred, want: "auth-provider", refused: true},
		{name: "basic auth", cluster: ca, user: "username: admin, password: secret", want: "username/password", refused: true},
		{name: "no credential", cluster: ca, user: "", want: "no client certificate or token"},
		{name: "certificate without key", cluster: ca, user: "client-certificate-data: {{CERT}}", want: "without a client key"},
		{name: "plain http", cluster: `server: "http://127.0.0.1:8080"`, user: embedCert, want: "https only"},
		{name: "proxy of another scheme", cluster: ca + `, proxy-url: "file:///etc/shadow"`, user: embedCert, want: "proxy-url"},
		{name: "CA outside the root", cluster: server + ", certificate-authority: ../../../../../../etc/hostname", user: embedCert, want: "certificate-authority"},
		{name: "missing key file", cluster: ca, user: "client-certificate-data: {{CERT}}, client-key: /nope.key", want: "client-key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newRestNode(t)
			rc, err := pki.RESTConfig(n.root, n.kubeconfig(t, tc.cluster, tc.user, ""))
			if err == nil {
				t.Fatalf("accepted: %+v", rc)
			}
			if rc != nil {
				t.Error("a config returned with the error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/etc/kubernetes/test.conf") {
				t.Errorf("error %q, want one that names the file and says %q", err, tc.want)
			}
			if errors.Is(err, pki.ErrRefusedCredential) != tc.refused {
				t.Errorf("errors.Is(ErrRefusedCredential) = %v, want %v", !tc.refused, tc.refused)
			}
		})
	}
}
