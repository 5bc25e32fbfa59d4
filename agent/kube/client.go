package kube

import (
	"fmt"
	"net/http"

	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"
)

// scheme knows the five groups and nothing else.
var (
	scheme         = runtime.NewScheme()
	codecs         = serializer.NewCodecFactory(scheme)
	parameterCodec = runtime.NewParameterCodec(scheme)
)

func init() {
	b := runtime.NewSchemeBuilder(certificatesv1.AddToScheme, corev1.AddToScheme,
		coordinationv1.AddToScheme, rbacv1.AddToScheme, discoveryv1.AddToScheme)
	if err := b.AddToScheme(scheme); err != nil {
		panic(err) // the types are compiled in: this cannot fail at run time
	}
}

// Client is Interface over the API server: one REST client per group,
// sharing one HTTP client (one connection pool, one TLS configuration).
type Client struct {
	certificates, core, coordination, rbac, discovery rest.Interface
}

// NewForConfig builds a Client from c, which it does not change.
func NewForConfig(c *rest.Config) (*Client, error) {
	hc, err := rest.HTTPClientFor(c)
	if err != nil {
		return nil, err
	}
	cl := &Client{}
	for _, g := range []struct {
		to *rest.Interface
		gv schema.GroupVersion
	}{
		{&cl.certificates, certificatesv1.SchemeGroupVersion},
		{&cl.core, corev1.SchemeGroupVersion},
		{&cl.coordination, coordinationv1.SchemeGroupVersion},
		{&cl.rbac, rbacv1.SchemeGroupVersion},
		{&cl.discovery, discoveryv1.SchemeGroupVersion},
	} {
		if *g.to, err = restFor(c, hc, g.gv); err != nil {
			return nil, fmt.Errorf("%s: %w", g.gv, err)
		}
	}
	return cl, nil
}

func restFor(c *rest.Config, hc *http.Client, gv schema.GroupVersion) (rest.Interface, error) {
	cfg := rest.CopyConfig(c)
	cfg.GroupVersion = &gv
	cfg.APIPath = "/apis"
	if gv.Group == "" {
		cfg.APIPath = "/api"
	}
	cfg.NegotiatedSerializer = codecs.WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	return rest.RESTClientForConfigAndClient(cfg, hc)
}

// resource is the generic typed client of one kind.
func resource[T interface {
	runtime.Object
	metav1.Object
}, L runtime.Object](rc rest.Interface, plural, namespace string, newT func() T, newL func() L) *gentype.ClientWithList[T, L] {
	return gentype.NewClientWithList(plural, rc, parameterCodec, namespace, newT, newL)
}

type group struct{ c *Client }

// CertificatesV1 implements Interface.
func (c *Client) CertificatesV1() CertificatesV1 { return group{c} }

// CoreV1 implements Interface.
func (c *Client) CoreV1() CoreV1 { return group{c} }

// CoordinationV1 implements Interface.
func (c *Client) CoordinationV1() CoordinationV1 { return group{c} }

// RbacV1 implements Interface.
func (c *Client) RbacV1() RbacV1 { return group{c} }

// DiscoveryV1 implements Interface.
func (c *Client) DiscoveryV1() DiscoveryV1 { return group{c} }

func (g group) CertificateSigningRequests() CSRs {
	return resource(g.c.certificates, "certificatesigningrequests", "",
		func() *certificatesv1.CertificateSigningRequest { return &certificatesv1.CertificateSigningRequest{} },
		func() *certificatesv1.CertificateSigningRequestList {
			return &certificatesv1.CertificateSigningRequestList{}
		})
}

func (g group) Nodes() Nodes {
	return resource(g.c.core, "nodes", "",
		func() *corev1.Node { return &corev1.Node{} }, func() *corev1.NodeList { return &corev1.NodeList{} })
}

func (g group) Events(namespace string) Events {
	return resource(g.c.core, "events", namespace,
		func() *corev1.Event { return &corev1.Event{} }, func() *corev1.EventList { return &corev1.EventList{} })
}

func (g group) ConfigMaps(namespace string) ConfigMaps {
	return resource(g.c.core, "configmaps", namespace,
		func() *corev1.ConfigMap { return &corev1.ConfigMap{} }, func() *corev1.ConfigMapList { return &corev1.ConfigMapList{} })
}

func (g group) Leases(namespace string) Leases {
	return resource(g.c.coordination, "leases", namespace,
		func() *coordinationv1.Lease { return &coordinationv1.Lease{} },
		func() *coordinationv1.LeaseList { return &coordinationv1.LeaseList{} })
}

func (g group) Roles(namespace string) Roles {
	return resource(g.c.rbac, "roles", namespace,
		func() *rbacv1.Role { return &rbacv1.Role{} }, func() *rbacv1.RoleList { return &rbacv1.RoleList{} })
}

func (g group) RoleBindings(namespace string) RoleBindings {
	return resource(g.c.rbac, "rolebindings", namespace,
		func() *rbacv1.RoleBinding { return &rbacv1.RoleBinding{} },
		func() *rbacv1.RoleBindingList { return &rbacv1.RoleBindingList{} })
}

func (g group) EndpointSlices(namespace string) EndpointSlices {
	return resource(g.c.discovery, "endpointslices", namespace,
		func() *discoveryv1.EndpointSlice { return &discoveryv1.EndpointSlice{} },
		func() *discoveryv1.EndpointSliceList { return &discoveryv1.EndpointSliceList{} })
}
