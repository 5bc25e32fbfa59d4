package carotate

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/rotate/pki"
)

// authInfo sets kube-system/extension-apiserver-authentication's data;
// a key's CAs are given as certificates.
func (f *fakeCluster) authInfo(data map[string][]*x509.Certificate) {
	f.t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: AuthInfoName, Namespace: Namespace},
		Data: map[string]string{"requestheader-allowed-names": `["front-proxy-client"]`}}
	for k, cas := range data {
		cm.Data[k] = string(pki.EncodeCertPEM(cas...))
	}
	f.putConfigMap(cm)
}

// authInfoCAs returns the CAs of a key of extension-apiserver-authentication.
func (f *fakeCluster) authInfoCAs(key string) []*x509.Certificate {
	f.t.Helper()
	cm, err := f.cs.CoreV1().ConfigMaps(Namespace).Get(context.Background(), AuthInfoName, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	if cm.Data["requestheader-allowed-names"] != `["front-proxy-client"]` {
		f.t.Error("another key of extension-apiserver-authentication changed")
	}
	b, err := pki.ParseBundle([]byte(cm.Data[key]))
	if err != nil {
		f.t.Fatalf("%s: %v", key, err)
	}
	return b.Certs
}

// TestFrontProxyReissueWaitsForAuthInfo: in a rotation of the front-proxy
// CA the command does not move to reissue (where kube-apiserver's front
// proxy certificate comes from the new CA) until kube-apiserver has
// published the new CA for aggregated API servers, and once every node is
// done with finish it removes the old CA there, which kube-apiserver
// would keep until it expires; the cluster CA's copy is left alone.
func TestFrontProxyReissueWaitsForAuthInfo(t *testing.T) {
	defer func(d time.Duration) { retryAfter = d }(retryAfter)
	retryAfter = time.Millisecond
	f := newFakeCluster(t, node("cp1", true))
	cluster := mustCA(t).Cert
	f.authInfo(map[string][]*x509.Certificate{"client-ca-file": {cluster}, "requestheader-client-ca-file": {f.oldCA.Cert}})
	out := &syncBuffer{}
	r := f.rotator(out)
	r.Clock, r.CA = clock.RealClock{}, "front-proxy-ca"
	f.cs.Tracker().Update(schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}, lease("cp1", time.Now()), LeaseNamespace)
	done := run(r)
	out.waitFor(t, "waiting until kube-system/extension-apiserver-authentication holds the new CA")
	if c := f.state(); c.Phase != Trust || !c.finished(Trust) {
		t.Fatalf("while extension-apiserver-authentication lacks the new CA: phase %s", c.Phase)
	}
	// kube-apiserver, restarted in trust, merges its bundle in.
	f.authInfo(map[string][]*x509.Certificate{"client-ca-file": {cluster}, "requestheader-client-ca-file": {f.oldCA.Cert, f.newCA}})
	if err := result(t, done); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if c := f.state(); c.Phase != Done {
		t.Fatalf("phase %s, want done", c.Phase)
	}
	if got := f.authInfoCAs("requestheader-client-ca-file"); !sameCAs(got, f.newCA) {
		t.Errorf("after finish requestheader-client-ca-file holds %d CAs, want the new one alone\n%s", len(got), out.String())
	}
	if got := f.authInfoCAs("client-ca-file"); !sameCAs(got, cluster) {
		t.Error("the cluster CA's copy changed")
	}
	if want := "the old CA removed from requestheader-client-ca-file"; strings.Count(out.String(), want) != 1 {
		t.Errorf("progress says %q %d times, want once:\n%s", want, strings.Count(out.String(), want), out.String())
	}
}

