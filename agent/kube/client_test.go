package kube

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
)

// TestRequestsOnTheWire: each resource goes to its API path with the
// verb asked, objects are sent as protobuf and protobuf is accepted (as
// client-go's typed clients do), a status patch goes to the status
// subresource, and API errors keep their kind (NotFound, AlreadyExists).
func TestRequestsOnTheWire(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.URL.Query().Get("watch")+" ct="+r.Header.Get("Content-Type")+" accept="+r.Header.Get("Accept")+" ua="+r.UserAgent())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		code, reason := http.StatusNotFound, "NotFound"
		if r.Method == http.MethodPost {
			code, reason = http.StatusConflict, "AlreadyExists"
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"` + reason + `","code":` + map[int]string{404: "404", 409: "409"}[code] + `}`))
	}))
	defer srv.Close()
	c, err := NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := []struct {
		call func() error
		want string
	}{
		{func() error { _, err := c.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{}); return err }, "GET /api/v1/nodes/n1 "},
		{func() error {
			_, err := c.CoreV1().Nodes().Patch(ctx, "n1", types.StrategicMergePatchType, []byte(`{}`), metav1.PatchOptions{}, "status")
			return err
		}, "PATCH /api/v1/nodes/n1/status  ct=application/strategic-merge-patch+json"},
		{func() error {
			_, err := c.CoreV1().Events("default").Create(ctx, &corev1.Event{}, metav1.CreateOptions{})
			return err
		}, "POST /api/v1/namespaces/default/events  ct=application/vnd.kubernetes.protobuf"},
		{func() error {
			_, err := c.CoreV1().ConfigMaps("kube-system").Update(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.UpdateOptions{})
			return err
		}, "PUT /api/v1/namespaces/kube-system/configmaps/x "},
		{func() error {
			_, err := c.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{})
			return err
		},
			"GET /apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases "},
		{func() error { return c.RbacV1().Roles("kube-system").Delete(ctx, "r", metav1.DeleteOptions{}) },
			"DELETE /apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/r "},
		{func() error {
			_, err := c.RbacV1().RoleBindings("kube-system").Create(ctx, &rbacv1.RoleBinding{}, metav1.CreateOptions{})
			return err
		}, "POST /apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings "},
		{func() error {
			_, err := c.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
			return err
		}, "GET /apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes "},
		{func() error {
			_, err := c.CertificatesV1().CertificateSigningRequests().Watch(ctx, metav1.ListOptions{})
			return err
		}, "GET /apis/certificates.k8s.io/v1/certificatesigningrequests true "},
	}
	for i, tc := range calls {
		err := tc.call()
		mu.Lock()
		got := seen[len(seen)-1]
		mu.Unlock()
		if len(seen) != i+1 || !strings.HasPrefix(got, tc.want) {
			t.Errorf("request %d: %q, want it to start %q", i, got, tc.want)
		}
		if !strings.Contains(got, "accept=application/vnd.kubernetes.protobuf,application/json") {
			t.Errorf("request %d does not accept protobuf first: %q", i, got)
		}
		if strings.Contains(got, "ua=Go-http-client") {
			t.Errorf("request %d has Go's default user agent: %q", i, got)
		}
		if strings.HasPrefix(tc.want, "POST") && !apierrors.IsAlreadyExists(err) ||
			!strings.HasPrefix(tc.want, "POST") && !apierrors.IsNotFound(err) {
			t.Errorf("request %d: error %v lost its kind", i, err)
		}
	}
}
