package integration

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestNoIdentityMintedFromUntrustedFiles: certagent holds the CA keys, so
// a certificate it re-signs must not be one that somebody else chose. Each
// case drops an expired certificate signed by the node's own CA (so a
// local CA could renew it) and runs `renew --all`; the ones certagent must
// leave alone stay byte-identical and check says why.
func TestNoIdentityMintedFromUntrustedFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: files owned by another user")
	}
	const user = 4242 // an unprivileged user who can write one place
	tests := []struct {
		name   string
		dir    string // node directory of the dropped certificate
		org    []string
		owner  int    // uid owning dir and files; 0 for root
		config string // extra config lines
		renew  bool   // true: certagent may renew it
		why    string // with renew false: the reason check gives
	}{
		{name: "cluster-admin in a configured path", dir: "/srv/creds", org: []string{"system:masters"}, owner: user,
			config: "paths: [/srv/creds]\nrenewal: {localCAPaths: ['/srv/creds/*']}\n", why: "privileged group system:masters"},
		{name: "cluster-admin, opted in, root-owned", dir: "/srv/creds", org: []string{"kubeadm:cluster-admins"},
			config: "paths: [/srv/creds]\nrenewal: {localCAPaths: ['/srv/creds/*']}\n", why: "privileged group kubeadm:cluster-admins"},
		{name: "cluster-admin in the PKI directory", dir: "/etc/kubernetes/pki", org: []string{"system:masters"},
			why: "privileged group system:masters"},
		{name: "configured path without opt-in", dir: "/srv/creds", org: []string{"dev"},
			config: "paths: [/srv/creds]\n", why: "needs renewal.localCAPaths"},
		{name: "opted in but writable by a user", dir: "/srv/creds", org: []string{"dev"}, owner: user,
			config: "paths: [/srv/creds]\nrenewal: {localCAPaths: ['/srv/creds/*']}\n", why: "owned and writable by uid 4242"},
		{name: "opted in, root-owned", dir: "/srv/creds", org: []string{"dev"},
			config: "paths: [/srv/creds]\nrenewal: {localCAPaths: ['/srv/creds/*']}\n", renew: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			n, err := (pkitest.Layout{}).Write(root)
			must(t, err)
			dir := filepath.Join(root, tc.dir)
			must(t, os.MkdirAll(dir, 0o755))
			c, k, err := n.CA.Issue(pkitest.Spec{CommonName: "mallory", Organization: tc.org,
				NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			must(t, err)
			crt, key := filepath.Join(dir, "mallory.crt"), filepath.Join(dir, "mallory.key")
			must(t, os.WriteFile(crt, pkitest.CertPEM(c), 0o644))
			must(t, os.WriteFile(key, pkitest.KeyPEM(k), 0o600))
			if tc.owner != 0 {
				for _, p := range []string{dir, crt, key} {
					must(t, os.Chown(p, tc.owner, tc.owner))
				}
			}
			if tc.config != "" {
				must(t, os.MkdirAll(filepath.Join(root, "etc/certagent"), 0o755))
				must(t, os.WriteFile(filepath.Join(root, "etc/certagent/config.yaml"),
					[]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n"+tc.config), 0o644))
			}
			before, _ := os.ReadFile(crt)

			chk := run(t, certagentBin, "check", "--root", root)
			r := run(t, certagentBin, "renew", "--root", root, "--all")
			after, _ := os.ReadFile(crt)
			renewed := string(after) != string(before)
			if renewed != tc.renew {
				t.Fatalf("renewed=%v, want %v\ncheck:\n%s\nrenew (exit %d):\n%s%s", renewed, tc.renew, chk.stdout, r.code, r.stdout, r.stderr)
			}
			if !tc.renew {
				if !strings.Contains(chk.stdout, "leaves it alone") || !strings.Contains(chk.stdout, tc.why) {
					t.Errorf("check does not say why (want %q):\n%s", tc.why, chk.stdout)
				}
				if !strings.Contains(r.stdout, "left alone") {
					t.Errorf("renew --all does not say it left it alone:\n%s", r.stdout)
				}
			}
			// admin.conf holds a privileged identity where kubeadm keeps it,
			// and stays renewable.
			if r := run(t, certagentBin, "renew", "--root", root, "admin.conf", "apiserver-kubelet-client"); r.code != 0 {
				t.Errorf("kubeadm's own privileged files: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

// TestLeftAloneInTheJournal: the daemon says once, in the journal and in
// status, why it leaves a certificate alone.
func TestLeftAloneInTheJournal(t *testing.T) {
	root := t.TempDir()
	n, err := (pkitest.Layout{}).Write(root)
	must(t, err)
	dir := filepath.Join(root, "etc/kubernetes/pki")
	ca := n.CA
	c, k, err := ca.Issue(pkitest.Spec{CommonName: "mallory", Organization: []string{"system:masters"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(time.Hour)})
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "mallory.crt"), pkitest.CertPEM(c), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "mallory.key"), pkitest.KeyPEM(k), 0o600))
	d := startDaemon(t, certagentBin, root, nil)
	if !strings.Contains(d.log(), "certificate left alone") || !strings.Contains(d.log(), "system:masters") {
		t.Errorf("the journal does not say why:\n%s", d.log())
	}
	s := run(t, certagentBin, "status", "--root", root, "-o", "json")
	if !strings.Contains(s.stdout, `"left alone: its subject is in the privileged group system:masters`) {
		t.Errorf("status does not say why:\n%s", s.stdout)
	}
}
