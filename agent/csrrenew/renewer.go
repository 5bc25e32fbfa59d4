// Package csrrenew renews certificates through CertificateSigningRequests
// (client-go's util/certificate/csr helpers, by way of rotate): the
// kubelet's client and serving certificates and configured ones. It takes
// a client factory, so its flow is tested against a fake clientset.
package csrrenew

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/kube"

	"github.com/certagent/certagent/agent/canode"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// ClientsetFn builds an API client from a kubeconfig on the node (a node
// path), and the pool of CAs that verify the cluster; count, when set,
// counts its requests. Production uses kubeclient.New; tests a fake.
type ClientsetFn func(kubeconfig string, count *atomic.Int64) (kube.Interface, *x509.CertPool, error)

// Renewer renews through the cluster: the one CSR renewal the daemon's
// jobs and `certagent renew NAME` both run.
type Renewer struct {
	Root   *pki.Root
	Clock  clock.PassiveClock // default the real clock
	Client ClientsetFn
	// Hooks are passed to the transaction that writes the result (tests).
	Hooks rotate.Hooks
}

var _ renewal.CSRRenewer = Renewer{}

// RenewCSR renews the job's certificate (or, for an expired kubelet client
// certificate on a node with the CA key, re-issues it from the local CA).
// Errors are in the result; nothing is written unless a certificate was
// issued for our key.
func (j Renewer) RenewCSR(ctx context.Context, job renewal.CSRJob) renewal.Result {
	if j.Clock == nil {
		j.Clock = clock.RealClock{}
	}
	c, cfg := job.Cert, job.Config
	now := j.Clock.Now()
	r := renewal.Result{Cert: c, OldSerial: c.Serial, Started: now, Method: "csr"}
	fail := func(err error) renewal.Result { r.Err, r.Finished = err, j.Clock.Now(); return r }
	old, err := currentCert(j.Root, c)
	if err != nil {
		return fail(err)
	}
	req := request(c, cfg, old)
	if job.Timeout > 0 {
		req.timeout = job.Timeout
	}
	if req.kind == KindKubeletClient && now.After(old.NotAfter) {
		// The node cannot authenticate with an expired certificate.
		if ca := localCAFor(j.Root, cfg, c, job.Report); ca != nil {
			r.Method = "local-ca"
			key, err := rotate.NewKey(nil, "ecdsa-p256")
			if err != nil {
				return fail(err)
			}
			cert, err := ca.Reissue(old, key.Public(), now, old.NotAfter.Sub(old.NotBefore))
			if err != nil {
				return fail(err)
			}
			return j.finish(r, cfg, []*x509.Certificate{cert}, key, poolOf(ca.Cert), now)
		}
		if _, err := j.Root.ReadFile(cfg.Kubelet.BootstrapKubeconfig); err != nil {
			return fail(fmt.Errorf("%w; %s", ErrNoCredential, recoverySteps(req.node, cfg)))
		}
		req.kubeconfig, r.Method = cfg.Kubelet.BootstrapKubeconfig, "csr-bootstrap"
	}
	if j.Client == nil {
		return fail(errors.New("no Kubernetes client configured"))
	}
	var count atomic.Int64
	client, roots, err := j.Client(req.kubeconfig, &count)
	if err != nil {
		return fail(err)
	}
	if req.kind == KindKubeletServing {
		req.spec.DNSNames, req.spec.IPs = nodeAddresses(ctx, client, req.node, req.spec.DNSNames, req.spec.IPs)
	}
	pending := pendingKeys(job)
	certs, key, err := j.ask(ctx, client, req, pending, job.Waiting, &r)
	r.Requests = count.Load()
	if err != nil {
		return fail(err)
	}
	if req.kind == KindCustom {
		roots = nil // a custom signer's CA is not the cluster's
	}
	if job.NotFrom != nil && pki.SignedBy(certs[0], job.NotFrom) {
		// The cluster's signer is not switched yet: installing it would
		// restart the kubelet for nothing. A new request next time.
		pending.Drop(c.Name)
		return fail(fmt.Errorf("%w (CSR %s): discarded, asked again later", ErrFromRotatedCA, r.CSR))
	}
	res := j.finish(r, cfg, certs, key, roots, now)
	if res.Err == nil {
		pending.Drop(c.Name)
	}
	return res
}

// ErrFromRotatedCA: the cluster answered a CSR with a certificate of the
// CA being rotated out.
var ErrFromRotatedCA = errors.New("issued by the CA being rotated out (the cluster's signer is not switched yet)")

