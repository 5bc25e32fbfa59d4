package pki_test

import (
	"errors"
	"io/fs"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/rotate/pki"
)

// FuzzParseBundle: no input may panic, and a parse that succeeds returns
// at least one certificate. Seeds live in testdata/fuzz/FuzzParseBundle.
func FuzzParseBundle(f *testing.F) {
	ca := testCA(f)
	f.Add(ca.Cert.Raw)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := pki.ParseBundle(data)
		if err == nil && (b == nil || len(b.Certs) == 0) {
			t.Fatalf("success without a certificate: %+v", b)
		}
	})
}

// FuzzParseKubeconfig: no input may panic; and the client configuration
// built from any input carries no credential plugin and no file path for
// client-go to open, and a current user with an exec plugin or an
// auth-provider is always refused. Seeds live in
// testdata/fuzz/FuzzParseKubeconfig (exec and auth-provider shapes among
// them).
func FuzzParseKubeconfig(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Config\nusers: [{name: a, user: {client-certificate-data: AAAA}}]\n"))
	read := func(p string) ([]byte, error) {
		if strings.HasSuffix(p, ".missing") {
			return nil, fs.ErrNotExist
		}
		return []byte("read " + p), nil
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		creds, err := pki.ParseKubeconfig(data, "/etc/kubernetes")
		if err != nil && creds != nil {
			t.Fatal("credentials returned with an error")
		}
		rc, err := pki.RESTConfigFromData(data, "/etc/kubernetes", read)
		if (err == nil) == (rc == nil) {
			t.Fatalf("config %v with error %v", rc, err)
		}
		if rc != nil && (rc.ExecProvider != nil || rc.AuthProvider != nil || rc.CertFile != "" || rc.KeyFile != "" ||
			rc.CAFile != "" || rc.BearerTokenFile != "" || rc.Username != "" || rc.Password != "") {
			t.Fatalf("unsafe config: %+v", rc)
		}
		cfg, lerr := clientcmd.Load(data)
		if lerr != nil {
			return
		}
		if ctx := cfg.Contexts[cfg.CurrentContext]; ctx != nil {
			if ai := cfg.AuthInfos[ctx.AuthInfo]; ai != nil && (ai.Exec != nil || ai.AuthProvider != nil) && !errors.Is(err, pki.ErrRefusedCredential) {
				t.Fatalf("a credential plugin was not refused: %v", err)
			}
		}
	})
}
