package restart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// clientAuthServer is an etcd-like TLS endpoint that requires a client
// certificate of the etcd CA; it records the common name of every client
// certificate it accepted.
type clientAuthServer struct {
	addr, serial string
	mu           sync.Mutex
	clients      []string
}

// serveTLS listens on loopback with cfg and answers every HTTP request
// 200 (kube-apiserver's /livez); a client may also only handshake.
func serveTLS(t *testing.T, cfg *tls.Config) net.Listener {
	return serveHTTPS(t, cfg, func(http.ResponseWriter, *http.Request) {})
}

// serveHTTPS is serveTLS with h answering the requests.
func serveHTTPS(t *testing.T, cfg *tls.Config, h http.HandlerFunc) net.Listener {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadTimeout: 3 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	t.Cleanup(func() { srv.Close() })
	go srv.Serve(ln)
	return ln
}

func startClientAuthServer(t *testing.T, dir string, maxVersion uint16) *clientAuthServer {
	t.Helper()
	read := func(p string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki", p))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cert, err := tls.X509KeyPair(read("etcd/server.crt"), read("etcd/server.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(read("etcd/ca.crt"))
	s := &clientAuthServer{}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
		MaxVersion: maxVersion,
		VerifyConnection: func(cs tls.ConnectionState) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.clients = append(s.clients, cs.PeerCertificates[0].Subject.CommonName)
			return nil
		}}
	ln := serveTLS(t, cfg)
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	s.addr, s.serial = ln.Addr().String(), strings.ToUpper(leaf.SerialNumber.Text(16))
	return s
}

// TestEtcdProbePresentsHealthcheckClient: etcd requires client
// certificates; the served-certificate probe presents kubeadm's
// healthcheck client (read through the root), so the state is match or
// mismatch, not not-serving. Without that key pair a TLS 1.2 etcd refuses
// the handshake, which is what the probe reported before.
func TestEtcdProbePresentsHealthcheckClient(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxVersion uint16
		noClient   bool
		want       string
	}{
		{name: "TLS 1.3", maxVersion: tls.VersionTLS13, want: "match"},
		{name: "TLS 1.2", maxVersion: tls.VersionTLS12, want: "match"},
		{name: "TLS 1.2 without the healthcheck client", maxVersion: tls.VersionTLS12, noClient: true, want: "not-serving"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := (pkitest.Layout{}).Write(dir); err != nil {
				t.Fatal(err)
			}
			srv := startClientAuthServer(t, dir, tc.maxVersion)
			if tc.noClient {
				os.Remove(filepath.Join(dir, "etc/kubernetes/pki/etcd/healthcheck-client.key"))
			}
			root, err := pki.NewRoot(dir)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nrestart: {endpoints: {etcd: \"" + srv.addr + "\"}}\n"))
			if err != nil {
				t.Fatal(err)
			}
			r := &Restarter{Root: root, Clock: testingclock.NewFakeClock(time.Now())}
			state := func(disk string) api.ServedStatus {
				rep := &inventory.Report{Certificates: []*inventory.Certificate{{Name: "etcd-server", Serial: disk}}}
				for _, c := range r.Check(context.Background(), cfg, rep, map[string]time.Time{}) {
					if c.Name == "etcd" {
						return c.Served[0]
					}
				}
				t.Fatal("no etcd status")
				return api.ServedStatus{}
			}
			got := state(srv.serial)
			if got.State != tc.want {
				t.Fatalf("state %s (%s), want %s", got.State, got.Error, tc.want)
			}
			if tc.noClient {
				if !strings.Contains(got.Error, "client key") {
					t.Errorf("the error does not say the client key was missing: %s", got.Error)
				}
				return
			}
			if s := state("ABC"); s.State != "mismatch" || s.ServedSerial != srv.serial {
				t.Errorf("renewed on disk: %+v, want mismatch serving %s", s, srv.serial)
			}
			// The restart path's check uses the same probe.
			comp := components(cfg)[0]
			if err := r.healthy(context.Background(), comp, map[string]string{"etcd-server": srv.serial}, r.clientsOf(cfg, comp)); err != nil {
				t.Errorf("healthy: %v", err)
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if len(srv.clients) == 0 || srv.clients[0] != "kube-etcd-healthcheck-client" {
				t.Errorf("etcd saw client certificates %v, want kube-etcd-healthcheck-client", srv.clients)
			}
		})
	}
}
