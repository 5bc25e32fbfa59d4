package csrrenew

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate/pki"
)

// ErrNoCredential: the node's client certificate expired and nothing else
// can authenticate it to the cluster.
var ErrNoCredential = errors.New("the kubelet client certificate has expired and no bootstrap kubeconfig works")

// recoverySteps is printed when certagent cannot recover a node alone.
func recoverySteps(node string, cfg *config.Config) string {
	return fmt.Sprintf("recover with: on a control-plane node run `kubeadm token create` and write a bootstrap kubeconfig with that token to %s "+
		"on this node (certagent then renews through it at once), or run `kubeadm kubeconfig user --org system:nodes --client-name system:node:%s` "+
		"there, copy the result to %s here and restart the kubelet", cfg.Kubelet.BootstrapKubeconfig, node, cfg.Kubelet.Kubeconfig)
}

// Kind classifies a certificate renewed through a CSR.
type Kind int

// The kinds of CSR-renewed certificates.
const (
	KindKubeletClient Kind = iota
	KindKubeletServing
	KindCustom // configured in certificates[]
)

// KindOf classifies c, with its configuration when it is a custom one.
func KindOf(c *inventory.Certificate, cfg *config.Config) (Kind, *config.CSRCertificate) {
	for i := range cfg.Certificates {
		if cfg.Certificates[i].Name == c.Name {
			return KindCustom, &cfg.Certificates[i]
		}
	}
	if c.Name == "kubelet-serving" || c.Name == "kubelet.crt" {
		return KindKubeletServing, nil
	}
	return KindKubeletClient, nil
}

// Ownership says who renews a kubelet certificate: when the kubelet owns
// it, certagent steps in at StepIn (past 95 % of the lifetime, well beyond
// the kubelet's own 70-90 % window); Why says how the kubelet was found to
// own it.
type Ownership struct {
	Kubelet bool
	StepIn  time.Time
	Why     string
}

// Owner works out the ownership of a certificate renewed through a CSR,
// reading the kubelet's config when kubelet.rotation is auto.
func Owner(root *pki.Root, cfg *config.Config, c *inventory.Certificate) Ownership {
	k, _ := KindOf(c, cfg)
	if k == KindCustom || c.Name == "kubelet.crt" {
		// The kubelet never rotates kubelet.crt: it only makes one at start.
		return Ownership{}
	}
	var why string
	switch cfg.Kubelet.Rotation {
	case "certagent":
		return Ownership{}
	case "auto":
		s, err := readKubeletSettings(root, cfg.Kubelet.ConfigFile)
		if err != nil || (k == KindKubeletClient && !s.RotateCertificates) || (k == KindKubeletServing && !s.ServerTLSBootstrap) {
			return Ownership{}
		}
		why = "the kubelet rotates it (rotateCertificates: true)"
		if k == KindKubeletServing {
			why = "the kubelet rotates it (serverTLSBootstrap: true)"
		}
	default:
		why = "the kubelet rotates it (kubelet.rotation: kubelet)"
	}
	life := c.NotAfter.Sub(c.NotBefore)
	return Ownership{Kubelet: true, StepIn: c.NotBefore.Add(life * 95 / 100), Why: why}
}

// kubeletSettings is what certagent reads of the kubelet's own config.
type kubeletSettings struct {
	RotateCertificates bool `json:"rotateCertificates"`
	ServerTLSBootstrap bool `json:"serverTLSBootstrap"`
	// found is false when the file does not exist.
	found bool
}

// readKubeletSettings reads rotateCertificates and serverTLSBootstrap from
// the KubeletConfiguration file; a missing file means both off, as they
// are by default.
func readKubeletSettings(root *pki.Root, file string) (kubeletSettings, error) {
	var s kubeletSettings
	f, err := root.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, err
	}
	if err := yaml.Unmarshal(f.Data, &s); err != nil {
		return s, fmt.Errorf("%s: %w", file, err)
	}
	s.found = true
	return s, nil
}

// NodeFromCN extracts <name> from system:node:<name>.
func NodeFromCN(cn string) string {
	return strings.TrimPrefix(cn, "system:node:")
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