// csrRequest is what to ask the cluster for, and with which credential.
type csrRequest struct {
	kind       Kind
	custom     *config.CSRCertificate
	node       string
	spec       rotate.CSRSpec
	kubeconfig string
	timeout    time.Duration
}

// request works out the request that renews c, whose current certificate
// is old.
func request(c *inventory.Certificate, cfg *config.Config, old *x509.Certificate) csrRequest {
	kind, custom := KindOf(c, cfg)
	q := csrRequest{kind: kind, custom: custom, node: cfg.Kubelet.NodeName,
		kubeconfig: cfg.Kubelet.Kubeconfig, timeout: cfg.Kubelet.ClientCSRTimeoutDuration}
	if q.node == "" {
		q.node = NodeFromCN(old.Subject.CommonName)
		if host, _, ok := strings.Cut(q.node, "@"); ok && c.Name == "kubelet.crt" {
			q.node = host // the kubelet's self-signed "<host>@<time>"
		}
	}
	switch kind {
	case KindKubeletClient:
		q.spec = rotate.KubeletClientSpec(q.node, false)
	case KindKubeletServing:
		q.spec = rotate.KubeletServingSpec(q.node, old.DNSNames, old.IPAddresses, false)
		q.timeout = cfg.Kubelet.ServingCSRTimeoutDuration
	case KindCustom:
		q.spec = rotate.CSRSpec{Subject: old.Subject, DNSNames: old.DNSNames, IPs: old.IPAddresses, SignerName: custom.SignerName}
		q.spec.Subject.ExtraNames = nil
		for _, u := range custom.Usages {
			q.spec.Usages = append(q.spec.Usages, certificatesv1.KeyUsage(u))
		}
		if custom.ExpirationSeconds > 0 {
			q.spec.Duration = time.Duration(custom.ExpirationSeconds) * time.Second
		}
		q.kubeconfig, q.timeout = custom.Kubeconfig, custom.TimeoutDuration
	}
	return q
}

