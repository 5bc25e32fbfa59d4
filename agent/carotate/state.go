// Package carotate holds what the nodes and the `certagent ca rotate`
// command share about a CA rotation: the cluster-wide state kept in a
// ConfigMap in kube-system (no private key ever goes in it), and each
// node's progress, reported as a condition on its own Node.
//
// The command is the only writer of the ConfigMap (with the admin
// credential); nodes only read it, and write only their own Node's
// condition, so a node cannot steer another node's trust.
package carotate

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	cafiles "github.com/certagent/certagent/rotate/carotate"
)

// Phase is a step of a rotation. Phases only move forward.
type Phase string

// The phases, in order. Done means the rotation is over.
const (
	Prepare Phase = "prepare"
	Trust   Phase = "trust"
	Reissue Phase = "reissue"
	Finish  Phase = "finish"
	Done    Phase = "done"
)

// Phases lists the phases in order.
var Phases = []Phase{Prepare, Trust, Reissue, Finish, Done}

// Index is the position of p in Phases, -1 when it is not a phase.
func (p Phase) Index() int {
	for i, q := range Phases {
		if q == p {
			return i
		}
	}
	return -1
}

// Where the cluster-wide state lives, and the Node condition a node
// reports its progress with.
const (
	Namespace     = "kube-system"
	ConfigMapName = "certagent-ca-rotation"
	ConditionType = "CertagentCARotation"
)

// ConfigMap data keys.
const (
	keyCA         = "ca"                  // the kubeadm name of the CA: ca, etcd-ca, front-proxy-ca
	keyID         = "id"                  // Fingerprint of the new CA certificate
	keyPhase      = "phase"               // a Phase
	keySince      = "since"               // RFC 3339: when phase began
	keyStarted    = "started"             // RFC 3339: when the rotation began
	keyOldCA      = "oldCA"               // PEM: the CA being replaced
	keyNewCA      = "newCA"               // PEM: the new CA certificate (never its key)
	keyProof      = "newCAProof"          // PEM: newCA's subject and key signed by the old CA key
	keyPhaseProof = cafiles.PhaseProofKey // base64: ca, id and phase signed by the new CA key
	keyNodes      = "nodes"               // the nodes taking part, one per line
	keyNodesDone  = "nodesDone"           // the nodes done with phase, one per line
	keyPhaseTimes = "phaseTimes"          // "<phase> <start> <end>" lines, for the figures
)

// Cluster is the cluster-wide state of a rotation.
type Cluster struct {
	CA      string    // kubeadm name: ca, etcd-ca or front-proxy-ca
	ID      string    // Fingerprint(new CA)
	Phase   Phase     // the phase every node is asked to reach
	Since   time.Time // when Phase began
	Started time.Time
	OldCA   []byte // PEM
	NewCA   []byte // PEM
	// Proof is newCA's subject and public key signed by the old CA's key
	// (rotate/carotate.Prove, PEM): nodes trust newCA only when it
	// verifies against the old CA in their own files. It goes in no bundle.
	Proof []byte
	// PhaseProof is CA, ID and Phase signed by the new CA's key
	// (rotate/carotate.ProvePhase, base64; SignPhase makes it): nodes
	// work on Phase only when it verifies against NewCA, so only the
	// holder of the new CA's key (the command) moves the phase.
	PhaseProof string
	// Nodes take part (every Node when the rotation began); NodesDone
	// have reported Phase done (kept up to date by the command).
	Nodes, NodesDone []string
	// PhaseTimes are "<phase> <start RFC3339> <end RFC3339>" lines.
	PhaseTimes []string
}

// Data encodes c as ConfigMap data.
func (c *Cluster) Data() map[string]string {
	return map[string]string{
		keyCA: c.CA, keyID: c.ID, keyPhase: string(c.Phase),
		keySince: c.Since.UTC().Format(time.RFC3339), keyStarted: c.Started.UTC().Format(time.RFC3339),
		keyOldCA: string(c.OldCA), keyNewCA: string(c.NewCA), keyProof: string(c.Proof), keyPhaseProof: c.PhaseProof,
		keyNodes: strings.Join(c.Nodes, "\n"), keyNodesDone: strings.Join(c.NodesDone, "\n"),
		keyPhaseTimes: strings.Join(c.PhaseTimes, "\n"),
	}
}

