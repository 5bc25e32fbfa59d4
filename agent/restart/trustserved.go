package restart

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"path"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
)

// reloaded waits, for at most restart.reloadWait, until comp shows the
// trust bundles now on disk (trustServed; it answers, so it is up): then
// it loaded them by itself and needs no restart. The error says why not (a
// component with no ClientCAs never does).
func (r *Restarter) reloaded(ctx context.Context, cfg *config.Config, comp component, ping func()) error {
	if len(comp.ClientCAs) == 0 || len(comp.Served) == 0 {
		return errors.New("it does not reload its trust bundles by itself")
	}
	if cfg.Restart.ReloadWaitDuration <= 0 {
		return errors.New("restart.reloadWait is 0")
	}
	deadline := r.Clock.Now().Add(cfg.Restart.ReloadWaitDuration)
	for {
		err := r.trustServed(ctx, cfg, comp)
		if err == nil || !r.Clock.Now().Before(deadline) {
			if err != nil {
				err = fmt.Errorf("after %s: %w", cfg.Restart.ReloadWaitDuration, err)
			}
			return err
		}
		if ping != nil {
			ping()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.Clock.After(500 * time.Millisecond):
		}
	}
}

// trustServed compares the CAs comp's first served endpoint names as
// acceptable for client certificates (the certificate_authorities of its
// TLS certificate request) with the certificates of comp.ClientCAs on
// disk, as multisets of subjects. A CA rotation adds to a bundle a CA of
// the same subject, or takes one away: the count of each subject tells
// whether the server holds the bundle as on disk.
func (r *Restarter) trustServed(ctx context.Context, cfg *config.Config, comp component) error {
	want := map[string]int{}
	n := 0
	for _, f := range comp.ClientCAs {
		file, err := r.Root.ReadFile(path.Join(cfg.PKIDir, f))
		if err != nil {
			return fmt.Errorf("trust bundle: %w", err)
		}
		b, err := pki.ParseBundle(file.Data)
		if err != nil {
			return fmt.Errorf("trust bundle %s: %w", file.Path, err)
		}
		for _, c := range b.Certs {
			want[string(c.RawSubject)]++
			n++
		}
	}
	addr := comp.Served[0].Address
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
