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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// ClientFunc builds an API client from a kubeconfig on the node, and the
// pool of CAs that verify the cluster. Production uses kubeClient (and so
// pki.RESTConfig); tests hand in a fake clientset.
type ClientFunc func(root *pki.Root, kubeconfig string, counter *requestCounter) (kubernetes.Interface, *x509.CertPool, error)

// PendingKeys keeps the key of a request in flight, so that a retry asks
// for (and waits on) the same request instead of making another.
type PendingKeys interface {
	// Load returns the kept key of the certificate, or nil.
	Load(name string) crypto.Signer
	Save(name string, key crypto.Signer) error
	Drop(name string)
}

// CSRRenewal renews one certificate through a CertificateSigningRequest:
// the one renewal the daemon's CSR jobs and `certagent renew NAME` both
// run.
type CSRRenewal struct {
	Root   *pki.Root
	Config *config.Config
	Clock  clock.PassiveClock
	// Pending keeps keys of requests in flight (nil: none kept).
	Pending PendingKeys
	// Waiting, when set, is called once the request exists, with its name.
	Waiting func(csr string)
	// Timeout, when positive, replaces the configured wait for approval.
	Timeout time.Duration
	// Client builds the API client (default kubeClient).
	Client ClientFunc
	// Hooks are passed to the transaction that writes the result (tests).
	Hooks rotate.Hooks
}

