// Package config loads and validates certagent's configuration file, a
// versioned YAML document in the style of Kubernetes component configs:
//
//	apiVersion: certagent.io/v1alpha1
//	kind: AgentConfiguration
//
// Unknown keys and invalid values are errors that name the key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/rotate/pki"
)

// APIVersion and Kind identify the configuration document.
const (
	APIVersion = "certagent.io/v1alpha1"
	Kind       = "AgentConfiguration"
)

// DefaultPath is where the agent looks for its config when --config is not
// given (below --root, like every node path).
const DefaultPath = "/etc/certagent/config.yaml"

// Config is the agent's configuration. Field comments are the reference;
// README.md documents the same.
type Config struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`

	// KubernetesDir holds the kubeconfigs (default /etc/kubernetes).
	KubernetesDir string `json:"kubernetesDir,omitempty"`
	// PKIDir is kubeadm's certificatesDir (default /etc/kubernetes/pki).
	PKIDir string `json:"pkiDir,omitempty"`
	// KubeletPKIDir is the kubelet's certificate store (default /var/lib/kubelet/pki).
	KubeletPKIDir string `json:"kubeletPKIDir,omitempty"`
	// Paths adds certificates: a file, a directory (its certificate and
	// kubeconfig files, not recursive) or a glob.
	Paths []string `json:"paths,omitempty"`
	// Exclude drops paths or globs from everything found.
	Exclude []string `json:"exclude,omitempty"`
	// RenewBefore, when set, makes a certificate due this long before it
	// expires instead of at 70 % of its lifetime. Any duration
	// ParseDuration reads: "720h", "30d", "1d12h"; at most 100 years.
	RenewBefore string `json:"renewBefore,omitempty"`
	// MaxFileSize caps the size of a file certagent reads (default 1048576).
	MaxFileSize int64 `json:"maxFileSize,omitempty"`

	// Renewal says how certificates are renewed.
	Renewal Renewal `json:"renewal,omitempty"`
	// Agent configures `certagent run`.
	Agent Agent `json:"agent,omitempty"`
	// Kubelet configures renewal of the kubelet's certificates through
	// CertificateSigningRequests.
	Kubelet Kubelet `json:"kubelet,omitempty"`
	// Certificates renewed through a CSR to any signer.
	Certificates []CSRCertificate `json:"certificates,omitempty"`
	// Restart says how to reload what uses a renewed certificate.
	Restart Restart `json:"restart,omitempty"`
	// Coordination makes control-plane nodes take turns restarting.
	Coordination Coordination `json:"coordination,omitempty"`

	// RenewBeforeDuration is RenewBefore parsed; 0 when unset.
	RenewBeforeDuration time.Duration `json:"-"`
}

// Renewal configures how renewed certificates are made and kept.
type Renewal struct {
	// Validity is the lifetime of a renewed certificate, 1h to 100 years;
	// empty keeps the lifetime of the one it replaces. Never past the CA's
	// expiry.
	Validity string `json:"validity,omitempty"`
	// KeyAlgorithm: empty keeps the old key's algorithm and size; else
	// rsa-2048, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384 or ed25519.
	KeyAlgorithm string `json:"keyAlgorithm,omitempty"`
	// ReuseKey keeps the private key instead of making a new one.
	ReuseKey bool `json:"reuseKey,omitempty"`
	// BackupDir holds certagent-backup-<timestamp>/ directories
	// (default /etc/kubernetes/tmp, as kubeadm uses for its own backups).
	BackupDir string `json:"backupDir,omitempty"`
	// KeepBackups is how many backup directories to keep (default 5):
	// completed renewals first, failed attempts only in the room left.
	KeepBackups int `json:"keepBackups,omitempty"`
	// ConvertKubeletConf: when kubelet.conf embeds its client certificate,
	// after renewing it move it to the kubelet's store and make kubelet.conf
	// refer to kubelet-client-current.pem, as kubeadm does on joined nodes.
	ConvertKubeletConf bool `json:"convertKubeletConf,omitempty"`
	// LocalCAPaths opts certificates found through `paths` in to renewal
	// from a local CA key, by node path or glob. Without it certagent only
	// reports them: re-signing whatever file appears in a configured place
	// would let whoever can write there choose an identity to mint.
	LocalCAPaths []string `json:"localCAPaths,omitempty"`

	// ValidityDuration is Validity parsed; 0 when unset.
	ValidityDuration time.Duration `json:"-"`
}

// Agent configures the daemon. Paths are node paths (below --root).
type Agent struct {
	// StateDir holds state.json (default /var/lib/certagent).
	StateDir string `json:"stateDir,omitempty"`
	// StateHostDir is the state directory as a host path when the
	// operator gave one (`certagent run --state-dir`); never from a file.
	StateHostDir string `json:"-"`
	// Socket is the status API's unix socket (default /run/certagent/certagent.sock).
	Socket string `json:"socket,omitempty"`
	// NoRestart turns off restarting what uses a renewed certificate.
	NoRestart bool `json:"noRestart,omitempty"`
	// ResyncInterval is how often a full rescan runs even without events
	// (default 5m).
	ResyncInterval string `json:"resyncInterval,omitempty"`
	// RetryInitial and RetryMax bound the backoff after a failed renewal
	// (default 30s and 1h).
	RetryInitial string `json:"retryInitial,omitempty"`
	RetryMax     string `json:"retryMax,omitempty"`
	// NodeName seeds the renewal jitter (default: the host name).
	NodeName string `json:"nodeName,omitempty"`
	// Group may read the status API (default certagent; root only when
	// the group does not exist).
	Group string `json:"group,omitempty"`
	// ReportToCluster sends Events on the Node and its
	// CertificateRotationHealthy condition with the node's credential
	// (kubelet.kubeconfig). Default true.
	ReportToCluster *bool `json:"reportToCluster,omitempty"`
	// MetricsAddress serves Prometheus /metrics (default 127.0.0.1:9795;
	// an empty string turns it off).
	MetricsAddress *string `json:"metricsAddress,omitempty"`

	// Parsed durations.
	ResyncDuration, RetryInitialDuration, RetryMaxDuration time.Duration `json:"-"`
}

// Kubelet configures how the kubelet's certificates are renewed. Paths
// are node paths.
type Kubelet struct {
	// ConfigFile is the kubelet's KubeletConfiguration, read for
	// rotateCertificates and serverTLSBootstrap (default
	// /var/lib/kubelet/config.yaml).
	ConfigFile string `json:"configFile,omitempty"`
	// Kubeconfig is the node's credential (default <kubernetesDir>/kubelet.conf).
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// BootstrapKubeconfig is tried when the client certificate has expired
	// (default <kubernetesDir>/bootstrap-kubelet.conf).
	BootstrapKubeconfig string `json:"bootstrapKubeconfig,omitempty"`
	// NodeName defaults to the client certificate's system:node:<name>.
	NodeName string `json:"nodeName,omitempty"`
	// Rotation says who renews the kubelet's certificates: "auto" (the
	// kubelet when its config enables rotation, certagent otherwise),
	// "certagent" or "kubelet" (certagent only steps in when the kubelet
	// clearly failed). Default auto.
	Rotation string `json:"rotation,omitempty"`
	// ClientCSRTimeout and ServingCSRTimeout bound one wait for a CSR to
	// be issued (default 5m and 15m).
	ClientCSRTimeout  string `json:"clientCSRTimeout,omitempty"`
	ServingCSRTimeout string `json:"servingCSRTimeout,omitempty"`
	// ServingCertificate says what renews kubelet.crt/kubelet.key, the
	// self-signed serving pair the kubelet makes when serverTLSBootstrap
	// is off: "none" (only reported, the default), "selfSigned" (a new
	// self-signed pair the kubelet's way) or "csr" (a certificate from
	// the kubernetes.io/kubelet-serving signer). The kubelet is restarted
	// after either, as it reads kubelet.crt only when it starts.
	ServingCertificate string `json:"servingCertificate,omitempty"`

	ClientCSRTimeoutDuration, ServingCSRTimeoutDuration time.Duration `json:"-"`
}

// Values of Kubelet.ServingCertificate.
const (
	ServingNone       = "none"
	ServingSelfSigned = "selfSigned"
	ServingCSR        = "csr"
)

// Restart configures restarts after renewals and the served-certificate
// checks. Endpoints are host:port on this node.
type Restart struct {
	KubeletUnit    string `json:"kubeletUnit,omitempty"`    // default kubelet.service
	KubeletHealthz string `json:"kubeletHealthz,omitempty"` // default http://127.0.0.1:10248/healthz
	// ManifestsDir holds the control plane's static pod manifests
	// (default <kubernetesDir>/manifests).
	ManifestsDir string `json:"manifestsDir,omitempty"`
	// FileCheckFrequency is the kubelet's; a manifest stays out this long
	// plus a margin (default 20s).
	FileCheckFrequency string `json:"fileCheckFrequency,omitempty"`
	// Timeout bounds how long a restarted component has to become healthy
	// with its new certificate (default 2m).
	Timeout string `json:"timeout,omitempty"`
	// StaleAfter: a served certificate that differs from the disk this long
	// is "stale" (default 2m).
	StaleAfter string `json:"staleAfter,omitempty"`
	// Settle: a restarted component is confirmed only once it has stayed
	// healthy this long, every check passing (default 10s): one that
	// answers and then exits (a crash loop) is not.
	Settle string `json:"settle,omitempty"`
	// ReloadWait: how long a component that reads changed files by itself
	// is given to show them (etcd or kube-apiserver a renewed certificate,
	// kube-apiserver changed trust bundles) before it is restarted instead
	// (default 70s; 0: always restart).
	ReloadWait string `json:"reloadWait,omitempty"`
	// Endpoints override where components serve TLS: kube-apiserver
	// (127.0.0.1:6443), etcd (127.0.0.1:2379), etcd-peer (127.0.0.1:2380),
	// kubelet (127.0.0.1:10250), kube-controller-manager (127.0.0.1:10257),
	// kube-scheduler (127.0.0.1:10259).
	Endpoints map[string]string `json:"endpoints,omitempty"`
	// Units restart other systemd units after their certificates renew.
	Units []UnitMapping `json:"units,omitempty"`

	FileCheckDuration, TimeoutDuration, StaleAfterDuration, SettleDuration, ReloadWaitDuration time.Duration `json:"-"`
}

// Coordination configures how control-plane nodes of one cluster take
// turns restarting their static pods (README, Highly available control
// planes).
type Coordination struct {
	// Enabled turns the coordination on (default true; single-node control
	// planes never wait either way).
	Enabled *bool `json:"enabled,omitempty"`
	// LeaseName and LeaseNamespace name the restart Lease (default
	// certagent-restart in kube-system).
	LeaseName      string `json:"leaseName,omitempty"`
	LeaseNamespace string `json:"leaseNamespace,omitempty"`
	// LeaseDuration: a holder that stops renewing loses the Lease after
	// this long (default 30s; renewed every third of it).
	LeaseDuration string `json:"leaseDuration,omitempty"`
	// RetryInterval is the pause between two tries while waiting (default 2s).
	RetryInterval string `json:"retryInterval,omitempty"`
	// APIDownWindow bounds the per-node delay before a local restart when
	// no Lease can be had (default 10m).
	APIDownWindow string `json:"apiDownWindow,omitempty"`
	// Kubeconfig is the credential for the Lease (default
	// <kubernetesDir>/controller-manager.conf: kubeadm's NodeRestriction
	// admission refuses a node's own credential any Lease outside
	// kube-node-lease).
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// APIServers lists the kube-apiservers (host:port) to check before
	// restarting this node's; default: the `kubernetes` EndpointSlice.
	APIServers []string `json:"apiServers,omitempty"`

	LeaseDurationDuration, RetryIntervalDuration, APIDownWindowDuration time.Duration `json:"-"`
}

// On says whether coordination is enabled.
func (c Coordination) On() bool { return c.Enabled == nil || *c.Enabled }

// UnitMapping ties certificates to a systemd unit that uses them.
type UnitMapping struct {
	Unit         string   `json:"unit"`
	Certificates []string `json:"certificates"`
	// Address, when set, is where the unit serves the first certificate.
	Address string `json:"address,omitempty"`
	// Healthz, when set, must answer 200 after the restart.
	Healthz string `json:"healthz,omitempty"`
}

// CSRCertificate is a certificate renewed through a CSR to any signer.
// The subject and SANs come from the current certificate.
type CSRCertificate struct {
	// Name labels it in status and logs (default: the certificate path).
	Name string `json:"name,omitempty"`
	// CertFile and KeyFile are node paths; KeyFile may equal CertFile.
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// SignerName is the CSR's spec.signerName.
	SignerName string `json:"signerName"`
	// Usages are CSR key usages, e.g. ["digital signature", "server auth"].
	Usages []string `json:"usages,omitempty"`
	// ExpirationSeconds asks the signer for a lifetime (optional).
	ExpirationSeconds int32 `json:"expirationSeconds,omitempty"`
	// Kubeconfig is the credential used (default kubelet.kubeconfig).
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Timeout bounds one wait (default 15m).
	Timeout string `json:"timeout,omitempty"`

	TimeoutDuration time.Duration `json:"-"`
}

// csrUsages are the key usages a CertificateSigningRequest may name.
var csrUsages = []string{"signing", "digital signature", "content commitment", "key encipherment", "key agreement",
	"data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth", "client auth",
	"code signing", "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping",
	"ocsp signing", "microsoft sgc", "netscape sgc"}

// keyAlgorithms mirrors rotate.KeyAlgorithms (config may not import rotate).
var keyAlgorithms = []string{"rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256", "ecdsa-p384", "ed25519"}

// Default returns the configuration used when no file exists.
func Default() *Config {
	c := &Config{APIVersion: APIVersion, Kind: Kind}
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.KubernetesDir == "" {
		c.KubernetesDir = "/etc/kubernetes"
	}
	if c.PKIDir == "" {
		c.PKIDir = path.Join(c.KubernetesDir, "pki")
	}
	if c.KubeletPKIDir == "" {
		c.KubeletPKIDir = "/var/lib/kubelet/pki"
	}
	if c.Renewal.BackupDir == "" {
		c.Renewal.BackupDir = path.Join(c.KubernetesDir, "tmp")
	}
	if c.Renewal.KeepBackups == 0 {
		c.Renewal.KeepBackups = 5
	}
	k := &c.Kubelet
	if k.ConfigFile == "" {
		k.ConfigFile = "/var/lib/kubelet/config.yaml"
	}
	if k.Kubeconfig == "" {
		k.Kubeconfig = path.Join(c.KubernetesDir, "kubelet.conf")
	}
	if k.BootstrapKubeconfig == "" {
		k.BootstrapKubeconfig = path.Join(c.KubernetesDir, "bootstrap-kubelet.conf")
	}
	if k.Rotation == "" {
		k.Rotation = "auto"
	}
	if k.ServingCertificate == "" {
		k.ServingCertificate = ServingNone
	}
	for i := range c.Certificates {
		cc := &c.Certificates[i]
		if cc.Name == "" {
			cc.Name = cc.CertFile
		}
		if cc.Kubeconfig == "" {
			cc.Kubeconfig = k.Kubeconfig
		}
		if cc.TimeoutDuration == 0 {
			cc.TimeoutDuration = 15 * time.Minute
		}
		if len(cc.Usages) == 0 {
			cc.Usages = []string{"digital signature", "client auth"}
		}
	}
	r := &c.Restart
	if r.KubeletUnit == "" {
		r.KubeletUnit = "kubelet.service"
	}
	if r.KubeletHealthz == "" {
		r.KubeletHealthz = "http://127.0.0.1:10248/healthz"
	}
	if r.ManifestsDir == "" {
		r.ManifestsDir = path.Join(c.KubernetesDir, "manifests")
	}
	def := map[string]string{"kube-apiserver": "127.0.0.1:6443", "etcd": "127.0.0.1:2379", "etcd-peer": "127.0.0.1:2380",
		"kubelet": "127.0.0.1:10250", "kube-controller-manager": "127.0.0.1:10257", "kube-scheduler": "127.0.0.1:10259"}
	if r.Endpoints == nil {
		r.Endpoints = map[string]string{}
	}
	for k, v := range def {
		if _, ok := r.Endpoints[k]; !ok {
			r.Endpoints[k] = v
		}
	}
	co := &c.Coordination
	if co.LeaseName == "" {
		co.LeaseName = "certagent-restart"
	}
	if co.LeaseNamespace == "" {
		co.LeaseNamespace = "kube-system"
	}
	if co.Kubeconfig == "" {
		co.Kubeconfig = path.Join(c.KubernetesDir, "controller-manager.conf")
	}
	a := &c.Agent
	if a.StateDir == "" {
		a.StateDir = "/var/lib/certagent"
	}
	if a.Socket == "" {
		a.Socket = "/run/certagent/certagent.sock"
	}
	// A duration given as 0 (where its bounds allow it: restart.settle,
	// restart.reloadWait) stays 0; only one not given takes the default.
	for _, d := range c.durations() {
		if *d.out == 0 && d.val == "" {
			*d.out = d.def
		}
	}
}

// durationField is a duration setting: its key, the text from the file,
// where the parsed value goes, the range allowed and the default.
type durationField struct {
	key    string
	val    string
	out    *time.Duration
	bounds Bounds
	def    time.Duration
}

// durations lists the duration settings validate parses and setDefaults fills.
func (c *Config) durations() []durationField {
	return []durationField{
		{"agent.resyncInterval", c.Agent.ResyncInterval, &c.Agent.ResyncDuration, Bounds{time.Second, day}, 5 * time.Minute},
		{"agent.retryInitial", c.Agent.RetryInitial, &c.Agent.RetryInitialDuration, Bounds{time.Second, day}, 30 * time.Second},
		{"agent.retryMax", c.Agent.RetryMax, &c.Agent.RetryMaxDuration, Bounds{time.Second, 7 * day}, time.Hour},
		{"kubelet.clientCSRTimeout", c.Kubelet.ClientCSRTimeout, &c.Kubelet.ClientCSRTimeoutDuration, Bounds{time.Second, day}, 5 * time.Minute},
		{"kubelet.servingCSRTimeout", c.Kubelet.ServingCSRTimeout, &c.Kubelet.ServingCSRTimeoutDuration, Bounds{time.Second, day}, 15 * time.Minute},
		{"restart.fileCheckFrequency", c.Restart.FileCheckFrequency, &c.Restart.FileCheckDuration, Bounds{time.Millisecond, time.Hour}, 20 * time.Second},
		{"restart.timeout", c.Restart.Timeout, &c.Restart.TimeoutDuration, Bounds{time.Millisecond, time.Hour}, 2 * time.Minute},
		{"restart.staleAfter", c.Restart.StaleAfter, &c.Restart.StaleAfterDuration, Bounds{time.Millisecond, day}, 2 * time.Minute},
		{"restart.settle", c.Restart.Settle, &c.Restart.SettleDuration, Bounds{0, 10 * time.Minute}, 10 * time.Second},
		{"restart.reloadWait", c.Restart.ReloadWait, &c.Restart.ReloadWaitDuration, Bounds{0, 10 * time.Minute}, 70 * time.Second},
		{"coordination.leaseDuration", c.Coordination.LeaseDuration, &c.Coordination.LeaseDurationDuration, Bounds{time.Second, time.Hour}, 30 * time.Second},
		{"coordination.retryInterval", c.Coordination.RetryInterval, &c.Coordination.RetryIntervalDuration, Bounds{10 * time.Millisecond, time.Hour}, 2 * time.Second},
		{"coordination.apiDownWindow", c.Coordination.APIDownWindow, &c.Coordination.APIDownWindowDuration, Bounds{time.Second, day}, 10 * time.Minute},
	}
}

// Parse decodes and validates a configuration document.
func Parse(data []byte) (*Config, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("config is empty: it needs at least apiVersion and kind")
	}
	c := &Config{}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, fmt.Errorf("config: %s", cleanYAMLError(err))
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	c.setDefaults()
	return c, nil
}

// Load reads and parses the file at path (a host path). With optional
// set, a missing file yields the defaults; otherwise it is an error. It
// reads as every file certagent reads is read (pki.ReadHostFile): only a
// regular file, checked before it is opened (a FIFO would block the read,
// and SIGTERM with it; a device may act on open), and at most
// pki.DefaultMaxFileSize bytes.
func Load(path string, optional bool) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	data, err := pki.ReadHostFile(abs)
	return parseLoaded(path, data, err, optional)
}

// LoadIn reads the config at nodePath inside root, with links resolved
// inside the root as for every file there (an untrusted root cannot make
// certagent read a host file as its config), and otherwise as Load.
func LoadIn(root *pki.Root, nodePath string, optional bool) (*Config, error) {
	var data []byte
	f, err := root.ReadFile(nodePath)
	if err == nil {
		data = f.Data
	}
	return parseLoaded(nodePath, data, err, optional)
}

func parseLoaded(path string, data []byte, err error, optional bool) (*Config, error) {
	if errors.Is(err, fs.ErrNotExist) && optional {
		return Default(), nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		// The error names the first missing component: name the file too.
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// cleanYAMLError strips the JSON decoder's layers from strict-decoding
// errors so the message leads with the offending key.
func cleanYAMLError(err error) string {
	s := err.Error()
	for _, p := range []string{"error unmarshaling JSON: ", "while decoding JSON: ", "json: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

func (c *Config) validate() error {
	var errs []string
	bad := func(key, format string, a ...any) { errs = append(errs, key+": "+fmt.Sprintf(format, a...)) }
	if c.APIVersion != APIVersion {
		bad("apiVersion", "must be %q, got %q", APIVersion, c.APIVersion)
	}
	if c.Kind != Kind {
		bad("kind", "must be %q, got %q", Kind, c.Kind)
	}
	for _, kv := range [][2]string{{"kubernetesDir", c.KubernetesDir}, {"pkiDir", c.PKIDir}, {"kubeletPKIDir", c.KubeletPKIDir}} {
		if kv[1] != "" && !path.IsAbs(kv[1]) {
			bad(kv[0], "must be an absolute path, got %q", kv[1])
		}
	}
	for i, p := range c.Paths {
		checkPattern(fmt.Sprintf("paths[%d]", i), p, bad)
	}
	for i, p := range c.Exclude {
		checkPattern(fmt.Sprintf("exclude[%d]", i), p, bad)
	}
	for i, p := range c.Renewal.LocalCAPaths {
		checkPattern(fmt.Sprintf("renewal.localCAPaths[%d]", i), p, bad)
	}
	if c.RenewBefore != "" {
		d, err := RenewBeforeBounds.Parse(c.RenewBefore)
		if err != nil {
			bad("renewBefore", "%v", err)
		}
		c.RenewBeforeDuration = d
	}
	if v := c.Renewal.Validity; v != "" {
		d, err := ValidityBounds.Parse(v)
		if err != nil {
			bad("renewal.validity", "%v", err)
		}
		c.Renewal.ValidityDuration = d
	}
	if a := c.Renewal.KeyAlgorithm; a != "" && !slices.Contains(keyAlgorithms, a) {
		bad("renewal.keyAlgorithm", "must be one of %s, got %q", strings.Join(keyAlgorithms, ", "), a)
	}
	if b := c.Renewal.BackupDir; b != "" && !path.IsAbs(b) {
		bad("renewal.backupDir", "must be an absolute path, got %q", b)
	}
	if c.Renewal.KeepBackups < 0 {
		bad("renewal.keepBackups", "must not be negative, got %d", c.Renewal.KeepBackups)
	}
	for _, d := range c.durations() {
		if d.val == "" {
			continue
		}
		v, err := d.bounds.Parse(d.val)
		if err != nil {
			bad(d.key, "%v", err)
		}
		*d.out = v
	}
	switch c.Kubelet.Rotation {
	case "", "auto", "certagent", "kubelet":
	default:
		bad("kubelet.rotation", "must be auto, certagent or kubelet, got %q", c.Kubelet.Rotation)
	}
	switch c.Kubelet.ServingCertificate {
	case "", ServingNone, ServingSelfSigned, ServingCSR:
	default:
		bad("kubelet.servingCertificate", "must be none, selfSigned or csr, got %q", c.Kubelet.ServingCertificate)
	}
	for i := range c.Certificates {
		cc := &c.Certificates[i]
		key := fmt.Sprintf("certificates[%d]", i)
		if !path.IsAbs(cc.CertFile) || !path.IsAbs(cc.KeyFile) {
			bad(key, "certFile and keyFile must be absolute paths")
		}
		if cc.SignerName == "" || !strings.Contains(cc.SignerName, "/") {
			bad(key+".signerName", "must be a signer name like example.com/my-signer, got %q", cc.SignerName)
		}
		for _, u := range cc.Usages {
			if !slices.Contains(csrUsages, u) {
				bad(key+".usages", "unknown usage %q", u)
			}
		}
		if cc.ExpirationSeconds != 0 && cc.ExpirationSeconds < 600 {
			bad(key+".expirationSeconds", "must be at least 600 (the API's minimum), got %d", cc.ExpirationSeconds)
		}
		if cc.Timeout != "" {
			v, err := certificateTimeoutBounds.Parse(cc.Timeout)
			if err != nil {
				bad(key+".timeout", "%v", err)
			}
			cc.TimeoutDuration = v
		}
	}
	for k, v := range c.Restart.Endpoints {
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad("restart.endpoints."+k, "want host:port, got %q", v)
		}
	}
	for i, u := range c.Restart.Units {
		if u.Unit == "" || len(u.Certificates) == 0 {
			bad(fmt.Sprintf("restart.units[%d]", i), "needs unit and certificates")
		}
	}
	for _, kv := range [][2]string{{"agent.stateDir", c.Agent.StateDir}, {"agent.socket", c.Agent.Socket}} {
		if kv[1] != "" && !path.IsAbs(kv[1]) {
			bad(kv[0], "must be an absolute path, got %q", kv[1])
		}
	}
	if c.MaxFileSize < 0 {
		bad("maxFileSize", "must not be negative, got %d", c.MaxFileSize)
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid config: %s", strings.Join(errs, "; "))
	}
	return nil
}

func checkPattern(key, p string, bad func(string, string, ...any)) {
	if !path.IsAbs(p) {
		bad(key, "must be an absolute path or glob, got %q", p)
		return
	}
	if _, err := path.Match(p, ""); err != nil {
		bad(key, "bad glob %q: %v", p, err)
	}
}
