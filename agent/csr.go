package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"path"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// csrResult is what a CSR job reports back to the loop.
type csrResult struct {
	cert              *inventory.Certificate
	name, method      string
	csr               string // the request, once made
	oldSerial, serial string
	notAfter          time.Time
	requests          int64
	started, finished time.Time
	err               error
	rollback          func() error // puts the old certificate back
}

// csrUpdate tells the loop the name of the request a job waits for.
type csrUpdate struct{ name, csr string }

// ErrNoCredential: the node's client certificate expired and nothing else
// can authenticate it to the cluster.
var ErrNoCredential = errors.New("the kubelet client certificate has expired and no bootstrap kubeconfig works")

// recoverySteps is printed when certagent cannot recover a node alone.
func recoverySteps(node string, cfg *config.Config) string {
	return fmt.Sprintf("recover with: on a control-plane node run `kubeadm token create` and write a bootstrap kubeconfig with that token to %s "+
		"on this node (certagent then renews through it at once), or run `kubeadm kubeconfig user --org system:nodes --client-name system:node:%s` "+
		"there, copy the result to %s here and restart the kubelet", cfg.Kubelet.BootstrapKubeconfig, node, cfg.Kubelet.Kubeconfig)
}

// csrKind classifies a CSR-renewed certificate.
type csrKind int

const (
	kindKubeletClient csrKind = iota
	kindKubeletServing
	kindCustom
)

func kindOf(c *inventory.Certificate, cfg *config.Config) (csrKind, *config.CSRCertificate) {
	for i := range cfg.Certificates {
		if cfg.Certificates[i].Name == c.Name {
			return kindCustom, &cfg.Certificates[i]
		}
	}
	if c.Name == "kubelet-serving" || c.Name == "kubelet.crt" {
		return kindKubeletServing, nil
	}
	return kindKubeletClient, nil
}

// csrOwner says who renews a kubelet certificate, and when certagent steps
// in if the kubelet owns it: past 95 % of the lifetime, well beyond the
// kubelet's own 70-90 % window.
func (a *Agent) csrOwner(c *inventory.Certificate, k csrKind) (kubelet bool, stepIn time.Time, why string) {
	if k == kindCustom || c.Name == "kubelet.crt" {
		// The kubelet never rotates kubelet.crt: it only makes one at start.
		return false, time.Time{}, ""
	}
	switch a.cfg.Kubelet.Rotation {
	case "certagent":
		return false, time.Time{}, ""
	case "auto":
		s, err := readKubeletSettings(a.opts.Root, a.cfg.Kubelet.ConfigFile)
		if err != nil || (k == kindKubeletClient && !s.RotateCertificates) || (k == kindKubeletServing && !s.ServerTLSBootstrap) {
			return false, time.Time{}, ""
		}
		why = "the kubelet rotates it (rotateCertificates: true)"
		if k == kindKubeletServing {
			why = "the kubelet rotates it (serverTLSBootstrap: true)"
		}
	default:
		why = "the kubelet rotates it (kubelet.rotation: kubelet)"
	}
	life := c.NotAfter.Sub(c.NotBefore)
	return true, c.NotBefore.Add(life * 95 / 100), why
}

// startCSR runs one CSR renewal in the background; the loop hears back on
// csrDone. At most one job runs per certificate. timeout, when positive,
// replaces the configured wait for approval (a renew request's).
func (a *Agent) startCSR(ctx context.Context, c *inventory.Certificate, rep *inventory.Report, timeout time.Duration) {
	if _, running := a.csrJobs[c.Name]; running {
		return
	}
	a.csrJobs[c.Name] = ""
	job := CSRRenewal{Root: a.opts.Root, Config: a.cfg, Clock: a.opts.Clock, Timeout: timeout,
		Pending: pendingDir{dir: a.state.Dir(), skipLoad: a.state.Get(c.Name).PendingCSR == ""},
		Waiting: func(csr string) {
			select {
			case a.csrPending <- csrUpdate{name: c.Name, csr: csr}:
			case <-ctx.Done():
			}
		}}
	go func() {
		r := job.Run(ctx, c, rep)
		select {
		case a.csrDone <- r:
		case <-ctx.Done():
		}
	}()
}

