package carotate

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/rotate/pki"
)

// clusterInfo is a kubeadm cluster-info ConfigMap trusting cas.
func clusterInfo(t *testing.T, cas ...*x509.Certificate) *corev1.ConfigMap {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters[""] = &clientcmdapi.Cluster{Server: "https://cp1:6443", CertificateAuthorityData: pki.EncodeCertPEM(cas...)}
	data, err := clientcmd.Write(*kc)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ClusterInfoName, Namespace: ClusterInfoNamespace},
		Data: map[string]string{"kubeconfig": string(data)}}
}

// clusterInfoCAs returns the certificates cluster-info's kubeconfig trusts.
func (f *fakeCluster) clusterInfoCAs() []*x509.Certificate {
	f.t.Helper()
	cm, err := f.cs.CoreV1().ConfigMaps(ClusterInfoNamespace).Get(context.Background(), ClusterInfoName, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	kc, err := clientcmd.Load([]byte(cm.Data["kubeconfig"]))
	if err != nil {
		f.t.Fatal(err)
	}
	b, err := pki.ParseBundle(kc.Clusters[""].CertificateAuthorityData)
	if err != nil {
		f.t.Fatal(err)
	}
	return b.Certs
}

func sameCAs(got []*x509.Certificate, want ...*x509.Certificate) bool {
	return slices.EqualFunc(got, want, (*x509.Certificate).Equal)
}

// TestClusterInfoFollowsTheRotation: cluster-info trusts the new CA next
// to the old one from trust on and the new one alone after finish; an
// update that loses a race (the bootstrap signer writes in between) is
// read and made again, keeping the other writer's change.
func TestClusterInfoFollowsTheRotation(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true), node("w1", false))
	if err := f.cs.Tracker().Add(clusterInfo(t, f.oldCA.Cert)); err != nil {
		t.Fatal(err)
	}
	var raced atomic.Bool
	f.cs.PrependReactor("update", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		cm := a.(k8stesting.UpdateAction).GetObject().(*corev1.ConfigMap)
		if cm.Name != ClusterInfoName || raced.Swap(true) {
			return false, nil, nil
		}
		cur, _ := f.cs.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, ClusterInfoNamespace, ClusterInfoName)
		signed := cur.(*corev1.ConfigMap).DeepCopy()
		signed.Data["jws-kubeconfig-abcdef"] = "signature"
		signed.ResourceVersion = "2"
		f.cs.Tracker().Update(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, signed, ClusterInfoNamespace)
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, cm.Name, errors.New("changed"))
	})
	f.held["w1"] = Reissue
	out := &syncBuffer{}
	done := run(f.rotator(out))
	f.waitWatch(Reissue)
	if got := f.clusterInfoCAs(); !sameCAs(got, f.oldCA.Cert, f.newCA) || !raced.Load() {
		t.Fatalf("at reissue cluster-info trusts %d CAs (raced %v), want old then new", len(got), raced.Load())
	}
	f.report("w1", NodeReport{ID: f.state().ID, Phase: Reissue, Done: true})
	if err := result(t, done); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if got := f.clusterInfoCAs(); !sameCAs(got, f.newCA) {
		t.Fatalf("after finish cluster-info trusts %d CAs, want the new one alone", len(got))
	}
	cm, _ := f.cs.CoreV1().ConfigMaps(ClusterInfoNamespace).Get(context.Background(), ClusterInfoName, metav1.GetOptions{})
	if cm.Data["jws-kubeconfig-abcdef"] != "signature" {
		t.Error("the other writer's change was lost")
	}
	for _, want := range []string{"kube-public/cluster-info: the new CA added next to the old one", "kube-public/cluster-info: the old CA replaced by the new one"} {
		if strings.Count(out.String(), want) != 1 {
			t.Errorf("progress says %q %d times, want once:\n%s", want, strings.Count(out.String(), want), out.String())
		}
	}
}

// TestClusterInfoOfAnotherCALeftAlone: a cluster-info that does not trust
// the old CA, and any rotation of another CA than the cluster CA, leave
// it as it is.
func TestClusterInfoOfAnotherCALeftAlone(t *testing.T) {
	for _, ca := range []string{"ca", "front-proxy-ca"} {
		f := newFakeCluster(t, node("cp1", true))
		other := mustCA(t)
		trusted := other.Cert
		if ca != "ca" {
			trusted = f.oldCA.Cert
		}
		if err := f.cs.Tracker().Add(clusterInfo(t, trusted)); err != nil {
			t.Fatal(err)
		}
		r := f.rotator(nil)
		r.CA = ca
		if _, err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := f.clusterInfoCAs(); !sameCAs(got, trusted) {
			t.Errorf("%s: cluster-info changed", ca)
		}
	}
}

