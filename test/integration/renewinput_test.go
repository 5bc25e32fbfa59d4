package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestRenewRefusesBadInput: each case fails clearly and changes nothing it
// should not.
func TestRenewRefusesBadInput(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, root string)
		args   []string
		code   int
		want   []string // substrings of the output
		intact []string // files that must not change
	}{
		{
			name:  "group-readable CA key",
			setup: func(t *testing.T, root string) { os.Chmod(filepath.Join(root, "etc/kubernetes/pki/ca.key"), 0o640) },
			args:  []string{"apiserver"}, code: 1,
			want:   []string{"failed", "apiserver", "readable or writable by group or others (mode 0640)"},
			intact: []string{"etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/pki/apiserver.key"},
		},
		{
			name: "CA key owned by someone else",
			setup: func(t *testing.T, root string) {
				if os.Geteuid() != 0 {
					t.Skip("chown needs root")
				}
				os.Chown(filepath.Join(root, "etc/kubernetes/pki/etcd/ca.key"), 4242, 4242)
			},
			args: []string{"--all", "--force"}, code: 1,
			want:   []string{"failed    etcd-server", "owned by uid 4242", "renewed   apiserver "},
			intact: []string{"etc/kubernetes/pki/etcd/server.crt"},
		},
		{
			name: "CA key that is not the CA's",
			setup: func(t *testing.T, root string) {
				k, _ := pkitest.NewKey(pkitest.ECDSA)
				os.WriteFile(filepath.Join(root, "etc/kubernetes/pki/front-proxy-ca.key"), pkitest.KeyPEM(k), 0o600)
			},
			args: []string{"front-proxy-client"}, code: 1,
			want:   []string{"is not the key of /etc/kubernetes/pki/front-proxy-ca.crt"},
			intact: []string{"etc/kubernetes/pki/front-proxy-client.crt"},
		},
		{
			name: "corrupt current certificate",
			setup: func(t *testing.T, root string) {
				os.WriteFile(filepath.Join(root, "etc/kubernetes/pki/apiserver.crt"), []byte("-----BEGIN CERTIFICATE-----\nAAAA"), 0o644)
			},
			args: []string{"--all", "--force"}, code: 1,
			want:   []string{"failed    apiserver", "cannot read the current certificate", "renewed   etcd-server"},
			intact: []string{"etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/pki/apiserver.key"},
		},
		{
			name: "leaf of a CA not on the node",
			setup: func(t *testing.T, root string) {
				ca, _ := pkitest.NewCA("elsewhere", time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour), pkitest.ECDSA)
				c, k, _ := ca.Issue(pkitest.Spec{CommonName: "webhook"})
				os.WriteFile(filepath.Join(root, "etc/kubernetes/pki/webhook.crt"), pkitest.CertPEM(c), 0o644)
				os.WriteFile(filepath.Join(root, "etc/kubernetes/pki/webhook.key"), pkitest.KeyPEM(k), 0o600)
			},
			args: []string{"/etc/kubernetes/pki/webhook.crt"}, code: 1,
			want:   []string{"issuer not found on this node"},
			intact: []string{"etc/kubernetes/pki/webhook.crt"},
		},
		{
			name:  "external CA",
			setup: func(t *testing.T, root string) { os.Remove(filepath.Join(root, "etc/kubernetes/pki/ca.key")) },
			args:  []string{"--all", "--force"}, code: 0,
			want:   []string{"renewed   etcd-server"},
			intact: []string{"etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/admin.conf"},
		},
		{
			name: "a CA by name", args: []string{"ca"}, code: 1,
			want: []string{"certagent never renews CAs"}, intact: []string{"etc/kubernetes/pki/ca.crt"},
		},
		{name: "no selection", args: nil, code: 4},
		{name: "names and --all", args: []string{"--all", "apiserver"}, code: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := sandbox(t)
			if tc.setup != nil {
				tc.setup(t, root)
			}
			before := map[string][]byte{}
			for _, f := range tc.intact {
				before[f], _ = os.ReadFile(filepath.Join(root, f))
			}
			r := run(t, certagentBin, append([]string{"renew", "--root", root}, tc.args...)...)
			out := r.stdout + r.stderr
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\n%s", r.code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for f, data := range before {
				if now, _ := os.ReadFile(filepath.Join(root, f)); string(now) != string(data) {
					t.Errorf("%s changed", f)
				}
			}
		})
	}
}
