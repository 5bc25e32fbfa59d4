package agent

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
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

// kubeClient builds a client from a kubeconfig on the node, and the CA
// pool that verifies the cluster. Every client certagent makes comes from
// here, and so from pki.RESTConfig: only certificate and token credentials,
// every file read below the root, no credential plugin ever run.
func kubeClient(root *pki.Root, kubeconfig string, counter *requestCounter) (kubernetes.Interface, *x509.CertPool, error) {
	rc, err := pki.RESTConfig(root, kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rc.CAData)
	rc.Timeout = 30 * time.Second
	rc.UserAgent = "certagent"
	if counter != nil {
		rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt: rt, c: counter} })
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", kubeconfig, err)
	}
	return cs, roots, nil
}

// nodeFromCN extracts <name> from system:node:<name>.
func nodeFromCN(cn string) string {
	return strings.TrimPrefix(cn, "system:node:")
}