// TestAuthInfoWaitTimesOut: a kube-apiserver that never publishes the new
// front-proxy CA ends the wait at --timeout saying what is missing; one
// without --requestheader-client-ca-file (no key) is not waited for.
func TestAuthInfoWaitTimesOut(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true))
	f.authInfo(map[string][]*x509.Certificate{"requestheader-client-ca-file": {f.oldCA.Cert}})
	out := &syncBuffer{}
	r := f.rotator(out)
	r.CA = "front-proxy-ca"
	done := run(r)
	out.waitFor(t, "waiting until kube-system/extension-apiserver-authentication holds the new CA")
	waitTimer(t, f)
	f.clock.Step(2 * time.Minute)
	err := result(t, done)
	var te *TimeoutError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "kube-system/extension-apiserver-authentication does not hold the new CA") || f.state().Phase != Trust {
		t.Fatalf("got %v, phase %s", err, f.state().Phase)
	}
	g := newFakeCluster(t, node("cp1", true))
	g.authInfo(map[string][]*x509.Certificate{"client-ca-file": {g.oldCA.Cert}})
	out = &syncBuffer{}
	r = g.rotator(out)
	r.CA = "front-proxy-ca"
	if _, err := r.Run(context.Background()); err != nil || !strings.Contains(out.String(), "note: kube-system/extension-apiserver-authentication has no requestheader-client-ca-file") {
		t.Fatalf("without requestheader-client-ca-file: %v\n%s", err, out.String())
	}
}

// TestAuthInfoClientCA: a rotation of the cluster CA removes the old CA
// from client-ca-file at the end, but only when the new one is there
// (else it warns and leaves it: aggregated API servers would trust
// neither); the etcd CA is in no key and nothing changes.
func TestAuthInfoClientCA(t *testing.T) {
	for _, tc := range []struct {
		ca          string
		published   bool // kube-apiserver published the new CA
		want, warns bool // the old CA removed; a warning
	}{
		{"ca", true, true, false},
		{"ca", false, false, true},
		{"etcd-ca", true, false, false},
	} {
		f := newFakeCluster(t, node("cp1", true))
		f.rootCA(f.oldCA.Cert, f.newCA)
		before := []*x509.Certificate{f.oldCA.Cert}
		if tc.published {
			before = append(before, f.newCA)
		}
		f.authInfo(map[string][]*x509.Certificate{"client-ca-file": before})
		out := &syncBuffer{}
		r := f.rotator(out)
		r.CA = tc.ca
		if _, err := r.Run(context.Background()); err != nil {
			t.Fatalf("%+v: %v\n%s", tc, err, out.String())
		}
		want := before
		if tc.want {
			want = []*x509.Certificate{f.newCA}
		}
		if got := f.authInfoCAs("client-ca-file"); !sameCAs(got, want...) {
			t.Errorf("%+v: client-ca-file holds %d CAs, want %d", tc, len(got), len(want))
		}
		if warned := strings.Contains(out.String(), "warning: kube-system/extension-apiserver-authentication's client-ca-file trusts the old CA and not the new one"); warned != tc.warns {
			t.Errorf("%+v: warned %v\n%s", tc, warned, out.String())
		}
		if strings.Contains(out.String(), "waiting until kube-system/extension-apiserver-authentication") {
			t.Errorf("%+v: waited for extension-apiserver-authentication", tc)
		}
	}
}

// TestAuthInfoUnreadable: a client-ca-file that is not a PEM bundle is
// left as it is, with a warning, not taken for one without the old CA.
func TestAuthInfoUnreadable(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true))
	f.rootCA(f.oldCA.Cert, f.newCA)
	f.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: AuthInfoName, Namespace: Namespace},
		Data: map[string]string{"client-ca-file": "not a certificate"}})
	out := &syncBuffer{}
	r := f.rotator(out)
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "client-ca-file cannot be read") {
		t.Errorf("no warning:\n%s", out.String())
	}
	cm, err := f.cs.CoreV1().ConfigMaps(Namespace).Get(context.Background(), AuthInfoName, metav1.GetOptions{})
	if err != nil || cm.Data["client-ca-file"] != "not a certificate" {
		t.Errorf("client-ca-file changed: %v %q", err, cm.Data["client-ca-file"])
	}
}
