package agent

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// csrResult is what a CSR job reports back to the loop.
type csrResult struct {
	cert              *inventory.Certificate
	name, method      string
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
	if c.Name == "kubelet-serving" {
		return kindKubeletServing, nil
	}
	return kindKubeletClient, nil
}

// csrOwner says who renews a kubelet certificate, and when certagent steps
// in if the kubelet owns it: past 95 % of the lifetime, well beyond the
// kubelet's own 70-90 % window.
func (a *Agent) csrOwner(c *inventory.Certificate, k csrKind) (kubelet bool, stepIn time.Time, why string) {
	if k == kindCustom {
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
// csrDone. At most one job runs per certificate.
func (a *Agent) startCSR(ctx context.Context, c *inventory.Certificate, rep *inventory.Report) {
	if _, running := a.csrJobs[c.Name]; running {
		return
	}
	a.csrJobs[c.Name] = ""
	cfg := a.cfg
	st := a.state.Get(c.Name)
	go func() {
		r := a.runCSR(ctx, cfg, c, rep, st.PendingCSR)
		select {
		case a.csrDone <- r:
		case <-ctx.Done():
		}
	}()
}

// pendingKeyPath is where the key of a request in flight waits.
func (a *Agent) pendingKeyPath(name string) string {
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(a.state.Dir(), "pending-"+hex.EncodeToString(sum[:8])+".key")
}

// runCSR renews one certificate through the cluster (or, for an expired
// client certificate on a control-plane node, from the local CA).
func (a *Agent) runCSR(ctx context.Context, cfg *config.Config, c *inventory.Certificate, rep *inventory.Report, pendingName string) csrResult {
	now := a.opts.Clock.Now()
	r := csrResult{cert: c, name: c.Name, oldSerial: c.Serial, started: now, method: "csr"}
	fail := func(err error) csrResult { r.err, r.finished = err, a.opts.Clock.Now(); return r }
	root := a.opts.Root
	old, err := currentCert(root, c)
	if err != nil {
		return fail(err)
	}
	kind, custom := kindOf(c, cfg)
	node := cfg.Kubelet.NodeName
	if node == "" {
		node = nodeFromCN(old.Subject.CommonName)
	}
	kubeconfig, timeout := cfg.Kubelet.Kubeconfig, cfg.Kubelet.ClientCSRTimeoutDuration
	var spec rotate.CSRSpec
	switch kind {
	case kindKubeletClient:
		spec = rotate.KubeletClientSpec(node, false)
	case kindKubeletServing:
		spec = rotate.KubeletServingSpec(node, old.DNSNames, old.IPAddresses, false)
		timeout = cfg.Kubelet.ServingCSRTimeoutDuration
	case kindCustom:
		spec = rotate.CSRSpec{Subject: old.Subject, DNSNames: old.DNSNames, IPs: old.IPAddresses, SignerName: custom.SignerName}
		spec.Subject.ExtraNames = nil
		for _, u := range custom.Usages {
			spec.Usages = append(spec.Usages, certificatesv1.KeyUsage(u))
		}
		if custom.ExpirationSeconds > 0 {
			spec.Duration = time.Duration(custom.ExpirationSeconds) * time.Second
		}
		kubeconfig, timeout = custom.Kubeconfig, custom.TimeoutDuration
	}
	if kind == kindKubeletClient && now.After(old.NotAfter) {
		// The node cannot authenticate with an expired certificate.
		if ca := a.localCAFor(c, rep); ca != nil {
			r.method = "local-ca"
			key, err := rotate.NewKey(nil, "ecdsa-p256")
			if err != nil {
				return fail(err)
			}
			cert, err := ca.Reissue(old, key.Public(), now, old.NotAfter.Sub(old.NotBefore))
			if err != nil {
				return fail(err)
			}
			return a.finishCSR(r, c, cfg, []*x509.Certificate{cert}, key, poolOf(ca.Cert), now)
		}
		if _, err := root.ReadFile(cfg.Kubelet.BootstrapKubeconfig); err != nil {
			return fail(fmt.Errorf("%w; %s", ErrNoCredential, recoverySteps(node, cfg)))
		}
		kubeconfig, r.method = cfg.Kubelet.BootstrapKubeconfig, "csr-bootstrap"
	}
	counter := &requestCounter{}
	client, roots, err := kubeClient(root, kubeconfig, counter)
	if err != nil {
		return fail(err)
	}
	if kind == kindKubeletServing {
		spec.DNSNames, spec.IPs = a.nodeAddresses(ctx, client, node, spec.DNSNames, spec.IPs)
	}
	key := a.loadPendingKey(c.Name, pendingName)
	if key == nil {
		if key, err = rotate.NewKey(nil, "ecdsa-p256"); err != nil {
			return fail(err)
		}
	}
	p, err := rotate.RequestCSR(ctx, client, spec, key)
	if err != nil && pendingName != "" && strings.Contains(err.Error(), "not compatible") {
		// The old request no longer fits (made for other names, or its
		// certificate expired): start over with a new key. An API that
		// cannot be reached keeps the pending request for the next try.
		a.dropPending(c.Name)
		if key, err = rotate.NewKey(nil, "ecdsa-p256"); err == nil {
			p, err = rotate.RequestCSR(ctx, client, spec, key)
		}
	}
	if err != nil {
		r.requests = counter.n.Load()
		return fail(err)
	}
	if err := a.savePendingKey(c.Name, key); err != nil {
		return fail(err)
	}
	select {
	case a.csrPending <- csrUpdate{name: c.Name, csr: p.Name}:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	certs, err := rotate.WaitCSR(ctx, client, p, timeout)
	r.requests = counter.n.Load()
	var denied *rotate.CSRDeniedError
	if errors.As(err, &denied) || errors.Is(err, rotate.ErrWrongKey) || errors.Is(err, rotate.ErrCSRGone) {
		a.dropPending(c.Name) // never reuse it; a new key next time
	}
	if err != nil {
		return fail(err)
	}
	if kind != kindCustom && (certs[0].Subject.CommonName != spec.Subject.CommonName || !slices.Equal(certs[0].Subject.Organization, spec.Subject.Organization)) {
		a.dropPending(c.Name)
		return fail(fmt.Errorf("CSR %s: issued for %s, not %s", p.Name, certs[0].Subject, spec.Subject))
	}
	if kind == kindCustom {
		roots = nil // a custom signer's CA is not the cluster's
	}
	res := a.finishCSR(r, c, cfg, certs, key, roots, now)
	if res.err == nil {
		a.dropPending(c.Name)
	}
	return res
}

// finishCSR writes an issued certificate where the old one lives: the
// kubelet's store for its certificates, the transaction for others.
func (a *Agent) finishCSR(r csrResult, c *inventory.Certificate, cfg *config.Config, certs []*x509.Certificate, key crypto.Signer, roots *x509.CertPool, now time.Time) csrResult {
	root := a.opts.Root
	var err error
	switch kind, custom := kindOf(c, cfg); {
	case kind == kindKubeletClient && c.Kind == inventory.KindKubeconfigEmbedded:
		// kubelet.conf embeds its certificate (a node joined long ago):
		// renew it in place, with the transaction.
		t := rotate.Target{Name: c.Name, Storage: rotate.StorageKubeconfig, CertPath: c.Path, User: c.User, Roots: roots}
		var res rotate.Result
		res, err = rotate.Install(context.Background(), rotate.Options{Root: root, BackupDir: cfg.Renewal.BackupDir, KeepBackups: cfg.Renewal.KeepBackups, Now: now}, t, certs, key)
		r.rollback = func() error { return rotate.Restore(root, res.Backup, c.Name) }
	case kind == kindCustom:
		t := rotate.Target{Name: c.Name, Storage: rotate.StoragePair, CertPath: custom.CertFile, KeyPath: custom.KeyFile, Roots: roots}
		if custom.KeyFile == custom.CertFile {
			t.Storage, t.KeyPath = rotate.StorageCombined, ""
		}
		var res rotate.Result
		res, err = rotate.Install(context.Background(), rotate.Options{Root: root, BackupDir: cfg.Renewal.BackupDir, KeepBackups: cfg.Renewal.KeepBackups, Now: now}, t, certs, key)
		r.rollback = func() error { return rotate.Restore(root, res.Backup, c.Name) }
	default:
		prefix := "kubelet-client"
		if kind == kindKubeletServing {
			prefix = "kubelet-server"
		}
		store := rotate.KubeletStore{Root: root, Dir: cfg.KubeletPKIDir, Prefix: prefix}
		before := store.Target()
		_, err = store.Update(certs, key, roots, now)
		r.rollback = func() error { return store.Rollback(before) }
	}
	r.finished = a.opts.Clock.Now()
	if err != nil {
		r.err = err
		return r
	}
	r.serial, r.notAfter = strings.ToUpper(certs[0].SerialNumber.Text(16)), certs[0].NotAfter
	return r
}

// nodeAddresses adds the Node object's addresses to the serving SANs (the
// node may read its own Node). Failing to read it keeps the current names.
func (a *Agent) nodeAddresses(ctx context.Context, client kubernetes.Interface, node string, dns []string, ips []net.IP) ([]string, []net.IP) {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := client.CoreV1().Nodes().Get(gctx, node, metav1.GetOptions{})
	if err != nil {
		return dns, ips
	}
	for _, ad := range n.Status.Addresses {
		if ip := net.ParseIP(ad.Address); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		} else if !slices.Contains(dns, ad.Address) {
			dns = append(dns, ad.Address)
		}
	}
	return dns, ips
}

// localCAFor returns the certificate's issuing CA when its key is here.
func (a *Agent) localCAFor(c *inventory.Certificate, rep *inventory.Report) *rotate.LocalCA {
	if !c.CAKeyPresent {
		return nil
	}
	for _, au := range rep.Authorities {
		if au.Name == c.CAName && au.Key != nil {
			if ca, err := rotate.LoadLocalCA(a.opts.Root, au.Name, au.Path, au.Key.Path); err == nil {
				return ca
			}
		}
	}
	return nil
}

func poolOf(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
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

func (a *Agent) loadPendingKey(name, pending string) crypto.Signer {
	if pending == "" {
		return nil
	}
	data, err := os.ReadFile(a.pendingKeyPath(name))
	if err != nil {
		return nil
	}
	k, err := pki.ParseKeyPEM(data)
	if err != nil {
		return nil
	}
	return k
}

func (a *Agent) savePendingKey(name string, key crypto.Signer) error {
	b, err := pki.EncodeKeyPEM(key, "")
	if err != nil {
		return err
	}
	return os.WriteFile(a.pendingKeyPath(name), b, 0o600)
}

func (a *Agent) dropPending(name string) {
	os.Remove(a.pendingKeyPath(name))
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
	now := a.opts.Clock.Now()
	rec := &CSRRecord{Name: r.name, Method: r.method, Seconds: r.finished.Sub(r.started).Seconds(), Requests: r.requests}
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
