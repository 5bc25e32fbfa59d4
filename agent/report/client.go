package report

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certagent/certagent/agent/kube"
)

// NodeClient is what the reporter asks of the API server: what a node's
// own credential allows (the Node authorizer).
type NodeClient interface {
	// CreateEvent posts an Event.
	CreateEvent(ctx context.Context, ev *corev1.Event) error
	// Condition returns the Node's condition of the type (nil: none).
	Condition(ctx context.Context, node, typ string) (*corev1.NodeCondition, error)
	// PatchCondition sets one condition of the Node's status.
	PatchCondition(ctx context.Context, node string, c corev1.NodeCondition) error
}

// Clientset is a NodeClient over client-go.
func Clientset(cs kube.Interface) NodeClient { return clientset{cs} }

type clientset struct{ cs kube.Interface }

// apiTimeout bounds each request.
const apiTimeout = 10 * time.Second

func (c clientset) CreateEvent(ctx context.Context, ev *corev1.Event) error {
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	_, err := c.cs.CoreV1().Events(ev.Namespace).Create(cctx, ev, metav1.CreateOptions{})
	return err
}

func (c clientset) Condition(ctx context.Context, node, typ string) (*corev1.NodeCondition, error) {
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	n, err := c.cs.CoreV1().Nodes().Get(cctx, node, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	for i := range n.Status.Conditions {
		if string(n.Status.Conditions[i].Type) == typ {
			return &n.Status.Conditions[i], nil
		}
	}
	return nil, nil
}

func (c clientset) PatchCondition(ctx context.Context, node string, cond corev1.NodeCondition) error {
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	_, err = c.cs.CoreV1().Nodes().Patch(cctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("patch node %s status: %w", node, err)
	}
	return nil
}
