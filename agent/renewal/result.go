package renewal

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Result is the outcome of renewing one certificate, whichever way it was
// renewed (the local-CA transaction, a new self-signed pair, a CSR, or the
// re-issue of an expired kubelet client certificate): what the agent keeps
// in its state, counts, logs, reports and restarts.
type Result struct {
	// Cert is the certificate as it was before the renewal.
	Cert *inventory.Certificate
	// Method is "local-ca", "self-signed", "csr" or "csr-bootstrap".
	Method string
	// How says how in an Event: "from the local CA", "(csr)".
	How string
	// CSR names the request made, if any; Requests counts the API calls.
	CSR      string
	Requests int64
	// Started and Finished time a renewal through the cluster.
	Started, Finished time.Time

	OldSerial, NewSerial string
	NotAfter             time.Time
	// Backup is the transaction's backup directory ("" for the kubelet's
	// store, which keeps the old file itself).
	Backup string
	// Err is why it failed; nothing else but Cert, Method and CSR is set
	// then.
	Err error
	// Rollback puts the old certificate back.
	Rollback func() error
}

// Name is the certificate's name.
func (r Result) Name() string { return r.Cert.Name }

// Renewed is the result as the restarts take it.
func (r Result) Renewed() restart.Renewed {
	return restart.Renewed{Cert: r.Cert, NewSerial: r.NewSerial, Rollback: r.Rollback}
}

// Failed is the result of an attempt at c that failed with err.
func Failed(c *inventory.Certificate, method string, err error) Result {
	return Result{Cert: c, Method: method, OldSerial: c.Serial, Err: err}
}

// LocalMethod names how the transaction renews c: from the local CA, or
// as a new self-signed pair (kubelet.crt).
func LocalMethod(c *inventory.Certificate) (method, how string) {
	if c.RenewalPath == inventory.RenewSelfSigned {
		return string(inventory.RenewSelfSigned), "as a new self-signed pair"
	}
	return string(inventory.RenewLocalCA), "from the local CA"
}

// fromRotate turns a transaction's result for c into a Result.
func fromRotate(root *pki.Root, c *inventory.Certificate, r rotate.Result) Result {
	method, how := LocalMethod(c)
	if r.Err != nil {
		return Failed(c, method, r.Err)
	}
	backup, name := r.Backup, r.Name
	return Result{Cert: c, Method: method, How: how, OldSerial: r.OldSerial, NewSerial: r.NewSerial,
		NotAfter: r.NotAfter, Backup: r.Backup,
		Rollback: func() error { return rotate.Restore(root, backup, name) }}
}

// CSRJob is one renewal through the cluster.
type CSRJob struct {
	Config *config.Config
	Cert   *inventory.Certificate
	// Report is the scan Cert comes from (its authorities: an expired
	// kubelet client certificate is re-issued from a local CA key).
	Report *inventory.Report
	// Timeout, when positive, replaces the configured wait for approval.
	Timeout time.Duration
	// PendingDir, a host directory, keeps the key of a request in flight,
	// so that a retry waits on the same request ("" keeps nothing).
	// ReusePending lets the job use a key kept there.
	PendingDir   string
	ReusePending bool
	// Waiting, when set, is called once the request exists, with its name.
	Waiting func(csr string)
	// NotFrom, when set, is a CA being rotated out (from the reissue
	// phase of a CA rotation on): an answer it signed is discarded (not
	// installed, nothing restarted) and the request asked again later.
	NotFrom *x509.Certificate
}

// CSRRenewer renews certificates through CertificateSigningRequests
// (csrrenew.Renewer).
type CSRRenewer interface {
	// RenewCSR runs the job; failures are in the result.
	RenewCSR(ctx context.Context, job CSRJob) Result
}

// AddCSR adds the lines of a CSR renewal: the request it made, then
// renewed or failed. The daemon and `certagent renew` print the same.
func (o *Outcome) AddCSR(r Result) {
	name := r.Name()
	if r.CSR != "" {
		o.Add("requested", name, "CSR %s; approve it with: kubectl certificate approve %s", r.CSR, r.CSR)
	}
	if r.Err != nil {
		o.Failed = true
		o.Add("failed", name, "%v", r.Err)
		return
	}
	how := "through CSR " + r.CSR
	if r.Method == "local-ca" {
		how = "from the local CA (the client certificate had expired)"
	}
	o.Add("renewed", name, "serial %s -> %s, valid until %s, %s", short(r.OldSerial), short(r.NewSerial), r.NotAfter.UTC().Format(time.RFC3339), how)
	o.Renewed = append(o.Renewed, r.Renewed())
}

func short(serial string) string {
	if len(serial) > 12 {
		return serial[:12] + "…"
	}
	return serial
}
