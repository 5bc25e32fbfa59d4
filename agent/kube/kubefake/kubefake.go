// Package kubefake serves kube.Interface from a client-go clientset, for
// tests: client-go's fake clientset (with its object tracker and
// reactors) stands in for the API server in unit tests. The certagent
// binary never links this package (kube's deps test checks it).
package kubefake

import (
	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certagent/certagent/agent/kube"
)

// Wrap serves kube.Interface from cs.
func Wrap(cs kubernetes.Interface) kube.Interface { return wrapped{cs} }

type wrapped struct{ cs kubernetes.Interface }

func (w wrapped) CertificatesV1() kube.CertificatesV1 { return w }
func (w wrapped) CoreV1() kube.CoreV1                 { return w }
func (w wrapped) CoordinationV1() kube.CoordinationV1 { return w }
func (w wrapped) RbacV1() kube.RbacV1                 { return w }
func (w wrapped) DiscoveryV1() kube.DiscoveryV1       { return w }

func (w wrapped) CertificateSigningRequests() kube.CSRs {
	return noWatchList[*certificatesv1.CertificateSigningRequest, *certificatesv1.CertificateSigningRequestList]{w.cs.CertificatesV1().CertificateSigningRequests()}
}

// noWatchList says, as client-go's fake clientset does, that the fake
// cannot stream a list, so that informers list and watch.
type noWatchList[T, L any] struct{ kube.Resource[T, L] }

// IsWatchListSemanticsUnSupported is what client-go's informers ask.
func (noWatchList[T, L]) IsWatchListSemanticsUnSupported() bool { return true }
func (w wrapped) Nodes() kube.Nodes                             { return w.cs.CoreV1().Nodes() }
func (w wrapped) Events(ns string) kube.Events                  { return w.cs.CoreV1().Events(ns) }
func (w wrapped) ConfigMaps(ns string) kube.ConfigMaps          { return w.cs.CoreV1().ConfigMaps(ns) }
func (w wrapped) Leases(ns string) kube.Leases                  { return w.cs.CoordinationV1().Leases(ns) }
func (w wrapped) Roles(ns string) kube.Roles                    { return w.cs.RbacV1().Roles(ns) }
func (w wrapped) RoleBindings(ns string) kube.RoleBindings      { return w.cs.RbacV1().RoleBindings(ns) }
func (w wrapped) EndpointSlices(ns string) kube.EndpointSlices {
	return w.cs.DiscoveryV1().EndpointSlices(ns)
}
