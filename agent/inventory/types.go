// Package inventory finds and understands every certificate on a node: the
// kubeadm control-plane PKI, the kubeconfigs, the kubelet's store and any
// configured extra paths. A scan never stops at a bad file: each becomes a
// Problem and every other certificate is still reported.
package inventory

import "time"

// Kind says where a certificate lives.
type Kind string

// Certificate kinds.
const (
	KindPEM                 Kind = "pem"                  // PEM file, key in a separate file
	KindCombined            Kind = "combined"             // certificate and key in one PEM file
	KindDER                 Kind = "der"                  // binary DER file
	KindKubeconfigEmbedded  Kind = "kubeconfig-embedded"  // client-certificate-data in a kubeconfig
	KindKubeconfigReference Kind = "kubeconfig-reference" // client-certificate path in a kubeconfig
)

// RenewalPath says how certagent will renew a certificate.
type RenewalPath string

// Renewal paths.
const (
	RenewLocalCA  RenewalPath = "local-ca" // re-signed with a CA key on this node
	RenewCSR      RenewalPath = "csr"      // a CertificateSigningRequest to the cluster
	RenewExternal RenewalPath = "external" // the issuer's key is not here: someone else renews it
	RenewNone     RenewalPath = "none"     // never renewed by certagent (CAs, self-signed)
	// RenewSelfSigned: kubelet.crt, re-issued as a new self-signed pair
	// the kubelet's way (kubelet.servingCertificate: selfSigned).
	RenewSelfSigned RenewalPath = "self-signed"
	// RenewRefused: a local CA could re-sign it, but certagent will not;
	// Certificate.LeftAlone says why.
	RenewRefused RenewalPath = "refused"
)

// State is a certificate's health at scan time. Later states in this list
// win over earlier ones.
type State string

// States.
const (
	StateOK          State = "ok"
	StateRenewalDue  State = "renewal-due"   // inside its renewal window
	StateExpiring    State = "expiring"      // a CA that ends before a renewed leaf would
	StateKeyMissing  State = "key-missing"   // its private key is not where it should be
	StateKeyMismatch State = "key-mismatch"  // the private key is not the certificate's
	StateNotYetValid State = "not-yet-valid" // NotBefore is in the future
	StateExpired     State = "expired"
)

// Severity maps a state onto the exit codes of `certagent check`:
// 0 healthy, 1 inside the renewal window, 2 broken.
func (s State) Severity() int {
	switch s {
	case StateOK:
		return 0
	case StateRenewalDue, StateExpiring:
		return 1
	default:
		return 2
	}
}

// Report is the result of one scan; `certagent check -o json` prints it.
type Report struct {
	Kind       string    `json:"kind"`
	APIVersion string    `json:"apiVersion"`
	ScannedAt  time.Time `json:"scannedAt"`
	// Root is the host directory that acted as "/" ("/" normally).
	Root         string         `json:"root"`
	Certificates []*Certificate `json:"certificates"`
	Authorities  []*Certificate `json:"authorities"`
	// ClusterCAs are the clusters' certificate-authority-data of the
	// kubeconfigs: reported (and exported as metrics), never renewed.
	ClusterCAs []*Certificate `json:"clusterCAs,omitempty"`
	KeyPairs   []*KeyPair     `json:"keyPairs"`
	Problems   []Problem      `json:"problems"`
}

