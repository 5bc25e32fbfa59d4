package agent

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/rotate/pki"
)

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

// requestCounter counts API requests, for the figures.
type requestCounter struct{ n atomic.Int64 }

type countingTransport struct {
	rt http.RoundTripper
	c  *requestCounter
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.c.n.Add(1)
	return t.rt.RoundTrip(r)
}

// kubeClient builds a client from a kubeconfig on the node, reading every
// path it names below the root, and the CA pool that verifies the cluster.
func kubeClient(root *pki.Root, kubeconfig string, counter *requestCounter) (kubernetes.Interface, *x509.CertPool, error) {
	f, err := root.ReadFile(kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := clientcmd.Load(f.Data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", kubeconfig, err)
	}
	dir := path.Dir(kubeconfig)
	host := func(p string) string {
		if p == "" {
			return ""
		}
		if !path.IsAbs(p) {
			p = path.Join(dir, p)
		}
		if r, err := root.Resolve(p); err == nil {
			p = r
		}
		return root.HostPath(p)
	}
	roots := x509.NewCertPool()
	for _, c := range cfg.Clusters {
		c.CertificateAuthority = host(c.CertificateAuthority)
		data := c.CertificateAuthorityData
		if len(data) == 0 && c.CertificateAuthority != "" {
			if b, err := pki.ReadHostFile(c.CertificateAuthority); err == nil {
				data = b
			}
		}
		roots.AppendCertsFromPEM(data)
	}
	for _, a := range cfg.AuthInfos {
		a.ClientCertificate, a.ClientKey, a.TokenFile = host(a.ClientCertificate), host(a.ClientKey), host(a.TokenFile)
	}
	rc, err := clientcmd.NewDefaultClientConfig(*cfg, nil).ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", kubeconfig, err)
	}
	rc.Timeout = 30 * time.Second
	rc.UserAgent = "certagent"
	if counter != nil {
		rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt: rt, c: counter} })
	}
	cs, err := kubernetes.NewForConfig(rc)
	return cs, roots, err
}

// nodeFromCN extracts <name> from system:node:<name>.
func nodeFromCN(cn string) string {
	return strings.TrimPrefix(cn, "system:node:")
}
