// Package kube is the Kubernetes client certagent links: the few API
// resources it uses, as small interfaces, and a client of its own for
// them, on client-go's REST client, with a scheme of only the five API
// groups behind them.
//
// client-go's clientset, and every one of its typed clients, imports
// k8s.io/client-go/kubernetes/scheme, which registers every built-in API
// group when the process starts; client-go's generic typed client
// (gentype) links client-go's testing fakes and, through them, the
// managed-fields and OpenAPI packages. Together they held about 8 MB of
// the idle daemon's resident memory (30.3 -> 22.5 MB, measured in turn)
// for code certagent never runs (issue 15). A test (deps_test.go) keeps
// them out of the binary.
//
// The interfaces keep client-go's shape (cs.CoreV1().Nodes().Get(...)),
// so client-go's fake clientset serves the unit tests through
// kubefake.Wrap.
package kube

import (
	"context"

	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
)

// Resource is what certagent does with one kind of object: the verbs of
// client-go's typed clients that every kind has. Status is written with
// Patch and the "status" subresource.
type Resource[T, L any] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error)
	Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
}

// The resources certagent uses.
type (
	// CSRs are certificates.k8s.io/v1 CertificateSigningRequests.
	CSRs = Resource[*certificatesv1.CertificateSigningRequest, *certificatesv1.CertificateSigningRequestList]
	// Nodes are core/v1 Nodes.
	Nodes = Resource[*corev1.Node, *corev1.NodeList]
	// Events are core/v1 Events of one namespace.
	Events = Resource[*corev1.Event, *corev1.EventList]
	// ConfigMaps are core/v1 ConfigMaps of one namespace.
	ConfigMaps = Resource[*corev1.ConfigMap, *corev1.ConfigMapList]
	// Leases are coordination.k8s.io/v1 Leases of one namespace.
	Leases = Resource[*coordinationv1.Lease, *coordinationv1.LeaseList]
	// Roles are rbac.authorization.k8s.io/v1 Roles of one namespace.
	Roles = Resource[*rbacv1.Role, *rbacv1.RoleList]
	// RoleBindings are rbac.authorization.k8s.io/v1 RoleBindings of one namespace.
	RoleBindings = Resource[*rbacv1.RoleBinding, *rbacv1.RoleBindingList]
	// EndpointSlices are discovery.k8s.io/v1 EndpointSlices of one namespace.
	EndpointSlices = Resource[*discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList]
)

// Interface is a client of the API groups certagent uses.
type Interface interface {
	CertificatesV1() CertificatesV1
	CoreV1() CoreV1
	CoordinationV1() CoordinationV1
	RbacV1() RbacV1
	DiscoveryV1() DiscoveryV1
}

// CertificatesV1 is the certificates.k8s.io/v1 group.
type CertificatesV1 interface {
	CertificateSigningRequests() CSRs
}

// CoreV1 is the core/v1 group.
type CoreV1 interface {
	Nodes() Nodes
	Events(namespace string) Events
	ConfigMaps(namespace string) ConfigMaps
}

// CoordinationV1 is the coordination.k8s.io/v1 group.
type CoordinationV1 interface {
	Leases(namespace string) Leases
}

// RbacV1 is the rbac.authorization.k8s.io/v1 group.
type RbacV1 interface {
	Roles(namespace string) Roles
	RoleBindings(namespace string) RoleBindings
}

// DiscoveryV1 is the discovery.k8s.io/v1 group.
type DiscoveryV1 interface {
	EndpointSlices(namespace string) EndpointSlices
}
