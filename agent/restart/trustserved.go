package restart

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"path"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// reloaded waits, for at most restart.reloadWait, until comp shows the
// trust bundles now on disk (trustServed: it answers, so it is up): then
// it loaded them by itself and needs no restart. The error says why not (a
// component without ClientCAFlags never does).
func (r *Restarter) reloaded(ctx context.Context, cfg *config.Config, comp component, ping func()) error {
	if len(comp.ClientCAFlags) == 0 || len(comp.Served) == 0 || comp.Manifest == "" {
		return errors.New("it does not reload its trust bundles by itself")
	}
	if cfg.Restart.ReloadWaitDuration <= 0 {
		return errors.New("restart.reloadWait is 0")
	}
	want, n, err := r.clientCAsOnDisk(cfg, comp) // read once: the loop waits for the server only
	if err != nil {
		return err
	}
	return r.poll(ctx, cfg.Restart.ReloadWaitDuration, ping, func() error { return trustServed(ctx, comp.Served[0].Address, want, n) })
}

// clientCAsOnDisk counts, by subject, the certificates of the bundles
// comp's manifest names in its ClientCAFlags (a certificate in two
// bundles counts once: the server's pool holds it once); n is their
// number.
func (r *Restarter) clientCAsOnDisk(cfg *config.Config, comp component) (want map[string]int, n int, err error) {
	m, err := r.Root.ReadFile(path.Join(cfg.Restart.ManifestsDir, comp.Manifest))
	if err != nil {
		return nil, 0, fmt.Errorf("manifest: %w", err)
	}
	want, seen := map[string]int{}, map[string]bool{}
	for i, flag := range comp.ClientCAFlags {
		file, err := rotate.FlagValue(m.Data, flag)
		switch {
		case err != nil && i > 0 && !bytes.Contains(m.Data, []byte("--"+flag+"=")):
			continue // an optional bundle, not given
		case err != nil:
			return nil, 0, fmt.Errorf("%s: %w", m.Path, err)
		case !path.IsAbs(file):
			return nil, 0, fmt.Errorf("%s: --%s=%s is not an absolute path", m.Path, flag, file)
		}
		f, err := r.Root.ReadFile(file)
		if err != nil {
			return nil, 0, fmt.Errorf("trust bundle: %w", err)
		}
		b, err := pki.ParseBundle(f.Data)
		if err != nil {
			return nil, 0, fmt.Errorf("trust bundle %s: %w", f.Path, err)
		}
		for _, c := range b.Certs {
			if !seen[string(c.Raw)] {
				seen[string(c.Raw)] = true
				want[string(c.RawSubject)]++
				n++
			}
		}
	}
	return want, n, nil
}

// trustServed compares the CAs the server at addr names as acceptable for
// client certificates (the certificate_authorities of its TLS certificate
// request) with want (clientCAsOnDisk), as multisets of subjects. A CA
// rotation adds to a bundle a CA of the same subject, or takes one away:
// the count of each subject tells whether the server holds the bundles
// as on disk.
func trustServed(ctx context.Context, addr string, want map[string]int, n int) error {
	got, err := acceptableCAs(ctx, addr)
	if err != nil {
		return err
	}
	have := map[string]int{}
	for _, s := range got {
		have[string(s)]++
	}
	if !maps.Equal(want, have) {
		return fmt.Errorf("%s accepts client certificates of %d CAs, the bundles on disk hold %d (or other subjects)", addr, len(got), n)
	}
	return nil
}

// acceptableCAs dials addr and returns the subjects (DER) of the CAs the
// server names in its request for a client certificate. No client
// certificate is presented.
func acceptableCAs(ctx context.Context, addr string) ([][]byte, error) {
	var cas [][]byte
	asked := false
	cfg := &tls.Config{InsecureSkipVerify: true, // only the request is read
		GetClientCertificate: func(i *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked, cas = true, append([][]byte(nil), i.AcceptableCAs...)
			return &tls.Certificate{}, nil
		}}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: cfg}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr)
	if conn != nil {
		conn.Close()
	}
	if !asked {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s asks for no client certificate", addr)
	}
	return cas, nil
}
