package restart

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/certagent/certagent/agent/config"
)

// etcdProbeClient is the key pair, below the PKI directory, that the
// served-certificate probe presents to etcd: kubeadm's etcd requires client
// certificates (--client-cert-auth, --peer-client-cert-auth) and issues
// this one, signed by the etcd CA, for exactly such health checks.
const etcdProbeClient = "etcd/healthcheck-client"

// probeHealthz passes when url answers 200, or, with authOK, 401 or 403.
func probeHealthz(ctx context.Context, url string, authOK bool) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("healthz: %w", err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case authOK && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden):
		return nil
	}
	return fmt.Errorf("healthz %s: HTTP %d", url, resp.StatusCode)
}

// clientCert loads the client key pair named stem (see served.Client)
// through the confined root reader, never from a host path. A zero
// clientPair means none is configured for the endpoint; one with err set
// could not be loaded: the probe then dials without a client certificate
// and reports err if the handshake fails.
func (r *Restarter) clientCert(cfg *config.Config, stem string) clientPair {
	if stem == "" || r.Root == nil {
		return clientPair{}
	}
	p := path.Join(cfg.PKIDir, stem)
	crt, err := r.Root.ReadFile(p + ".crt")
	if err != nil {
		return clientPair{err: fmt.Errorf("client certificate: %w", err)}
	}
	key, err := r.Root.ReadFile(p + ".key")
	if err != nil {
		return clientPair{err: fmt.Errorf("client key: %w", err)}
	}
	pair, err := tls.X509KeyPair(crt.Data, key.Data)
	if err != nil {
		return clientPair{err: fmt.Errorf("client key pair %s: %w", p, err)}
	}
	return clientPair{cert: &pair}
}

// clientPair is a loaded client key pair, or why it could not be loaded
// (both zero: none configured).
type clientPair struct {
	cert *tls.Certificate
	err  error
}

// servedSerial dials a TLS endpoint and returns the serial of the leaf it
// presents: the automated `openssl s_client | openssl x509 -serial`. The
// chain is not verified here; the serial is compared with the disk. The
// client pair, when loaded, is presented whenever the server asks for one.
func servedSerial(ctx context.Context, addr string, client clientPair) (string, error) {
	cfg := &tls.Config{InsecureSkipVerify: true}
	if client.cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client.cert, nil }
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: cfg}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		if client.err != nil {
			return "", fmt.Errorf("%w (no client certificate presented: %v)", err, client.err)
		}
		return "", err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", fmt.Errorf("%s presented no certificate", addr)
	}
	return strings.ToUpper(certs[0].SerialNumber.Text(16)), nil
}

// EtcdClientTLS is how the coordination asks etcd for its members: it
// presents the healthcheck client pair and accepts a server whose chain
// leads to etcd's CA (<pkiDir>/etcd/ca.crt), judged at a moment inside the
// server certificate's validity: an expired etcd certificate is what the
// restart is about to fix, so it must not stop the check. Both files are
// read through the confined root.
func (r *Restarter) EtcdClientTLS(cfg *config.Config) (*tls.Config, error) {
	client := r.clientCert(cfg, etcdProbeClient)
	if client.err != nil {
		return nil, client.err
	}
	if client.cert == nil {
		return nil, fmt.Errorf("no etcd client certificate")
	}
	ca, err := r.Root.ReadFile(path.Join(cfg.PKIDir, "etcd/ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("etcd CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.Data) {
		return nil, fmt.Errorf("etcd CA %s: no certificate", ca.Path)
	}
	pair := client.cert
	return &tls.Config{
		InsecureSkipVerify:   true, // verified below, without the clock
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return pair, nil },
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("etcd presented no certificate")
			}
			leaf, inter := cs.PeerCertificates[0], x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
				CurrentTime: leaf.NotBefore.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}, nil
}
