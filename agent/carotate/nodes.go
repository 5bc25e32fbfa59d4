package carotate

import (
	"context"
	"fmt"
	"slices"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/agent/kube"
)

// HealthConditionType is the Node condition every running certagent
// keeps (agent/report.ConditionType; a test keeps the two equal): a Node
// without it has no certagent to converge it.
const HealthConditionType = "CertificateRotationHealthy"

// ControlPlaneLabel marks kubeadm's control-plane nodes.
const ControlPlaneLabel = "node-role.kubernetes.io/control-plane"

// LeaseNamespace holds the kubelets' heartbeat Leases.
const LeaseNamespace = "kube-node-lease"

// defaultLeaseDuration is the kubelet's, for a Lease that does not say.
const defaultLeaseDuration = 40 * time.Second

// NodeView is what the command sees of one Node.
type NodeView struct {
	Name         string `json:"name"`
	ControlPlane bool   `json:"controlPlane"`
	// Certagent: the Node has certagent's health condition.
	Certagent bool `json:"certagent"`
	// Reported: Report is about the rotation asked for (a report of
	// another rotation id is ignored).
	Reported bool       `json:"reported"`
	Report   NodeReport `json:"-"`
	// Since is when the report's condition last changed state.
	Since time.Time `json:"-"`
}

// View reads n's rotation report for rotation id ("" takes any id).
func View(n *corev1.Node, id string) NodeView {
	v := NodeView{Name: n.Name}
	_, v.ControlPlane = n.Labels[ControlPlaneLabel]
	for _, c := range n.Status.Conditions {
		switch string(c.Type) {
		case HealthConditionType:
			v.Certagent = true
		case ConditionType:
			r, ok := ParseCondition(c.Status == corev1.ConditionTrue, c.Reason, c.Message)
			if ok && (id == "" || r.ID == id) {
				v.Reported, v.Report, v.Since = true, r, c.LastTransitionTime.Time
			}
		}
	}
	return v
}

// DoneWith reports whether the node has finished phase p (or a later one).
func (v NodeView) DoneWith(p Phase) bool {
	if !v.Reported {
		return false
	}
	i := v.Report.Phase.Index()
	return i > p.Index() || (i == p.Index() && v.Report.Done)
}

// Waiting says, for a node not done with p, what it reports.
func (v NodeView) Waiting(p Phase) string {
	switch {
	case !v.Reported:
		return "no report for this rotation yet"
	case v.Report.Phase.Index() < p.Index():
		return fmt.Sprintf("still at %s", v.Report.Phase)
	case v.Report.Blocked != "":
		return "blocked: " + v.Report.Blocked
	case v.Report.Left != "":
		return v.Report.Left
	}
	return "in progress"
}

// listNodes returns every Node and the list's resourceVersion.
func listNodes(ctx context.Context, cs kube.Interface) ([]corev1.Node, string, error) {
	l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("list nodes: %w", err)
	}
	return l.Items, l.ResourceVersion, nil
}

// Answering checks that every node can take part: certagent runs there
// (its health condition) and the kubelet's Lease was renewed within its
// duration before now. It returns one line per node that cannot.
func Answering(ctx context.Context, cs kube.Interface, nodes []corev1.Node, now time.Time) ([]string, error) {
	if len(nodes) == 0 {
		return []string{"the cluster has no Node: there is no node to rotate the CA on"}, nil
	}
	leases, err := cs.CoordinationV1().Leases(LeaseNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list leases in %s: %w", LeaseNamespace, err)
	}
	byName := map[string]*coordinationv1.Lease{}
	for i := range leases.Items {
		byName[leases.Items[i].Name] = &leases.Items[i]
	}
	var out []string
	for i := range nodes {
		n := &nodes[i]
		if !View(n, "").Certagent {
			out = append(out, fmt.Sprintf("node %s does not run certagent: it has no %s condition (certagent run with agent.reportToCluster)", n.Name, HealthConditionType))
		}
		if why := leaseStale(byName[n.Name], now); why != "" {
			out = append(out, fmt.Sprintf("node %s does not answer: %s", n.Name, why))
		}
	}
	return out, nil
}

// leaseStale says why a kubelet Lease shows its node gone ("" when fresh).
func leaseStale(l *coordinationv1.Lease, now time.Time) string {
	if l == nil {
		return "no kubelet Lease in " + LeaseNamespace
	}
	if l.Spec.RenewTime == nil {
		return "its kubelet Lease was never renewed"
	}
	d := defaultLeaseDuration
	if s := l.Spec.LeaseDurationSeconds; s != nil && *s > 0 {
		d = time.Duration(*s) * time.Second
	}
	if age := now.Sub(l.Spec.RenewTime.Time); age > d {
		return fmt.Sprintf("its kubelet Lease was last renewed %s ago (it lasts %s)", age.Round(time.Second), d)
	}
	return ""
}

// names returns the sorted names of nodes.
func names(nodes []corev1.Node) []string {
	out := make([]string, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}
