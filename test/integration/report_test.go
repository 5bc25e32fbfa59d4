package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestEventsAndNodeCondition: with only the node's credential, certagent
// posts Events on its Node and keeps the CertificateRotationHealthy
// condition, against the real API server (Node authorizer, RBAC, and the
// NodeRestriction admission plugin).
func TestEventsAndNodeCondition(t *testing.T) {
	c := sharedCluster(t)
	ctx := context.Background()
	node := "worker-report"
	if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	root := makeNode(t, c, nodeOpts{name: node, age: 57 * time.Minute, life: time.Hour})
	d := startDaemon(t, certagentBin, root, nil)
	condition := func() *corev1.NodeCondition {
		n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		for i := range n.Status.Conditions {
			if n.Status.Conditions[i].Type == "CertificateRotationHealthy" {
				return &n.Status.Conditions[i]
			}
		}
		return nil
	}
	events := func(reason string) []corev1.Event {
		l, _ := c.Admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + node})
		var out []corev1.Event
		for _, e := range l.Items {
			if e.Reason == reason {
				out = append(out, e)
			}
		}
		return out
	}
	waitFor := func(what string, ok func() bool) {
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\n%s", what, d.log())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor("a CertificateRenewed event", func() bool { return len(events("CertificateRenewed")) > 0 })
	if e := events("CertificateRenewed")[0]; e.Source.Component != "certagent" || e.InvolvedObject.Kind != "Node" || !strings.Contains(e.Message, "kubelet-client-current") {
		t.Errorf("event: %+v", e)
	}
	waitFor("the condition True", func() bool { cd := condition(); return cd != nil && cd.Status == corev1.ConditionTrue })

	// An expired certificate nothing here can renew: a warning event and
	// the condition False.
	other, _ := pkitest.NewCA("elsewhere", time.Now().Add(-48*time.Hour), time.Now().Add(48*time.Hour), pkitest.ECDSA)
	ec, ek, _ := other.Issue(pkitest.Spec{CommonName: "old-webhook", NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	os.WriteFile(filepath.Join(root, "etc/kubernetes/pki/old-webhook.crt"), pkitest.CertPEM(ec), 0o644)
	os.WriteFile(filepath.Join(root, "etc/kubernetes/pki/old-webhook.key"), pkitest.KeyPEM(ek), 0o600)
	waitFor("the condition False", func() bool {
		cd := condition()
		return cd != nil && cd.Status == corev1.ConditionFalse && cd.Reason == "CertificateExpired" && strings.Contains(cd.Message, "old-webhook")
	})
	waitFor("a CertificateExpiringUnrenewable event", func() bool { return len(events("CertificateExpiringUnrenewable")) > 0 })
}
