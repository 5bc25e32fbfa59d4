package integration

import (
	"bytes"
	"context"
	"crypto/x509"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/rotate/pki"
)

// lockedBuffer is a command's output read while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCARotateClusterInfoAndRootCA: against the real kube-apiserver, the
// command adds the new CA to kube-public/cluster-info at trust, does not
// move to reissue before kube-system/kube-root-ca.crt holds the new CA
// (published here by the test: the test control plane runs no
// root-ca-cert-publisher), tells the operator to restart in-cluster
// workloads, and leaves cluster-info trusting the new CA alone at the end.
func TestCARotateClusterInfoAndRootCA(t *testing.T) {
	c := sharedCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := c.Admin
	root, _ := caRotationSetup(t, ctx, c)
	old := clusterCA(t, c).Cert
	kc := clientcmdapi.NewConfig()
	kc.Clusters[""] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: pki.EncodeCertPEM(old)}
	kcData, err := clientcmd.Write(*kc)
	if err != nil {
		t.Fatal(err)
	}
	cms := func(ns string) interface {
		Create(context.Context, *corev1.ConfigMap, metav1.CreateOptions) (*corev1.ConfigMap, error)
		Get(context.Context, string, metav1.GetOptions) (*corev1.ConfigMap, error)
		Update(context.Context, *corev1.ConfigMap, metav1.UpdateOptions) (*corev1.ConfigMap, error)
		Delete(context.Context, string, metav1.DeleteOptions) error
	} {
		return admin.CoreV1().ConfigMaps(ns)
	}
	for _, cm := range []*corev1.ConfigMap{
		{ObjectMeta: metav1.ObjectMeta{Name: carotate.ClusterInfoName, Namespace: carotate.ClusterInfoNamespace}, Data: map[string]string{"kubeconfig": string(kcData)}},
		{ObjectMeta: metav1.ObjectMeta{Name: carotate.RootCAName, Namespace: carotate.Namespace}, Data: map[string]string{"ca.crt": string(pki.EncodeCertPEM(old))}},
	} {
		if _, err := cms(cm.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cms(cm.Namespace).Delete(context.Background(), cm.Name, metav1.DeleteOptions{}) })
	}
	trusted := func() []*x509.Certificate {
		cm, err := cms(carotate.ClusterInfoNamespace).Get(ctx, carotate.ClusterInfoName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		kc, err := clientcmd.Load([]byte(cm.Data["kubeconfig"]))
		if err != nil {
			t.Fatal(err)
		}
		b, err := pki.ParseBundle(kc.Clusters[""].CertificateAuthorityData)
		if err != nil {
			t.Fatal(err)
		}
		return b.Certs
	}

	cmd := exec.Command(certagentBin, "ca", "rotate", "--root", root, "--timeout", "60s")
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "waiting until kube-system/kube-root-ca.crt holds the new CA") {
		if time.Now().After(deadline) {
			t.Fatalf("the command never waited for kube-root-ca.crt:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cm, err := admin.CoreV1().ConfigMaps(carotate.Namespace).Get(ctx, carotate.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := carotate.Parse(cm.Data)
	if err != nil || st.Phase != carotate.Trust {
		t.Fatalf("while kube-root-ca.crt lacks the new CA: %+v %v", st, err)
	}
	b, _ := pki.ParseBundle(st.NewCA)
	next := b.Certs[0]
	if got := trusted(); len(got) != 2 || !got[0].Equal(old) || !got[1].Equal(next) {
		t.Fatalf("at trust cluster-info trusts %d CAs, want old then new", len(got))
	}
	// The controller manager, restarted after trust, publishes the bundle.
	rc, err := cms(carotate.Namespace).Get(ctx, carotate.RootCAName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc.Data["ca.crt"] = string(pki.EncodeCertPEM(old, next))
	if _, err := cms(carotate.Namespace).Update(ctx, rc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ca rotate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "RESTART THE WORKLOADS THAT USE IN-CLUSTER CONFIG") || !strings.Contains(out.String(), "rotation "+st.ID+" of ca done") {
		t.Fatalf("no notice, or not done:\n%s", out.String())
	}
	if got := trusted(); len(got) != 1 || !got[0].Equal(next) {
		t.Fatalf("after the rotation cluster-info trusts %d CAs, want the new one alone", len(got))
	}
	t.Logf("the command's output:\n%s", out.String())
}
