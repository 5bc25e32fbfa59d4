package report

import (
	"context"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/kube/kubefake"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	testingclock "k8s.io/utils/clock/testing"
)

// TestClientsetCondition: through client-go (a fake clientset), the
// condition is patched into the Node's status beside the others, the
// events land in default, and a status flip moves lastTransitionTime.
func TestClientsetCondition(t *testing.T) {
	cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}})
	clk := testingclock.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	r := New(func() (NodeClient, error) { return Clientset(kubefake.Wrap(cs)), nil }, "kubelet.conf", logrus.New())
	r.Clock = clk
	r.SetNode("node1")
	ctx := context.Background()
	get := func() (ours, ready *corev1.NodeCondition) {
		n, err := cs.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range n.Status.Conditions {
			switch c.Type {
			case ConditionType:
				ours = &n.Status.Conditions[i]
			case corev1.NodeReady:
				ready = &n.Status.Conditions[i]
			}
		}
		return ours, ready
	}
	t0 := clk.Now()
	r.Event(corev1.EventTypeNormal, "CertificateRenewed", "renewed apiserver")
	r.Condition(true, "CertificatesHealthy", "ok")
	r.Flush(ctx)
	ours, ready := get()
	if ours == nil || ready == nil || ours.Status != corev1.ConditionTrue || !ours.LastTransitionTime.Time.Equal(t0) {
		t.Fatalf("conditions: ours %+v, Ready %+v", ours, ready)
	}
	evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(evs.Items) != 1 || evs.Items[0].Reason != "CertificateRenewed" {
		t.Fatalf("events %+v, %v", evs, err)
	}
	clk.Step(time.Minute)
	r.Condition(true, "CertificatesHealthy", "still ok")
	r.Flush(ctx)
	if ours, _ = get(); !ours.LastTransitionTime.Time.Equal(t0) || !ours.LastHeartbeatTime.Time.Equal(t0.Add(time.Minute)) || ours.Message != "still ok" {
		t.Errorf("same status: %+v", ours)
	}
	clk.Step(time.Minute)
	r.Condition(false, "RenewalFailed", "apiserver: lock taken")
	r.Flush(ctx)
	if ours, _ = get(); ours.Status != corev1.ConditionFalse || !ours.LastTransitionTime.Time.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("flipped: %+v", ours)
	}
}