// currentCert reads the certificate as it is on disk now.
func currentCert(root *pki.Root, c *inventory.Certificate) (*x509.Certificate, error) {
	f, err := root.ReadFile(c.Path)
	if err != nil {
		return nil, err
	}
	data := f.Data
	if c.Kind == inventory.KindKubeconfigEmbedded {
		creds, err := pki.ParseKubeconfig(f.Data, path.Dir(c.Path))
		if err != nil {
			return nil, err
		}
		data = nil
		for _, cr := range creds {
			if cr.User == c.User {
				data = cr.CertData
			}
		}
	}
	b, err := pki.ParseBundle(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Path, err)
	}
	return b.Certs[0], nil
}

// csrWaiting records the request a job waits for and says how to approve it.
func (a *Agent) csrWaiting(u csrUpdate) {
	if _, ok := a.csrJobs[u.name]; !ok {
		return
	}
	a.csrJobs[u.name] = u.csr
	st := a.state.Get(u.name)
	st.PendingCSR = u.csr
	a.state.Put(u.name, st)
	a.opts.Log.WithFields(map[string]any{"MESSAGE_ID": MsgCSRPending, "CERT_NAME": u.name, "CSR_NAME": u.csr,
		"REASON": "kubectl certificate approve " + u.csr}).Info("waiting for the certificate signing request")
}

// recordCSR keeps a CSR job's outcome like any renewal's.
func (a *Agent) recordCSR(ctx context.Context, r csrResult) {
	delete(a.csrJobs, r.name)
	defer func() {
		// Renew requests hear the end after the restarts.
		for _, ch := range a.csrWaiters[r.name] {
			ch <- r
		}
		delete(a.csrWaiters, r.name)
	}()
	now := a.opts.Clock.Now()
	rec := &api.CSRRecord{Name: r.name, Method: r.method, Seconds: r.finished.Sub(r.started).Seconds(), Requests: r.requests}
	c := r.cert
	if r.err != nil {
		rec.Error = r.err.Error()
	}
	a.mu.Lock()
	a.health.LastCSR = rec
	a.mu.Unlock()
	st := a.state.Get(r.name)
	if r.err == nil {
		a.state.Put(r.name, stateRenewed(r.serial, r.oldSerial, r.method, now))
		a.opts.Metrics.renewed(r.name, r.method, now)
		if a.opts.Metrics != nil {
			a.opts.Metrics.csrWait.Observe(rec.Seconds)
		}
		f := map[string]any{"MESSAGE_ID": MsgRenewed, "CERT_NAME": r.name, "SERIAL": r.oldSerial, "NEW_SERIAL": r.serial,
			"NEW_NOT_AFTER": r.notAfter.UTC().Format(time.RFC3339), "METHOD": r.method, "CSR_REQUESTS": r.requests}
		a.opts.Log.WithFields(f).Info("certificate renewed")
		a.opts.Reporter.Event(corev1.EventTypeNormal, "CertificateRenewed", fmt.Sprintf("certagent renewed %s (%s): serial %s -> %s, valid until %s", r.name, r.method, r.oldSerial, r.serial, r.notAfter.UTC().Format(time.RFC3339)))
		a.restart(ctx, []Renewed{{Cert: c, NewSerial: r.serial, Rollback: r.rollback}}, now)
		return
	}
	// Only a request that can never be issued is forgotten; after a
	// timeout or an unreachable API the next attempt waits for the same one.
	var denied *rotate.CSRDeniedError
	if errors.As(r.err, &denied) || errors.Is(r.err, rotate.ErrWrongKey) || errors.Is(r.err, rotate.ErrCSRGone) {
		st.PendingCSR = ""
	}
	a.fail(c, &st, r.err, now, r.method)
}