// rootCA sets kube-system/kube-root-ca.crt to cas.
func (f *fakeCluster) rootCA(cas ...*x509.Certificate) {
	f.t.Helper()
	f.putConfigMap(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: RootCAName, Namespace: Namespace}, Data: map[string]string{"ca.crt": string(pki.EncodeCertPEM(cas...))}})
}

// putConfigMap creates or replaces a ConfigMap other than the rotation's.
func (f *fakeCluster) putConfigMap(cm *corev1.ConfigMap) {
	f.t.Helper()
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	if _, err := f.cs.Tracker().Get(gvr, cm.Namespace, cm.Name); err == nil {
		if err := f.cs.Tracker().Update(gvr, cm, cm.Namespace); err != nil {
			f.t.Fatal(err)
		}
		return
	}
	if err := f.cs.Tracker().Add(cm); err != nil {
		f.t.Fatal(err)
	}
}

// TestReissueWaitsForRootCA: after trust the command does not move to
// reissue until kube-root-ca.crt holds the new CA, then tells the operator
// to restart in-cluster workloads; --until trust stops there for that.
func TestReissueWaitsForRootCA(t *testing.T) {
	defer func(d time.Duration) { retryAfter = d }(retryAfter)
	retryAfter = time.Millisecond
	for _, until := range []Phase{"", Trust} {
		f := newFakeCluster(t, node("cp1", true))
		f.rootCA(f.oldCA.Cert)
		out := &syncBuffer{}
		r := f.rotator(out)
		r.Clock, r.Until = clock.RealClock{}, until
		f.cs.Tracker().Update(schema.GroupVersionResource{Group: "coordination.k8s.io", Version: "v1", Resource: "leases"}, lease("cp1", time.Now()), LeaseNamespace)
		done := run(r)
		out.waitFor(t, "waiting until kube-system/kube-root-ca.crt holds the new CA")
		if c := f.state(); c.Phase != Trust || !c.finished(Trust) {
			t.Fatalf("--until %q: while kube-root-ca.crt lacks the new CA: phase %s", until, c.Phase)
		}
		f.rootCA(f.oldCA.Cert, f.newCA) // the controller manager restarted
		if err := result(t, done); err != nil {
			t.Fatalf("--until %q: %v\n%s", until, err, out.String())
		}
		want := map[Phase]Phase{"": Done, Trust: Trust}[until]
		if c := f.state(); c.Phase != want {
			t.Errorf("--until %q: phase %s, want %s", until, c.Phase, want)
		}
		if !strings.Contains(out.String(), "RESTART THE WORKLOADS THAT USE IN-CLUSTER CONFIG") {
			t.Errorf("--until %q: no notice:\n%s", until, out.String())
		}
		if warned := strings.Contains(out.String(), "--until trust` stops here"); warned != (until == "") {
			t.Errorf("--until %q: the warning to stop at trust printed: %v", until, warned)
		}
	}
}

// TestRootCAWaitTimesOut: a controller manager that never publishes the
// new CA ends the wait at --timeout, saying what is missing; without the
// ConfigMap nothing is waited for.
func TestRootCAWaitTimesOut(t *testing.T) {
	f := newFakeCluster(t, node("cp1", true))
	f.rootCA(f.oldCA.Cert)
	out := &syncBuffer{}
	done := run(f.rotator(out))
	out.waitFor(t, "waiting until kube-system/kube-root-ca.crt holds the new CA")
	waitTimer(t, f)
	f.clock.Step(2 * time.Minute)
	err := result(t, done)
	var te *TimeoutError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "kube-system/kube-root-ca.crt does not hold the new CA") || f.state().Phase != Trust {
		t.Fatalf("got %v, phase %s", err, f.state().Phase)
	}
	// No ConfigMap: noted, not waited for.
	g := newFakeCluster(t, node("cp1", true))
	out = &syncBuffer{}
	if _, err := g.rotator(out).Run(context.Background()); err != nil || !strings.Contains(out.String(), "note: there is no kube-system/kube-root-ca.crt") {
		t.Fatalf("without kube-root-ca.crt: %v\n%s", err, out.String())
	}
}
