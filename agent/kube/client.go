package kube

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	certificatesv1 "k8s.io/api/certificates/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
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
	c = rest.CopyConfig(c)
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent() // before the HTTP client, which carries it
	}
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
	// Protobuf, as client-go's typed clients ask for built-in kinds:
	// smaller and cheaper to decode than JSON (a Node is large).
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return rest.RESTClientForConfigAndClient(cfg, hc)
}

// resource is the typed client of one kind: client-go's REST client
// with the kind's path and types. (client-go's own generic typed client,
// gentype, links client-go's testing fakes and through them the managed
// fields and OpenAPI packages: about a megabyte of resident memory for
// code certagent never runs.)
type resource[T interface {
	runtime.Object
	metav1.Object
}, L runtime.Object] struct {
	rc        rest.Interface
	plural    string
	namespace string
	newT      func() T
	newL      func() L
}

func (c resource[T, L]) on(r *rest.Request) *rest.Request {
	return r.NamespaceIfScoped(c.namespace, c.namespace != "").Resource(c.plural)
}

// Get implements Resource.
func (c resource[T, L]) Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error) {
	out := c.newT()
	return out, c.on(c.rc.Get()).Name(name).VersionedParams(&opts, parameterCodec).Do(ctx).Into(out)
}

// List implements Resource.
func (c resource[T, L]) List(ctx context.Context, opts metav1.ListOptions) (L, error) {
	out := c.newL()
	return out, c.on(c.rc.Get()).VersionedParams(&opts, parameterCodec).Timeout(timeoutOf(opts)).Do(ctx).Into(out)
}

// Watch implements Resource.
func (c resource[T, L]) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return c.on(c.rc.Get()).VersionedParams(&opts, parameterCodec).Timeout(timeoutOf(opts)).Watch(ctx)
}

// Create implements Resource.
func (c resource[T, L]) Create(ctx context.Context, obj T, opts metav1.CreateOptions) (T, error) {
	out := c.newT()
	return out, c.on(c.rc.Post()).VersionedParams(&opts, parameterCodec).Body(obj).Do(ctx).Into(out)
}

// Update implements Resource.
func (c resource[T, L]) Update(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error) {
	out := c.newT()
	return out, c.on(c.rc.Put()).Name(obj.GetName()).VersionedParams(&opts, parameterCodec).Body(obj).Do(ctx).Into(out)
}

// Delete implements Resource.
func (c resource[T, L]) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return c.on(c.rc.Delete()).Name(name).Body(&opts).Do(ctx).Error()
}

// Patch implements Resource.
func (c resource[T, L]) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error) {
	out := c.newT()
	return out, c.on(c.rc.Patch(pt)).Name(name).SubResource(subresources...).VersionedParams(&opts, parameterCodec).Body(data).Do(ctx).Into(out)
}

// timeoutOf is a list's or watch's own timeout (0: none but the client's).
func timeoutOf(opts metav1.ListOptions) time.Duration {
	if opts.TimeoutSeconds == nil {
		return 0
	}
	return time.Duration(*opts.TimeoutSeconds) * time.Second
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
	return resource[*certificatesv1.CertificateSigningRequest, *certificatesv1.CertificateSigningRequestList]{
		g.c.certificates, "certificatesigningrequests", "",
		func() *certificatesv1.CertificateSigningRequest { return &certificatesv1.CertificateSigningRequest{} },
		func() *certificatesv1.CertificateSigningRequestList {
			return &certificatesv1.CertificateSigningRequestList{}
		}}
}

func (g group) Nodes() Nodes {
	return resource[*corev1.Node, *corev1.NodeList]{g.c.core, "nodes", "",
		func() *corev1.Node { return &corev1.Node{} }, func() *corev1.NodeList { return &corev1.NodeList{} }}
}

func (g group) Events(namespace string) Events {
	return resource[*corev1.Event, *corev1.EventList]{g.c.core, "events", namespace,
		func() *corev1.Event { return &corev1.Event{} }, func() *corev1.EventList { return &corev1.EventList{} }}
}

func (g group) ConfigMaps(namespace string) ConfigMaps {
	return resource[*corev1.ConfigMap, *corev1.ConfigMapList]{g.c.core, "configmaps", namespace,
		func() *corev1.ConfigMap { return &corev1.ConfigMap{} }, func() *corev1.ConfigMapList { return &corev1.ConfigMapList{} }}
}

func (g group) Leases(namespace string) Leases {
	return resource[*coordinationv1.Lease, *coordinationv1.LeaseList]{g.c.coordination, "leases", namespace,
		func() *coordinationv1.Lease { return &coordinationv1.Lease{} },
		func() *coordinationv1.LeaseList { return &coordinationv1.LeaseList{} }}
}

func (g group) Roles(namespace string) Roles {
	return resource[*rbacv1.Role, *rbacv1.RoleList]{g.c.rbac, "roles", namespace,
		func() *rbacv1.Role { return &rbacv1.Role{} }, func() *rbacv1.RoleList { return &rbacv1.RoleList{} }}
}

func (g group) RoleBindings(namespace string) RoleBindings {
	return resource[*rbacv1.RoleBinding, *rbacv1.RoleBindingList]{g.c.rbac, "rolebindings", namespace,
		func() *rbacv1.RoleBinding { return &rbacv1.RoleBinding{} },
		func() *rbacv1.RoleBindingList { return &rbacv1.RoleBindingList{} }}
}

func (g group) EndpointSlices(namespace string) EndpointSlices {
	return resource[*discoveryv1.EndpointSlice, *discoveryv1.EndpointSliceList]{g.c.discovery, "endpointslices", namespace,
		func() *discoveryv1.EndpointSlice { return &discoveryv1.EndpointSlice{} },
		func() *discoveryv1.EndpointSliceList { return &discoveryv1.EndpointSliceList{} }}
}
