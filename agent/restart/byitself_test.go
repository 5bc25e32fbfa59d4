package restart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// renewingServer serves apiserver.crt as kube-apiserver does: read from
// disk again after `after` handshakes (its file watch; never when 0), and
// at once after a restart (its manifest left the directory).
type renewingServer struct {
	mu         sync.Mutex
	cert       *tls.Certificate
	handshakes int
	restarted  bool
}

func startRenewingServer(t *testing.T, dir string, after int) (string, *renewingServer) {
	t.Helper()
	pkiDir := filepath.Join(dir, "etc/kubernetes/pki")
	load := func() *tls.Certificate {
		c, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "apiserver.crt"), filepath.Join(pkiDir, "apiserver.key"))
		if err != nil {
			t.Error(err)
		}
		return &c
	}
	s := &renewingServer{cert: load()}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// The kubelet: a manifest gone is a restart (out for 300 ms: the
	// 200 ms file check period of the test's config, times 1.5).
	go func() {
		for ctx.Err() == nil {
			if _, err := os.Stat(filepath.Join(dir, "etc/kubernetes/manifests/kube-apiserver.yaml")); err != nil {
				s.mu.Lock()
				s.restarted = true
				s.mu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.handshakes++
		if after > 0 && s.handshakes == after || s.restarted {
			s.cert = load()
		}
		return s.cert, nil
	}}
	return serveTLS(t, cfg).Addr().String(), s
}

// TestLoadedByItself: kube-apiserver renewals of certificates it reads
// anew by itself are confirmed without a restart once the new serving
// certificate shows (after a few handshakes, as its file watch would); a
// server that never shows it within restart.reloadWait is restarted, and
// so is one whose renewals include its etcd client pair, one where
// nothing renewed is served, or any with restart.reloadWait 0.
func TestLoadedByItself(t *testing.T) {
	for _, tc := range []struct {
		name       string
		after      int // handshakes before the server reloads (0: never)
		renewed    []string
		reloadWait string
		restarted  bool
		fallback   bool // the wait ran out
	}{
		{name: "reloads", after: 3, renewed: []string{"apiserver", "apiserver-kubelet-client", "front-proxy-client"}},
		{name: "never reloads", renewed: []string{"apiserver"}, restarted: true, fallback: true},
		{name: "etcd client renewed", after: 1, renewed: []string{"apiserver", "apiserver-etcd-client"}, restarted: true},
		{name: "nothing served renewed", after: 1, renewed: []string{"apiserver-kubelet-client"}, restarted: true},
		{name: "reloadWait 0", after: 1, renewed: []string{"apiserver"}, reloadWait: "0s", restarted: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			node, err := (pkitest.Layout{}).Write(dir)
			if err != nil {
				t.Fatal(err)
			}
			manifests := filepath.Join(dir, "etc/kubernetes/manifests")
			os.MkdirAll(manifests, 0o755)
			os.WriteFile(filepath.Join(manifests, "kube-apiserver.yaml"), []byte("apiVersion: v1\nkind: Pod\n"), 0o600)
			addr, srv := startRenewingServer(t, dir, tc.after)
			// The renewal: a new pair on disk.
			crt, key, err := node.CA.Issue(pkitest.Spec{CommonName: "kube-apiserver", NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			pkiDir := filepath.Join(dir, "etc/kubernetes/pki")
			os.WriteFile(filepath.Join(pkiDir, "apiserver.crt"), pkitest.CertPEM(crt), 0o644)
			os.WriteFile(filepath.Join(pkiDir, "apiserver.key"), pkitest.KeyPEM(key), 0o600)
			var renewed []Renewed
			for _, n := range tc.renewed {
				rn := Renewed{Cert: &inventory.Certificate{Name: n}}
				if n == "apiserver" {
					rn.NewSerial = strings.ToUpper(crt.SerialNumber.Text(16))
				}
				renewed = append(renewed, rn)
			}
			wait := tc.reloadWait
			if wait == "" {
				wait = "2s"
			}
			cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n" +
				"restart: {fileCheckFrequency: 200ms, timeout: 5s, settle: 0s, reloadWait: " + wait + ", endpoints: {kube-apiserver: \"" + addr + "\"}}\n"))
			if err != nil {
				t.Fatal(err)
			}
			root, _ := pki.NewRoot(dir)
			log, hook := test.NewNullLogger()
			r := &Restarter{Root: root, Clock: clock.RealClock{}, Log: log}
			if failed := r.Restart(context.Background(), cfg, renewed, nil); len(failed) > 0 {
				t.Fatalf("failed: %v", failed)
			}
			var msgs []string
			for _, e := range hook.AllEntries() {
				msgs = append(msgs, e.Message)
			}
			all := strings.Join(msgs, "\n")
			srv.mu.Lock()
			restarted, n := srv.restarted, srv.handshakes
			srv.mu.Unlock()
			if restarted != tc.restarted || hasEntry(hook, logrus.InfoLevel, "restarted; the new certificate is served") != tc.restarted ||
				hasEntry(hook, logrus.InfoLevel, reloadedMsg) == tc.restarted {
				t.Errorf("restarted %v, want %v:\n%s", restarted, tc.restarted, all)
			}
			if got := strings.Contains(all, "the renewed certificate does not show: restarting"); got != tc.fallback {
				t.Errorf("waited for a reload that never came: %v, want %v:\n%s", got, tc.fallback, all)
			}
			if !tc.restarted && n < tc.after {
				t.Errorf("confirmed after %d handshakes, before the server reloaded (%d)", n, tc.after)
			}
			want := api.ActionReload
			if tc.restarted {
				want = api.ActionRestart
			}
			if s := r.Results(cfg); len(s) != 1 || s[0].LastResult != "ok" || s[0].LastAction != want {
				t.Errorf("results %+v, want lastAction %s", s, want)
			}
		})
	}
}

