// Package kubeclient builds every Kubernetes client certagent uses, from a
// kubeconfig on the node through pki.RESTConfig: only certificate and
// token credentials, every file read below the root, no credential plugin
// ever run. Only cmd calls it; the packages that talk to the cluster take
// a client factory.
package kubeclient

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/agent/kube"

	"github.com/certagent/certagent/agent/carotate"

	"github.com/certagent/certagent/agent/csrrenew"
	"github.com/certagent/certagent/agent/report"
	"github.com/certagent/certagent/rotate/pki"
)

// countingTransport counts API requests, for the figures.
type countingTransport struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.n.Add(1)
	return t.rt.RoundTrip(r)
}

// New builds a client from a kubeconfig on the node (a node path), and the
// CA pool that verifies the cluster. Every client certagent makes comes
// from here. count, when set, counts the client's requests.
func New(root *pki.Root, kubeconfig string, count *atomic.Int64) (kube.Interface, *x509.CertPool, error) {
	rc, err := pki.RESTConfig(root, kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rc.CAData)
	rc.Timeout = 30 * time.Second
	rc.UserAgent = "certagent"
	if count != nil {
		rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt: rt, n: count} })
	}
	cs, err := kube.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", kubeconfig, err)
	}
	return cs, roots, nil
}

// ForCSR is the client factory of the CSR renewer.
func ForCSR(root *pki.Root) csrrenew.ClientsetFn {
	return func(kubeconfig string, count *atomic.Int64) (kube.Interface, *x509.CertPool, error) {
		return New(root, kubeconfig, count)
	}
}

// ForReport is the client factory of the cluster reporter, with the
// credential in kubeconfig (a node path), read again at every call.
func ForReport(root *pki.Root, kubeconfig string) report.ClientFunc {
	return func() (report.NodeClient, error) {
		cs, _, err := New(root, kubeconfig, nil)
		if err != nil {
			return nil, err
		}
		return report.Clientset(cs), nil
	}
}

// CARotation reads the cluster's CA rotation (the ConfigMap
// kube-system/certagent-ca-rotation) with the credential in kubeconfig (a
// node path), read again at every call: one GET. No ConfigMap, or no
// right to read it (the Role that lets nodes read it comes with a
// rotation), is no rotation.
type CARotation struct {
	Root       *pki.Root
	Kubeconfig string
}

// Rotation implements canode.Source.
func (s CARotation) Rotation(ctx context.Context) (*carotate.Cluster, error) {
	cs, _, err := New(s.Root, s.Kubeconfig, nil)
	if err != nil {
		return nil, err
	}
	cm, err := cs.CoreV1().ConfigMaps(carotate.Namespace).Get(ctx, carotate.ConfigMapName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsForbidden(err):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return carotate.Parse(cm.Data)
}
