package restart

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// serveOnce is a TLS endpoint that presents cert and requires a client
// certificate of clientCA; it returns its address and a channel with the
// common name of the client it accepted ("" when the handshake failed).
func serveOnce(t *testing.T, cert tls.Certificate, clientCA *x509.Certificate) (string, <-chan string) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(clientCA)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- ""
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := c.(*tls.Conn)
		if tc.Handshake() != nil || len(tc.ConnectionState().PeerCertificates) == 0 {
			got <- ""
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		c.Read(make([]byte, 1)) // until the client hangs up
	}()
	return ln.Addr().String(), got
}

// TestEtcdClientTLS: the quorum check's TLS presents the healthcheck
// client (read through the root) and accepts a server whose certificate
// chains to etcd's CA, even expired (the restart is what renews it), and
// nothing else: not another CA's, not the cluster CA's, not a certificate
// without server use.
func TestEtcdClientTLS(t *testing.T) {
	dir := t.TempDir()
	node, err := (pkitest.Layout{}).Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	other, err := pkitest.NewCA("etcd-ca", now.Add(-time.Hour), now.Add(time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	// Issued as kubeadm issues: from the CA's own start (an hour ago).
	server := func(ca *pkitest.CA, notAfter time.Time, use x509.ExtKeyUsage) tls.Certificate {
		c, k, err := ca.Issue(pkitest.Spec{CommonName: "node1", IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore: ca.Cert.NotBefore, NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{use}})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(pkitest.CertPEM(c), pkitest.KeyPEM(k))
		if err != nil {
			t.Fatal(err)
		}
		return pair
	}
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &Restarter{Root: root}
	cfg := config.Default()
	for _, tc := range []struct {
		name string
		cert tls.Certificate
		ok   bool
	}{
		{"etcd CA", server(node.EtcdCA, now.Add(time.Hour), x509.ExtKeyUsageServerAuth), true},
		{"etcd CA, expired", server(node.EtcdCA, now.Add(-time.Minute), x509.ExtKeyUsageServerAuth), true},
		{"another CA of the same name", server(other, now.Add(time.Hour), x509.ExtKeyUsageServerAuth), false},
		{"the cluster CA", server(node.CA, now.Add(time.Hour), x509.ExtKeyUsageServerAuth), false},
		{"etcd CA, client use only", server(node.EtcdCA, now.Add(time.Hour), x509.ExtKeyUsageClientAuth), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tlsCfg, err := r.EtcdClientTLS(cfg)
			if err != nil {
				t.Fatal(err)
			}
			addr, client := serveOnce(t, tc.cert, node.EtcdCA.Cert)
			conn, err := tls.Dial("tcp", addr, tlsCfg)
			if err == nil {
				err = conn.Handshake()
				conn.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("handshake: %v, want ok %v", err, tc.ok)
			}
			if tc.ok {
				if cn := <-client; cn != "kube-etcd-healthcheck-client" {
					t.Errorf("client presented %q, want the healthcheck client", cn)
				}
			}
		})
	}
	t.Run("no healthcheck client", func(t *testing.T) {
		os.Remove(filepath.Join(dir, "etc/kubernetes/pki/etcd/healthcheck-client.key"))
		if _, err := r.EtcdClientTLS(cfg); err == nil || !strings.Contains(err.Error(), "client key") {
			t.Errorf("without the key: %v", err)
		}
	})
}