// TestAPIServerLivez: kube-apiserver restarted for a certificate that no
// probe can see served (its etcd client pair) is confirmed only by its
// /livez: 200, or 401/403 where anonymous requests may not read it; a
// server that does not stay alive (it cannot reach etcd with the new
// pair) gets the old pair back.
func TestAPIServerLivez(t *testing.T) {
	for _, tc := range []struct {
		status     int
		rolledBack bool
	}{{200, false}, {401, false}, {403, false}, {500, true}} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			dir := t.TempDir()
			manifests := filepath.Join(dir, "etc/kubernetes/manifests")
			os.MkdirAll(manifests, 0o755)
			os.WriteFile(filepath.Join(manifests, "kube-apiserver.yaml"), []byte("apiVersion: v1\nkind: Pod\n"), 0o600)
			var mu sync.Mutex
			var paths []string
			ln := serveHTTPS(t, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				paths = append(paths, r.URL.Path)
				mu.Unlock()
				w.WriteHeader(tc.status)
			})
			cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n" +
				"restart: {fileCheckFrequency: 10ms, timeout: 1s, settle: 0s, endpoints: {kube-apiserver: \"" + ln.Addr().String() + "\"}}\n"))
			if err != nil {
				t.Fatal(err)
			}
			root, _ := pki.NewRoot(dir)
			log, _ := test.NewNullLogger()
			r := &Restarter{Root: root, Clock: clock.RealClock{}, Log: log}
			rolledBack := false
			renewed := []Renewed{{Cert: &inventory.Certificate{Name: "apiserver-etcd-client"}, Rollback: func() error { rolledBack = true; return nil }}}
			failed := r.Restart(context.Background(), cfg, renewed, nil)
			if got := failed["apiserver-etcd-client"] != nil; got != tc.rolledBack || rolledBack != tc.rolledBack {
				t.Errorf("failed %v, rolled back %v; want %v", failed, rolledBack, tc.rolledBack)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(paths) == 0 || paths[0] != "/livez" {
				t.Errorf("asked %v, want /livez", paths)
			}
		})
	}
}

// selfSigned is a serving pair of a throwaway CA.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	ca, err := pkitest.NewCA("livez-test", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := ca.Issue(pkitest.Spec{CommonName: "kube-apiserver", NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(pkitest.CertPEM(crt), pkitest.KeyPEM(key))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// TestConfirmRestarted: a static pod the kubelet restarts for its
// changed manifest is confirmed by its health check after the file check
// period, not restarted again (its manifest never leaves); unhealthy, it
// is not confirmed; without a manifest there is nothing to confirm.
func TestConfirmRestarted(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		manifest bool
		fails    bool
	}{{"healthy", 200, true, false}, {"unhealthy", 500, true, true}, {"no manifest", 500, false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			manifests := filepath.Join(dir, "etc/kubernetes/manifests")
			os.MkdirAll(manifests, 0o755)
			if tc.manifest {
				os.WriteFile(filepath.Join(manifests, "kube-controller-manager.yaml"), []byte("kind: Pod\n"), 0o600)
			}
			ln := serveHTTPS(t, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(tc.status) })
			cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n" +
				"restart: {fileCheckFrequency: 10ms, timeout: 500ms, settle: 100ms, endpoints: {kube-controller-manager: \"" + ln.Addr().String() + "\"}}\n"))
			if err != nil {
				t.Fatal(err)
			}
			root, _ := pki.NewRoot(dir)
			log, _ := test.NewNullLogger()
			r := &Restarter{Root: root, Clock: clock.RealClock{}, Log: log}
			err = r.ConfirmRestarted(context.Background(), cfg, []string{"kube-controller-manager"}, nil)["kube-controller-manager"]
			if (err != nil) != tc.fails {
				t.Errorf("error %v, want failure %v", err, tc.fails)
			}
			if _, err := os.Stat(filepath.Join(manifests, ".certagent-kube-controller-manager.yaml")); err == nil {
				t.Error("the manifest was moved: a restart")
			}
		})
	}
}