// ask makes (or finds again) the request and waits for its certificate.
func (j Renewer) ask(ctx context.Context, client kube.Interface, q csrRequest, pending PendingKeys, waiting func(string), r *renewal.Result) ([]*x509.Certificate, crypto.Signer, error) {
	name := r.Cert.Name
	key := pending.Load(name)
	reused := key != nil
	var err error
	if key == nil {
		if key, err = rotate.NewKey(nil, "ecdsa-p256"); err != nil {
			return nil, nil, err
		}
	}
	p, err := rotate.RequestCSR(ctx, client.CertificatesV1().CertificateSigningRequests(), q.spec, key)
	if err != nil && reused && errors.Is(err, rotate.ErrCSRNotOurs) {
		// The old request no longer fits (made for other names, or its
		// certificate expired): start over with a new key. An API that
		// cannot be reached keeps the pending request for the next try.
		pending.Drop(name)
		if key, err = rotate.NewKey(nil, "ecdsa-p256"); err == nil {
			p, err = rotate.RequestCSR(ctx, client.CertificatesV1().CertificateSigningRequests(), q.spec, key)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	if err := pending.Save(name, key); err != nil {
		return nil, nil, err
	}
	r.CSR = p.Name
	if waiting != nil {
		waiting(p.Name)
	}
	certs, err := rotate.WaitCSR(ctx, client.CertificatesV1().CertificateSigningRequests(), p, q.timeout)
	if Unissuable(err) {
		pending.Drop(name) // never reuse it; a new key next time
	}
	if err != nil {
		return nil, nil, err
	}
	if q.kind != KindCustom && (certs[0].Subject.CommonName != q.spec.Subject.CommonName || !slices.Equal(certs[0].Subject.Organization, q.spec.Subject.Organization)) {
		pending.Drop(name)
		return nil, nil, fmt.Errorf("CSR %s: issued for %s, not %s", p.Name, certs[0].Subject, q.spec.Subject)
	}
	return certs, key, nil
}

// Unissuable reports whether err means the request can never be issued
// (denied, made for another key, gone): it is forgotten, and the next
// attempt makes a new one. After a timeout or an unreachable API the next
// attempt waits for the same request.
func Unissuable(err error) bool {
	var denied *rotate.CSRDeniedError
	return errors.As(err, &denied) || errors.Is(err, rotate.ErrWrongKey) || errors.Is(err, rotate.ErrCSRGone)
}

// finish writes an issued certificate where the old one lives: the
// kubelet's store for its certificates, the transaction for the others.
func (j Renewer) finish(r renewal.Result, cfg *config.Config, certs []*x509.Certificate, key crypto.Signer, roots *x509.CertPool, now time.Time) renewal.Result {
	root, c := j.Root, r.Cert
	var err error
	var backup, entry string // the transaction, and its entry Restore undoes
	if t, ok := installTarget(c, cfg, roots); ok {
		opts := rotate.Options{Root: root, BackupDir: cfg.Renewal.BackupDir, KeepBackups: cfg.Renewal.KeepBackups, Now: now, Hooks: j.Hooks}
		var res rotate.Result
		res, err = rotate.Install(context.Background(), opts, t, certs, key)
		backup, entry = res.Backup, c.Name
	} else {
		kind, _ := KindOf(c, cfg)
		prefix := "kubelet-client"
		if kind == KindKubeletServing {
			prefix = "kubelet-server"
		}
		store := rotate.KubeletStore{Root: root, Dir: cfg.KubeletPKIDir, Prefix: prefix,
			BackupDir: cfg.Renewal.BackupDir, KeepBackups: cfg.Renewal.KeepBackups, Hooks: j.Hooks}
		_, backup, err = store.Update(certs, key, roots, now)
		entry = prefix + "-current"
	}
	// Both are one journaled transaction: a rollback after a failed
	// restart puts back every file it changed (for the kubelet's store,
	// the link, and the new file goes).
	r.Backup = backup
	r.Rollback = func() error { return rotate.Restore(root, backup, entry) }
	r.Finished = j.Clock.Now()
	if err != nil {
		r.Err, r.Rollback, r.Backup = err, nil, ""
		return r
	}
	r.How = "(" + r.Method + ")"
	r.NewSerial, r.NotAfter = strings.ToUpper(certs[0].SerialNumber.Text(16)), certs[0].NotAfter
	return r
}

// installTarget is where the transaction writes an issued certificate;
// false for the kubelet's own store.
func installTarget(c *inventory.Certificate, cfg *config.Config, roots *x509.CertPool) (rotate.Target, bool) {
	switch kind, custom := KindOf(c, cfg); {
	case kind == KindKubeletClient && c.Kind == inventory.KindKubeconfigEmbedded:
		// kubelet.conf embeds its certificate (a node joined long ago):
		// renewed in place.
		return rotate.Target{Name: c.Name, Storage: rotate.StorageKubeconfig, CertPath: c.Path, User: c.User, Roots: roots}, true
	case c.Name == "kubelet.crt":
		// A pair over kubelet.crt/kubelet.key; the kubelet reads it at
		// its next start.
		keyPath := path.Join(path.Dir(c.Path), "kubelet.key")
		if c.Key != nil && c.Key.Path != "" {
			keyPath = c.Key.Path
		}
		return rotate.Target{Name: c.Name, Storage: rotate.StoragePair, CertPath: c.Path, KeyPath: keyPath, Roots: roots}, true
	case kind == KindCustom:
		t := rotate.Target{Name: c.Name, Storage: rotate.StoragePair, CertPath: custom.CertFile, KeyPath: custom.KeyFile, Roots: roots}
		if custom.KeyFile == custom.CertFile {
			t.Storage, t.KeyPath = rotate.StorageCombined, ""
		}
		return t, true
	}
	return rotate.Target{}, false
}

// nodeAddresses adds the Node object's addresses to the serving SANs (the
// node may read its own Node). Failing to read it keeps the current names.
func nodeAddresses(ctx context.Context, client kube.Interface, node string, dns []string, ips []net.IP) ([]string, []net.IP) {
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
func localCAFor(root *pki.Root, cfg *config.Config, c *inventory.Certificate, rep *inventory.Report) *rotate.LocalCA {
	if !c.CAKeyPresent || rep == nil {
		return nil
	}
	path := ""
	for _, au := range rep.Authorities {
		if au.Name == c.CAName {
			path = au.Path
		}
	}
	// The CA's own entry, or (a CA being rotated, bundled in the file of
	// its successor) the entry of the file's CA, whose key re-signs it.
	for _, au := range rep.Authorities {
		if au.Path == path && au.Key != nil && au.Key.Present {
			if ca, err := rotate.LoadLocalCA(root, au.Name, au.Path, au.Key.Path); err == nil {
				canode.Retire(root, cfg.Agent, ca)
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