// Certificate is everything certagent knows about one certificate.
type Certificate struct {
	// Name is stable across scans: kubeadm's names (apiserver, admin.conf,
	// ca, etcd-ca, ...), kubelet.conf, kubelet-client-current,
	// kubelet-serving, kubelet.crt; otherwise the path.
	Name string `json:"name"`
	// Path is the node path of the file holding the certificate (the
	// kubeconfig for embedded ones); ResolvedPath is where its symlinks lead.
	Path         string   `json:"path"`
	ResolvedPath string   `json:"resolvedPath,omitempty"`
	Kind         Kind     `json:"kind"`
	Kubeconfig   string   `json:"kubeconfig,omitempty"`
	User         string   `json:"user,omitempty"`
	UsedBy       []string `json:"usedBy,omitempty"`
	// Cluster names the kubeconfig cluster whose CA data this is (ClusterCAs only).
	Cluster string `json:"cluster,omitempty"`

	Subject        string   `json:"subject"`
	Issuer         string   `json:"issuer"`
	DNSNames       []string `json:"dnsNames,omitempty"`
	IPAddresses    []string `json:"ipAddresses,omitempty"`
	URIs           []string `json:"uris,omitempty"`
	EmailAddresses []string `json:"emailAddresses,omitempty"`
	Serial         string   `json:"serial"`
	// SerialDecimal is Serial in decimal, as x509-certificate-exporter's
	// serial_number label shows it.
	SerialDecimal string `json:"-"`
	// SubjectParts and IssuerParts are the names' parsed attributes, for
	// the metric labels (a rendered name cannot be split back reliably).
	// IssuerParts is shared by every certificate of the same issuer.
	SubjectParts NameParts  `json:"-"`
	IssuerParts  *NameParts `json:"-"`
	NotBefore    time.Time  `json:"notBefore"`
	NotAfter     time.Time  `json:"notAfter"`
	// ResidualSeconds is NotAfter minus the scan time (negative once expired).
	ResidualSeconds int64  `json:"residualSeconds"`
	KeyAlgorithm    string `json:"keyAlgorithm"`
	KeySize         int    `json:"keySize"`
	IsCA            bool   `json:"isCA"`

	// CAName names the authority whose key signed this certificate, found
	// by signature among the node's authorities; empty when none did.
	CAName string `json:"caName"`
	CAPath string `json:"caPath,omitempty"`
	// CAKeyPresent: the issuing CA's private key is on this node.
	CAKeyPresent bool `json:"caKeyPresent"`
	// ExternallyManaged: the issuer is known but its key is not here,
	// kubeadm's meaning of the word.
	ExternallyManaged bool     `json:"externallyManaged"`
	Key               *KeyInfo `json:"key,omitempty"`

	RenewalPath RenewalPath `json:"renewalPath"`
	// LeftAlone says why certagent will not re-sign a certificate that a
	// local CA key could renew (renewal path "refused").
	LeftAlone string `json:"leftAlone,omitempty"`
	// RenewalWindowStart is when the certificate becomes due.
	RenewalWindowStart time.Time `json:"renewalWindowStart"`
	State              State     `json:"state"`
	Warnings           []string  `json:"warnings,omitempty"`
}

// NameParts are the first country, province, locality, organization and
// organizational unit and the common name of a pkix.Name: what
// x509-certificate-exporter's subject_* and issuer_* labels show.
type NameParts struct {
	C, ST, L, O, OU, CN string
}

// KeyInfo describes a certificate's private key as found on disk.
type KeyInfo struct {
	Path    string `json:"path"`
	Present bool   `json:"present"`
	Matches bool   `json:"matches"`
	Mode    string `json:"mode,omitempty"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	Error   string `json:"error,omitempty"`
}

// KeyPair is a bare key pair with no certificate, such as the service
// account signing keys sa.key and sa.pub.
type KeyPair struct {
	Name          string `json:"name"`
	Path          string `json:"path"`
	PublicKeyPath string `json:"publicKeyPath"`
	KeyAlgorithm  string `json:"keyAlgorithm,omitempty"`
	KeySize       int    `json:"keySize,omitempty"`
	Matches       bool   `json:"matches"`
	Mode          string `json:"mode,omitempty"`
	Error         string `json:"error,omitempty"`
}

// Problem is a file that could not be read or understood.
type Problem struct {
	Path  string `json:"path"`
	Name  string `json:"name,omitempty"`
	Error string `json:"error"`
}
