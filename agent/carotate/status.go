package carotate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certagent/certagent/agent/kube"
)

// Exit codes of `certagent ca status`.
const (
	StatusIdle     = 0 // no rotation, or the last one finished
	StatusRunning  = 1 // a rotation is in progress
	StatusTrouble  = 2 // a node is blocked, or the ConfigMap is invalid
	StatusNoAPI    = 3 // the API could not be asked
	statusAPIVer   = "certagent.io/v1alpha1"
	statusDocKind  = "CARotationStatus"
	noReportState  = "no-report"
	doneState      = "done"
	blockedState   = "blocked"
	progressState  = "in-progress"
	finishedPhrase = "finished"
)

// StatusDoc is what `certagent ca status -o json` prints.
type StatusDoc struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	// Rotation is the ConfigMap's state, absent when there is none.
	Rotation *RotationStatus `json:"rotation,omitempty"`
	// Error says why the ConfigMap could not be used.
	Error string       `json:"error,omitempty"`
	Nodes []NodeStatus `json:"nodes"`
}

// RotationStatus is the cluster-wide state.
type RotationStatus struct {
	CA         string      `json:"ca"`
	ID         string      `json:"id"`
	Phase      Phase       `json:"phase"`
	Since      time.Time   `json:"since"`
	Started    time.Time   `json:"started"`
	Nodes      []string    `json:"nodes"`
	NodesDone  []string    `json:"nodesDone"`
	PhaseTimes []PhaseTime `json:"phaseTimes"`
}

// NodeStatus is one node's report about the rotation.
type NodeStatus struct {
	Name         string `json:"name"`
	ControlPlane bool   `json:"controlPlane"`
	Certagent    bool   `json:"certagent"`
	// Phase is the phase the node works on or finished; State is done,
	// in-progress, blocked or no-report (none for this rotation).
	Phase     Phase      `json:"phase,omitempty"`
	State     string     `json:"state"`
	Done      bool       `json:"done"`
	Blocked   string     `json:"blocked,omitempty"`
	Left      string     `json:"left,omitempty"`
	HasNewKey bool       `json:"hasNewKey"`
	Since     *time.Time `json:"since,omitempty"`
}

// ReadStatus reads the ConfigMap and every Node. An invalid ConfigMap is
// reported in Error, not returned as an error; err is for an API that
// could not be asked.
func ReadStatus(ctx context.Context, cs kube.Interface) (*StatusDoc, error) {
	d := &StatusDoc{Kind: statusDocKind, APIVersion: statusAPIVer, Nodes: []NodeStatus{}}
	c, _, err := Store{Client: cs}.Get(ctx)
	if errors.Is(err, ErrInvalid) {
		d.Error = err.Error()
	} else if err != nil {
		return nil, err
	}
	items, _, err := listNodes(ctx, cs)
	if err != nil {
		return nil, err
	}
	id := "-" // no rotation: no report is about it
	if c != nil {
		id = c.ID
		d.Rotation = &RotationStatus{CA: c.CA, ID: c.ID, Phase: c.Phase, Since: c.Since, Started: c.Started,
			Nodes: c.Nodes, NodesDone: c.NodesDone, PhaseTimes: c.Times()}
	}
	for i := range items {
		d.Nodes = append(d.Nodes, nodeStatus(View(&items[i], id)))
	}
	slices.SortFunc(d.Nodes, func(a, b NodeStatus) int { return strings.Compare(a.Name, b.Name) })
	return d, nil
}

func nodeStatus(v NodeView) NodeStatus {
	s := NodeStatus{Name: v.Name, ControlPlane: v.ControlPlane, Certagent: v.Certagent, State: noReportState}
	if !v.Reported {
		return s
	}
	r := v.Report
	s.Phase, s.Done, s.Blocked, s.Left, s.HasNewKey = r.Phase, r.Done, r.Blocked, r.Left, r.HasNewKey
	s.State = progressState
	switch {
	case r.Done:
		s.State = doneState
	case r.Blocked != "":
		s.State = blockedState
	}
	if !v.Since.IsZero() {
		t := v.Since.UTC()
		s.Since = &t
	}
	return s
}

// over: at phase done and every node done with it (Cluster.Over).
func (r *RotationStatus) over() bool {
	return r.Phase == Done && slices.ContainsFunc(r.PhaseTimes, func(t PhaseTime) bool { return t.Phase == Done })
}

// ExitCode is `ca status`'s exit code for d.
func (d *StatusDoc) ExitCode() int {
	if d.Error != "" {
		return StatusTrouble
	}
	for _, n := range d.Nodes {
		if n.State == blockedState && d.Rotation != nil && !d.Rotation.over() {
			return StatusTrouble
		}
	}
	if d.Rotation != nil && !d.Rotation.over() {
		return StatusRunning
	}
	return StatusIdle
}

// WriteJSON writes d as indented JSON.
func (d *StatusDoc) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(d)
}

// WriteTable writes d for humans, times relative to now.
func (d *StatusDoc) WriteTable(w io.Writer, now time.Time) error {
	rot := d.Rotation
	switch {
	case d.Error != "":
		fmt.Fprintf(w, "rotation state unusable: %s\n", d.Error)
	case rot == nil:
		fmt.Fprintln(w, "no CA rotation (kube-system/certagent-ca-rotation does not exist)")
	case rot.over():
		fmt.Fprintf(w, "CA %s rotation %s %s %s (%s ago), started %s\n", rot.CA, rot.ID, finishedPhrase,
			rot.Since.Format(time.RFC3339), now.Sub(rot.Since).Round(time.Second), rot.Started.Format(time.RFC3339))
	default:
		fmt.Fprintf(w, "CA %s rotation %s: phase %s since %s (%s), %d/%d nodes done, started %s\n", rot.CA, rot.ID, rot.Phase,
			rot.Since.Format(time.RFC3339), now.Sub(rot.Since).Round(time.Second), len(rot.NodesDone), len(rot.Nodes), rot.Started.Format(time.RFC3339))
	}
	if rot != nil {
		for _, t := range rot.PhaseTimes {
			fmt.Fprintf(w, "  %-8s took %s\n", t.Phase, t.End.Sub(t.Start).Round(time.Second))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tPHASE\tSTATE\tNEW KEY\tDETAIL")
	for _, n := range d.Nodes {
		role, key, phase := "worker", "no", string(n.Phase)
		if n.ControlPlane {
			role = "control-plane"
		}
		if n.HasNewKey {
			key = "yes"
		}
		if phase == "" {
			phase = "-"
		}
		detail := n.Blocked + n.Left
		if !n.Certagent {
			detail = strings.TrimSpace(detail + " (no certagent: no " + HealthConditionType + " condition)")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, role, phase, n.State, key, detail)
	}
	return tw.Flush()
}