// Run renews c (or, for an expired kubelet client certificate on a node
// with the CA key, re-issues it from the local CA). Errors are in the
// result; nothing is written unless a certificate was issued for our key.
func (j CSRRenewal) Run(ctx context.Context, c *inventory.Certificate, rep *inventory.Report) csrResult {
	if j.Clock == nil {
		j.Clock = clock.RealClock{}
	}
	if j.Pending == nil {
		j.Pending = noPending{}
	}
	if j.Client == nil {
		j.Client = kubeClient
	}
	cfg, root := j.Config, j.Root
	now := j.Clock.Now()
	r := csrResult{cert: c, name: c.Name, oldSerial: c.Serial, started: now, method: "csr"}
	fail := func(err error) csrResult { r.err, r.finished = err, j.Clock.Now(); return r }
	old, err := currentCert(root, c)
	if err != nil {
		return fail(err)
	}
	kind, custom := kindOf(c, cfg)
	node := cfg.Kubelet.NodeName
	if node == "" {
		node = nodeFromCN(old.Subject.CommonName)
		if host, _, ok := strings.Cut(node, "@"); ok && c.Name == "kubelet.crt" {
			node = host // the kubelet's self-signed "<host>@<time>"
		}
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
	if j.Timeout > 0 {
		timeout = j.Timeout
	}
	if kind == kindKubeletClient && now.After(old.NotAfter) {
		// The node cannot authenticate with an expired certificate.
		if ca := localCAFor(root, c, rep); ca != nil {
			r.method = "local-ca"
			key, err := rotate.NewKey(nil, "ecdsa-p256")
			if err != nil {
				return fail(err)
			}
			cert, err := ca.Reissue(old, key.Public(), now, old.NotAfter.Sub(old.NotBefore))
			if err != nil {
				return fail(err)
			}
			return j.finish(r, c, []*x509.Certificate{cert}, key, poolOf(ca.Cert), now)
		}
		if _, err := root.ReadFile(cfg.Kubelet.BootstrapKubeconfig); err != nil {
			return fail(fmt.Errorf("%w; %s", ErrNoCredential, recoverySteps(node, cfg)))
		}
		kubeconfig, r.method = cfg.Kubelet.BootstrapKubeconfig, "csr-bootstrap"
	}
	counter := &requestCounter{}
	client, roots, err := j.Client(root, kubeconfig, counter)
	if err != nil {
		return fail(err)
	}
	if kind == kindKubeletServing {
		spec.DNSNames, spec.IPs = nodeAddresses(ctx, client, node, spec.DNSNames, spec.IPs)
	}
	key := j.Pending.Load(c.Name)
	reused := key != nil
	if key == nil {
		if key, err = rotate.NewKey(nil, "ecdsa-p256"); err != nil {
			return fail(err)
		}
	}
	p, err := rotate.RequestCSR(ctx, client, spec, key)
	if err != nil && reused && strings.Contains(err.Error(), "not compatible") {
		// The old request no longer fits (made for other names, or its
		// certificate expired): start over with a new key. An API that
		// cannot be reached keeps the pending request for the next try.
		j.Pending.Drop(c.Name)
		if key, err = rotate.NewKey(nil, "ecdsa-p256"); err == nil {
			p, err = rotate.RequestCSR(ctx, client, spec, key)
		}
	}
	if err != nil {
		r.requests = counter.n.Load()
		return fail(err)
	}
	if err := j.Pending.Save(c.Name, key); err != nil {
		return fail(err)
	}
	r.csr = p.Name
	if j.Waiting != nil {
		j.Waiting(p.Name)
	}
	certs, err := rotate.WaitCSR(ctx, client, p, timeout)
	r.requests = counter.n.Load()
	var denied *rotate.CSRDeniedError
	if errors.As(err, &denied) || errors.Is(err, rotate.ErrWrongKey) || errors.Is(err, rotate.ErrCSRGone) {
		j.Pending.Drop(c.Name) // never reuse it; a new key next time
	}
	if err != nil {
		return fail(err)
	}
	if kind != kindCustom && (certs[0].Subject.CommonName != spec.Subject.CommonName || !slices.Equal(certs[0].Subject.Organization, spec.Subject.Organization)) {
		j.Pending.Drop(c.Name)
		return fail(fmt.Errorf("CSR %s: issued for %s, not %s", p.Name, certs[0].Subject, spec.Subject))
	}
	if kind == kindCustom {
		roots = nil // a custom signer's CA is not the cluster's
	}
	res := j.finish(r, c, certs, key, roots, now)
	if res.err == nil {
		j.Pending.Drop(c.Name)
	}
	return res
}

// finish writes an issued certificate where the old one lives: the
// kubelet's store for its certificates, the transaction for others.
func (j CSRRenewal) finish(r csrResult, c *inventory.Certificate, certs []*x509.Certificate, key crypto.Signer, roots *x509.CertPool, now time.Time) csrResult {
	root, cfg := j.Root, j.Config
	opts := rotate.Options{Root: root, BackupDir: cfg.Renewal.BackupDir, KeepBackups: cfg.Renewal.KeepBackups, Now: now, Hooks: j.Hooks}
	var err error
	switch kind, custom := kindOf(c, cfg); {
	case kind == kindKubeletClient && c.Kind == inventory.KindKubeconfigEmbedded:
		// kubelet.conf embeds its certificate (a node joined long ago):
		// renew it in place, with the transaction.
		t := rotate.Target{Name: c.Name, Storage: rotate.StorageKubeconfig, CertPath: c.Path, User: c.User, Roots: roots}
		var res rotate.Result
		res, err = rotate.Install(context.Background(), opts, t, certs, key)
		r.rollback = func() error { return rotate.Restore(root, res.Backup, c.Name) }
	case c.Name == "kubelet.crt":
		// Written as a pair over kubelet.crt/kubelet.key, with the
		// transaction; the kubelet reads it at its next start.
		keyPath := path.Join(path.Dir(c.Path), "kubelet.key")
		if c.Key != nil && c.Key.Path != "" {
			keyPath = c.Key.Path
		}
		t := rotate.Target{Name: c.Name, Storage: rotate.StoragePair, CertPath: c.Path, KeyPath: keyPath, Roots: roots}
		var res rotate.Result
		res, err = rotate.Install(context.Background(), opts, t, certs, key)
		r.rollback = func() error { return rotate.Restore(root, res.Backup, c.Name) }
	case kind == kindCustom:
		t := rotate.Target{Name: c.Name, Storage: rotate.StoragePair, CertPath: custom.CertFile, KeyPath: custom.KeyFile, Roots: roots}
		if custom.KeyFile == custom.CertFile {
			t.Storage, t.KeyPath = rotate.StorageCombined, ""
		}
		var res rotate.Result
		res, err = rotate.Install(context.Background(), opts, t, certs, key)
		r.rollback = func() error { return rotate.Restore(root, res.Backup, c.Name) }
	default:
		prefix := "kubelet-client"
		if kind == kindKubeletServing {
			prefix = "kubelet-server"
		}
		store := rotate.KubeletStore{Root: root, Dir: cfg.KubeletPKIDir, Prefix: prefix, BackupDir: opts.BackupDir, KeepBackups: opts.KeepBackups, Hooks: j.Hooks}
		before := store.Target()
		_, err = store.Update(certs, key, roots, now)
		r.rollback = func() error { return store.Rollback(before) }
	}
	r.finished = j.Clock.Now()
	if err != nil {
		r.err = err
		return r
	}
	r.serial, r.notAfter = strings.ToUpper(certs[0].SerialNumber.Text(16)), certs[0].NotAfter
	return r
}

// nodeAddresses adds the Node object's addresses to the serving SANs (the
// node may read its own Node). Failing to read it keeps the current names.
func nodeAddresses(ctx context.Context, client kubernetes.Interface, node string, dns []string, ips []net.IP) ([]string, []net.IP) {
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
func localCAFor(root *pki.Root, c *inventory.Certificate, rep *inventory.Report) *rotate.LocalCA {
	if !c.CAKeyPresent || rep == nil {
		return nil
	}
	for _, au := range rep.Authorities {
		if au.Name == c.CAName && au.Key != nil {
			if ca, err := rotate.LoadLocalCA(root, au.Name, au.Path, au.Key.Path); err == nil {
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

// pendingDir keeps pending keys as files in a host directory (the state
// directory). With skipLoad set, Load returns nothing: the daemon reuses
// a key only while its state names the request it was made for.
type pendingDir struct {
	dir      string
	skipLoad bool
}

func (p pendingDir) path(name string) string {
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(p.dir, "pending-"+hex.EncodeToString(sum[:8])+".key")
}

// Load returns the kept key, or nil.
func (p pendingDir) Load(name string) crypto.Signer {
	if p.skipLoad {
		return nil
	}
	data, err := os.ReadFile(p.path(name))
	if err != nil {
		return nil
	}
	k, err := pki.ParseKeyPEM(data)
	if err != nil {
		return nil
	}
	return k
}

// Save keeps the key, 0600.
func (p pendingDir) Save(name string, key crypto.Signer) error {
	b, err := pki.EncodeKeyPEM(key, "")
	if err != nil {
		return err
	}
	return os.WriteFile(p.path(name), b, 0o600)
}

// Drop forgets the key.
func (p pendingDir) Drop(name string) { os.Remove(p.path(name)) }

// noPending keeps nothing.
type noPending struct{}

func (noPending) Load(string) crypto.Signer        { return nil }
func (noPending) Save(string, crypto.Signer) error { return nil }
func (noPending) Drop(string)                      {}