// Parse decodes ConfigMap data. It checks the form, not the trust: a
// node still verifies NewCA (a CA, its fingerprint is ID) before using it.
func Parse(data map[string]string) (*Cluster, error) {
	c := &Cluster{CA: data[keyCA], ID: data[keyID], Phase: Phase(data[keyPhase]),
		OldCA: []byte(data[keyOldCA]), NewCA: []byte(data[keyNewCA]), Proof: []byte(data[keyProof]),
		PhaseProof: data[keyPhaseProof]}
	if c.Phase.Index() < 0 {
		return nil, fmt.Errorf("%s/%s: phase %q is not one of prepare, trust, reissue, finish, done", Namespace, ConfigMapName, data[keyPhase])
	}
	if c.CA == "" || c.ID == "" {
		return nil, fmt.Errorf("%s/%s: no ca or id", Namespace, ConfigMapName)
	}
	var err error
	if c.Since, err = time.Parse(time.RFC3339, data[keySince]); err != nil {
		return nil, fmt.Errorf("%s/%s: since: %w", Namespace, ConfigMapName, err)
	}
	if c.Started, err = time.Parse(time.RFC3339, data[keyStarted]); err != nil {
		return nil, fmt.Errorf("%s/%s: started: %w", Namespace, ConfigMapName, err)
	}
	c.Nodes, c.NodesDone, c.PhaseTimes = lines(data[keyNodes]), lines(data[keyNodesDone]), lines(data[keyPhaseTimes])
	return c, nil
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Fingerprint is the hex SHA-256 of a certificate's DER: a rotation's ID.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// NodeReport is one node's progress, carried by its Node condition.
type NodeReport struct {
	ID    string // the rotation
	Phase Phase  // the phase the node works on or finished
	Done  bool   // Phase is finished on this node
	// Blocked says why the node cannot go on (empty: not blocked).
	Blocked string
	// HasNewKey: the new CA key is on this node (control-plane nodes
	// need it before reissue).
	HasNewKey bool
	// Left is what remains to do on this node, for humans.
	Left string
}

// Condition encodes r: Status True when Done, Reason <Phase><Done|InProgress|Blocked>,
// Message "id=<ID> newKey=<yes|no> <Blocked or Left>".
func (r NodeReport) Condition() (status bool, reason, message string) {
	state := "InProgress"
	switch {
	case r.Done:
		state = "Done"
	case r.Blocked != "":
		state = "Blocked"
	}
	key := "no"
	if r.HasNewKey {
		key = "yes"
	}
	detail := r.Left
	if r.Blocked != "" {
		detail = r.Blocked
	}
	title := strings.ToUpper(string(r.Phase[:1])) + string(r.Phase[1:])
	return r.Done, title + state, strings.TrimSpace(fmt.Sprintf("id=%s newKey=%s %s", r.ID, key, detail))
}

// ParseCondition decodes what Condition encoded; ok is false for a
// condition that is not a rotation report.
func ParseCondition(status bool, reason, message string) (r NodeReport, ok bool) {
	for _, p := range Phases {
		title := strings.ToUpper(string(p[:1])) + string(p[1:])
		state, found := strings.CutPrefix(reason, title)
		if !found {
			continue
		}
		r.Phase = p
		fields := strings.SplitN(message, " ", 3)
		if len(fields) < 2 || !strings.HasPrefix(fields[0], "id=") || !strings.HasPrefix(fields[1], "newKey=") {
			return NodeReport{}, false
		}
		r.ID, r.HasNewKey = strings.TrimPrefix(fields[0], "id="), fields[1] == "newKey=yes"
		detail := ""
		if len(fields) == 3 {
			detail = fields[2]
		}
		switch state {
		case "Done":
			r.Done = status
		case "Blocked":
			r.Blocked = detail
		case "InProgress":
			r.Left = detail
		default:
			return NodeReport{}, false
		}
		return r, true
	}
	return NodeReport{}, false
}