// TestStopDuringReloadWait: a daemon stopped while it waits for a
// renewed certificate to show neither restarts the component nor rolls
// the renewal back (nothing showed the new pair bad).
func TestStopDuringReloadWait(t *testing.T) {
	dir := t.TempDir()
	node, err := (pkitest.Layout{}).Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	manifests := filepath.Join(dir, "etc/kubernetes/manifests")
	os.MkdirAll(manifests, 0o755)
	os.WriteFile(filepath.Join(manifests, "kube-apiserver.yaml"), []byte("apiVersion: v1\nkind: Pod\n"), 0o600)
	addr, srv := startRenewingServer(t, dir, 0) // never shows it
	crt, _, err := node.CA.Issue(pkitest.Spec{CommonName: "kube-apiserver", NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n" +
		"restart: {fileCheckFrequency: 200ms, timeout: 5s, reloadWait: 30s, endpoints: {kube-apiserver: \"" + addr + "\"}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	root, _ := pki.NewRoot(dir)
	log, hook := test.NewNullLogger()
	r := &Restarter{Root: root, Clock: clock.RealClock{}, Log: log}
	ctx, cancel := context.WithCancel(context.Background())
	rolledBack := false
	renewed := []Renewed{{Cert: &inventory.Certificate{Name: "apiserver"}, NewSerial: strings.ToUpper(crt.SerialNumber.Text(16)),
		Rollback: func() error { rolledBack = true; return nil }}}
	go func() {
		for { // stop once the wait has begun
			srv.mu.Lock()
			n := srv.handshakes
			srv.mu.Unlock()
			if n > 0 {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	failed := r.Restart(ctx, cfg, renewed, nil)
	srv.mu.Lock()
	restarted := srv.restarted
	srv.mu.Unlock()
	if len(failed) > 0 || rolledBack || restarted {
		t.Errorf("failed %v, rolled back %v, restarted %v", failed, rolledBack, restarted)
	}
	if !hasEntry(hook, logrus.WarnLevel, "stopped while waiting for the renewed certificate to show: neither restarted nor rolled back") {
		t.Error("the stop is not logged")
	}
}

// TestPeerEndpointUnseen: etcd's renewed server and peer pairs, the peer
// port not answering where certagent dials it (bound to the node's
// address): the client port showing the new serial is enough; a port
// that shows another serial is not, nor no port answering.
func TestPeerEndpointUnseen(t *testing.T) {
	dir := t.TempDir()
	if _, err := (pkitest.Layout{}).Write(dir); err != nil {
		t.Fatal(err)
	}
	pkiDir := filepath.Join(dir, "etc/kubernetes/pki")
	pair, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "etcd/server.crt"), filepath.Join(pkiDir, "etcd/server.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	serial := strings.ToUpper(leaf.SerialNumber.Text(16))
	client := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{pair}}).Addr().String()
	other := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}).Addr().String()
	closed := serveTLS(t, &tls.Config{Certificates: []tls.Certificate{pair}})
	down := closed.Addr().String()
	closed.Close()
	root, _ := pki.NewRoot(dir)
	r := &Restarter{Root: root, Clock: clock.RealClock{}}
	expect := map[string]string{"etcd-server": serial, "etcd-peer": serial}
	for _, tc := range []struct {
		name, client, peer string
		ok                 bool
	}{
		{"peer unseen", client, down, true},
		{"both new", client, client, true},
		{"peer other", client, other, false},
		{"none answers", down, down, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n" +
				"restart: {endpoints: {etcd: \"" + tc.client + "\", etcd-peer: \"" + tc.peer + "\"}}\n"))
			if err != nil {
				t.Fatal(err)
			}
			comp := components(cfg)[0]
			err = r.servesRenewed(context.Background(), comp, expect, r.clientsOf(cfg, comp))
			if (err == nil) != tc.ok {
				t.Errorf("error %v, want ok %v", err, tc.ok)
			}
		})
	}
}
