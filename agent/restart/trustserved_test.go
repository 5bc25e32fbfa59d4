package restart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// reloadingServer is a kube-apiserver-like endpoint: it asks for client
// certificates of the CAs in pool, and takes the bundles on disk as its
// pool again after `after` handshakes (never when after is 0).
type reloadingServer struct {
	mu         sync.Mutex
	pool       *x509.CertPool
	handshakes int
}

func startReloadingServer(t *testing.T, dir string, after int) (string, *reloadingServer) {
	t.Helper()
	load := func() *x509.CertPool {
		p := x509.NewCertPool()
		for _, f := range []string{"ca.crt", "front-proxy-ca.crt"} {
			b, err := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki", f))
			if err != nil {
				t.Error(err)
			}
			p.AppendCertsFromPEM(b)
		}
		return p
	}
	crt, err := tls.LoadX509KeyPair(filepath.Join(dir, "etc/kubernetes/pki/apiserver.crt"), filepath.Join(dir, "etc/kubernetes/pki/apiserver.key"))
	if err != nil {
		t.Fatal(err)
	}
	s := &reloadingServer{pool: load()}
	base := &tls.Config{Certificates: []tls.Certificate{crt}, ClientAuth: tls.RequestClientCert}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.handshakes++
		if after > 0 && s.handshakes == after {
			s.pool = load()
		}
		c := base.Clone()
		c.GetConfigForClient, c.ClientCAs = nil, s.pool
		return c, nil
	}
	return serveTLS(t, base).Addr().String(), s
}

// TestReloadTrust: a CA rotation adds a CA of the same subject to ca.crt.
// A kube-apiserver that shows the new bundle in its handshake (after a
// few, as its file watch would) is confirmed without a restart; one that
// never does within restart.reloadWait is restarted. A restart for other
// reasons (RestartComponents) never waits for a reload.
func TestReloadTrust(t *testing.T) {
	for _, tc := range []struct {
		name      string
		after     int // handshakes before the server reloads (0: never)
		reload    bool
		restarted bool
		// sameCA: front-proxy-ca.crt is ca.crt (one pool entry on the
		// server, two files on disk); the change is finish's (old+new to
		// new), which a count over the files would take for loaded.
		sameCA bool
		flags  string // the manifest's flags (default kubeadm's)
	}{
		{name: "reloads", after: 3, reload: true},
		{name: "never reloads", restarted: true, reload: true},
		{name: "not a trust change", after: 1, restarted: true},
		{name: "one CA in both bundles, never reloads", restarted: true, reload: true, sameCA: true},
		{name: "no client CA flag", after: 1, restarted: true, reload: true, flags: "- --requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			node, err := (pkitest.Layout{}).Write(dir)
			if err != nil {
				t.Fatal(err)
			}
			next, err := pkitest.NewCA(node.CA.Cert.Subject.CommonName, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), pkitest.ECDSA)
			if err != nil {
				t.Fatal(err)
			}
			write := func(f string, certs ...*x509.Certificate) {
				if err := os.WriteFile(filepath.Join(dir, "etc/kubernetes/pki", f), pkitest.CertPEM(certs...), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.sameCA {
				write("ca.crt", node.CA.Cert, next.Cert)
				write("front-proxy-ca.crt", node.CA.Cert, next.Cert)
			}
			addr, srv := startReloadingServer(t, dir, tc.after)
			if tc.sameCA { // finish
				write("ca.crt", next.Cert)
				write("front-proxy-ca.crt", next.Cert)
			} else { // trust: a second CA of the cluster CA's subject
				write("ca.crt", node.CA.Cert, next.Cert)
			}
			manifests := filepath.Join(dir, "etc/kubernetes/manifests")
			os.MkdirAll(manifests, 0o755)
			flags := tc.flags
			if flags == "" {
				flags = "- --client-ca-file=/etc/kubernetes/pki/ca.crt\n- --requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt\n"
			}
			os.WriteFile(filepath.Join(manifests, "kube-apiserver.yaml"), []byte("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n"+flags), 0o600)
			cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n" +
				"restart: {fileCheckFrequency: 10ms, timeout: 5s, reloadWait: 3s, endpoints: {kube-apiserver: \"" + addr + "\"}}\n"))
			if err != nil {
				t.Fatal(err)
			}
			root, _ := pki.NewRoot(dir)
			log, hook := test.NewNullLogger()
			r := &Restarter{Root: root, Clock: clock.RealClock{}, Log: log}
			restart := r.RestartComponents
			if tc.reload {
				restart = r.ReloadTrust
			}
			if err := restart(context.Background(), cfg, []string{"kube-apiserver"}, nil)["kube-apiserver"]; err != nil {
				t.Fatal(err)
			}
			var msgs []string
			for _, e := range hook.AllEntries() {
				msgs = append(msgs, e.Message)
			}
			all := strings.Join(msgs, "\n")
			notRestarted := strings.Contains(all, "loaded the changed trust bundles by itself: not restarted")
			if notRestarted == tc.restarted || strings.Contains(all, "restarted to load changed trust bundles") != tc.restarted {
				t.Errorf("restarted %v, want %v:\n%s", !notRestarted, tc.restarted, all)
			}
			srv.mu.Lock()
			n := srv.handshakes
			srv.mu.Unlock()
			if tc.name == "reloads" && n < tc.after {
				t.Errorf("confirmed after %d handshakes, before the server reloaded (%d)", n, tc.after)
			}
			if s := r.Results(cfg); len(s) != 1 || s[0].LastResult != "ok" {
				t.Errorf("results %+v", s)
			}
			if tc.restarted && tc.reload && !hasEntry(hook, logrus.InfoLevel, "the changed trust bundles do not show: restarting") {
				t.Errorf("the fallback is not logged:\n%s", all)
			}
		})
	}
}

func hasEntry(h *test.Hook, level logrus.Level, msg string) bool {
	for _, e := range h.AllEntries() {
		if e.Level == level && e.Message == msg {
			return true
		}
	}
	return false
}
