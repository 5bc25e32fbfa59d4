package carotate

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/kube"

	cafiles "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Rotator is the command side of a rotation: it checks the
// preconditions, starts or resumes the rotation in the ConfigMap, and
// moves its phase forward once every node is done with the current one.
// It is the only writer of the ConfigMap.
type Rotator struct {
	Client kube.Interface // with the admin credential
	// Connect, when set, builds Client again from the credential on
	// disk; it is called after a failed request.
	Connect    func() (kube.Interface, error)
	Clock      clock.Clock
	Out        io.Writer // progress lines
	Kubeconfig string    // the admin credential's file, for messages
	// Timeout bounds each wait for the nodes, and how long a failing API
	// is tried again (0: ten minutes).
	Timeout time.Duration
	// Until stops after that phase is done everywhere ("": go to the end).
	Until Phase
	// CA is the CA to rotate: ca, etcd-ca or front-proxy-ca.
	CA string
	// Current is the CA in use on this node (the first certificate of
	// its file); nil when it could not be read (Refusals says why).
	Current *x509.Certificate
	// CurrentKey is Current's key: it signs the proof (newCAProof) that
	// nodes check the new CA with.
	CurrentKey crypto.Signer
	// Supplied is the operator's new CA (its key checked to be its own),
	// nil when certagent makes one. Run checks that it may replace the
	// CA: the rotation's oldCA when it is the rotation's own new CA (a
	// rerun; after this node's signer switch it is the CA in use here),
	// else Current. A rerun stages nothing again.
	Supplied *x509.Certificate
	// Prepare stages the new CA on this node and returns its certificate:
	// called before a new rotation starts, and on a resumed one when
	// Supplied is set.
	Prepare func() (*x509.Certificate, error)
	// NewKey returns this node's key of the rotation's new CA next (made
	// or staged by Prepare, or the CA key itself once this node's signer
	// switched): it signs every phase the command publishes (phaseProof).
	NewKey func(next *x509.Certificate) (crypto.Signer, error)
	// Refusals are preconditions that failed on this node before Run.
	Refusals []string
	// New starts a new rotation even when the last one of this CA
	// finished with the CA in use here.
	New bool

	newKey crypto.Signer // NewKey's answer for the rotation run
}

// Run starts or resumes the rotation and returns its state as last
// written. A failed precondition is a *RefusedError, a wait that ran out
// a *TimeoutError; either way a rerun goes on from where it stopped.
func (r *Rotator) Run(ctx context.Context) (*Cluster, error) {
	c, rv, err := r.firstRead(ctx)
	if err != nil {
		return nil, err
	}
	resume := c != nil && !c.Over()
	if !resume && c != nil && c.CA == r.CA && !r.New && r.Current != nil && Fingerprint(r.Current) == c.ID {
		r.printf("rotation %s of %s finished at %s; --new starts another", c.ID, c.CA, c.Since.Format(time.RFC3339))
		return c, nil
	}
	nodes, _, err := listNodes(ctx, r.Client)
	if err != nil {
		return nil, err
	}
	lines, err := Answering(ctx, r.Client, nodes, r.Clock.Now())
	if err != nil {
		return nil, err
	}
	if refusals := slices.Concat(r.Refusals, r.inProgress(c), r.checkSupplied(c, resume), lines); len(refusals) > 0 {
		return c, &RefusedError{Reasons: refusals}
	}
	if resume {
		// The supplied CA is the rotation's own (inProgress refused any
		// other): staged already, or in use after the signer switch.
		r.Supplied = nil
	}
	if !resume || r.Supplied != nil {
		newCA, err := r.Prepare()
		if err != nil {
			return c, fmt.Errorf("prepare: %w", err)
		}
		if !resume {
			now := r.Clock.Now()
			proof, err := cafiles.Prove(r.Current, r.CurrentKey, newCA, now)
			if err != nil {
				return c, fmt.Errorf("prepare: %w", err)
			}
			c = &Cluster{CA: r.CA, ID: Fingerprint(newCA), Phase: Prepare, Since: now, Started: now,
				OldCA: pki.EncodeCertPEM(r.Current), NewCA: pki.EncodeCertPEM(newCA), Proof: proof, Nodes: names(nodes)}
		}
	}
	if err := r.loadNewKey(c); err != nil {
		return c, err
	}
	if !resume {
		if err := c.SignPhase(r.newKey); err != nil {
			return c, fmt.Errorf("prepare: %w", err)
		}
	}
	if err := r.begin(ctx, c, &rv, resume); err != nil {
		return c, err
	}
	return c, r.sequence(ctx, c, &rv)
}

// loadNewKey finds the new CA's key on this node, which signs the phases
// (refused when it is not here: nothing was written).
func (r *Rotator) loadNewKey(c *Cluster) error {
	next, err := oneCert("newCA", c.NewCA)
	if err != nil {
		return err
	}
	var key crypto.Signer
	if r.NewKey != nil {
		key, err = r.NewKey(next)
	} else {
		err = errors.New("no way to read it")
	}
	if err == nil && !pki.KeyMatches(next, key) {
		err = errors.New("the key found is not the new CA's")
	}
	if err != nil {
		stem, _ := cafiles.Stem(c.CA)
		return &RefusedError{Reasons: []string{fmt.Sprintf("the new CA's key, which signs each phase (%s), is not on this node (%v): run the command on the node where the rotation began, or stage the new CA here (<pki>/%s.next.crt and .next.key, or --new-ca-cert and --new-ca-key)",
			cafiles.PhaseProofKey, err, stem)}}
	}
	r.newKey = key
	return nil
}

// inProgress refuses another rotation than c while c is not done.
func (r *Rotator) inProgress(c *Cluster) []string {
	switch {
	case c == nil || c.Over():
	case c.CA != r.CA:
		return []string{fmt.Sprintf("a rotation of %s (id %s) is in progress, at phase %s since %s: finish it first (certagent ca rotate --ca %s)",
			c.CA, c.ID, c.Phase, c.Since.Format(time.RFC3339), c.CA)}
	case r.Supplied != nil && Fingerprint(r.Supplied) != c.ID:
		return []string{fmt.Sprintf("a different rotation of %s (id %s) is in progress, at phase %s: the supplied CA's id is %s; finish that one first",
			c.CA, c.ID, c.Phase, Fingerprint(r.Supplied))}
	}
	return nil
}

// checkSupplied checks the operator's CA against the CA it replaces (see
// Supplied).
func (r *Rotator) checkSupplied(c *Cluster, resume bool) []string {
	old := r.Current
	switch {
	case r.Supplied == nil:
		return nil
	case resume && Fingerprint(r.Supplied) == c.ID:
		old, _ = oneCert("oldCA", c.OldCA) // Store.Get validated it
	case resume || old == nil:
		return nil // inProgress or Refusals say why
	}
	if err := cafiles.CheckSuccessor(old, r.Supplied); err != nil {
		return []string{fmt.Sprintf("the supplied CA (--new-ca-cert, --new-ca-key): %v", err)}
	}
	return nil
}

// begin creates the RBAC (before the ConfigMap, so that nodes can read it
// as soon as it exists), then the ConfigMap of a new rotation.
func (r *Rotator) begin(ctx context.Context, c *Cluster, rv *string, resume bool) error {
	if err := r.retry(ctx, func() error { return EnsureRBAC(ctx, r.Client) }); err != nil {
		return err
	}
	if resume {
		r.printf("resuming rotation %s of %s at phase %s (since %s)", c.ID, c.CA, c.Phase, c.Since.Format(time.RFC3339))
		return nil
	}
	if err := r.put(ctx, c, rv); err != nil {
		return err
	}
	r.printf("rotation %s of %s started: phase prepare", c.ID, c.CA)
	if c.CA == "ca" && (r.Until == "" || r.Until.Index() > Trust.Index()) {
		r.printf("note: workloads that use in-cluster config must be restarted between trust and reissue; --until trust stops there for that (see README)")
	}
	return nil
}

// sequence waits for the nodes phase after phase and advances, recording
// each phase's wall time. The rotation is over once every node is done
// with done too (the controller manager's signer flag put back).
func (r *Rotator) sequence(ctx context.Context, c *Cluster, rv *string) error {
	for {
		p := c.Phase
		if r.Until != "" && p.Index() > r.Until.Index() {
			r.printf("the rotation is past phase %s (--until): it is at %s", r.Until, p)
			return nil
		}
		if err := r.syncClusterInfo(ctx, c, p); err != nil {
			return err
		}
		if err := r.waitPhase(ctx, c, rv, p); err != nil {
			return err
		}
		if err := r.afterPhase(ctx, c, p); err != nil {
			return err
		}
		if p == Done {
			break
		}
		if p == r.Until {
			r.printf("stopping after phase %s (--until); rerun to go on", p)
			return nil
		}
		if err := r.advance(ctx, c, rv); err != nil {
			return err
		}
	}
	r.printf("rotation %s of %s done", c.ID, c.CA)
	for _, t := range c.Times() {
		r.printf("  %-8s %s", t.Phase, t.End.Sub(t.Start).Round(time.Second))
	}
	return nil
}

// waitPhase waits until every node is done with phase p and records the
// phase's wall time. A phase already recorded (a rerun) is waited for
// again, which takes one list when the nodes are done: phaseTimes is not
// signed, so a line added by another ConfigMap writer must not stand for
// the nodes' reports.
func (r *Rotator) waitPhase(ctx context.Context, c *Cluster, rv *string, p Phase) error {
	recorded := c.finished(p)
	if !recorded {
		r.printf("phase %s: waiting for %d nodes", p, len(c.Nodes))
	}
	views, err := r.wait(ctx, c, rv)
	var te *TimeoutError
	if p == Prepare && errors.As(err, &te) {
		return &RefusedError{Reasons: prepareLag(te)}
	}
	if err != nil || recorded {
		return err
	}
	next := *c
	next.PhaseTimes = append(append([]string(nil), c.PhaseTimes...), PhaseTime{Phase: p, Start: c.Since, End: r.Clock.Now()}.Line())
	if err := r.put(ctx, &next, rv); err != nil {
		return err
	}
	*c = next
	r.printf("phase %s done on every node", p)
	if p == Prepare {
		for _, why := range missingKeys(views, c) {
			r.printf("warning: %s", why)
		}
	}
	return nil
}

// afterPhase keeps the CA's copies in the API in step once every node is
// done with phase p (again on a rerun: each is a no-op once made): after
// trust it waits until they hold the new CA, after finish it removes the
// old one from those kube-apiserver never drops by itself.
func (r *Rotator) afterPhase(ctx context.Context, c *Cluster, p Phase) error {
	switch p {
	case Trust:
		if err := r.waitAuthInfo(ctx, c); err != nil {
			return err
		}
		return r.waitRootCA(ctx, c)
	case Finish:
		return r.dropAuthInfo(ctx, c)
	}
	return nil
}

// advance moves c to the phase after its own. Before reissue every
// control-plane node must hold the new CA key.
func (r *Rotator) advance(ctx context.Context, c *Cluster, rv *string) error {
	next := Phases[c.Phase.Index()+1]
	if next == Reissue {
		views, err := r.views(ctx, c.ID)
		if err != nil {
			return err
		}
		if why := missingKeys(views, c); len(why) > 0 {
			return &RefusedError{Reasons: why}
		}
	}
	n := *c
	n.Phase, n.Since, n.NodesDone = next, r.Clock.Now(), nil
	if err := n.SignPhase(r.newKey); err != nil {
		return err
	}
	if err := r.put(ctx, &n, rv); err != nil {
		return err
	}
	*c = n
	if next != Done {
		r.printf("phase %s started", next)
	}
	return nil
}

// views reads every Node's report for rotation id.
func (r *Rotator) views(ctx context.Context, id string) (map[string]NodeView, error) {
	var items []corev1.Node
	err := r.retry(ctx, func() (err error) {
		items, _, err = listNodes(ctx, r.Client)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := map[string]NodeView{}
	for i := range items {
		out[items[i].Name] = View(&items[i], id)
	}
	return out, nil
}

// missingKeys names the control-plane nodes that do not report the new
// CA key.
func missingKeys(views map[string]NodeView, c *Cluster) []string {
	stem, _ := cafiles.Stem(c.CA)
	var out []string
	for _, n := range c.Nodes {
		if v, ok := views[n]; ok && v.ControlPlane && !(v.Reported && v.Report.HasNewKey) {
			out = append(out, fmt.Sprintf("control-plane node %s does not have the new CA key at <pki>/%s.next.key: copy %s.next.crt and %s.next.key there, or run certagent ca rotate --stage-only --new-ca-cert F --new-ca-key F on it (see README)",
				n, stem, stem, stem))
		}
	}
	return out
}

// prepareLag turns a prepare timeout into its failed preconditions.
func prepareLag(te *TimeoutError) []string {
	out := make([]string, 0, len(te.Lagging)+1)
	for _, l := range te.Lagging {
		out = append(out, fmt.Sprintf("%s (did not report prepare done within %s)", l, te.After))
	}
	if te.API != nil {
		out = append(out, "the API did not answer: "+te.API.Error())
	}
	return out
}

// put writes c conditionally on rv and keeps rv up to date. When the
// ConfigMap changed under it, it reads it again: the same rotation at the
// same phase is written over (nodes only ever read it); anything else is
// an error.
func (r *Rotator) put(ctx context.Context, c *Cluster, rv *string) error {
	return r.retry(ctx, func() error {
		store := Store{Client: r.Client}
		v, err := store.Put(ctx, c, *rv)
		if errors.Is(err, ErrConflict) {
			// Someone else wrote, or a write whose answer was lost did.
			cur, curRV, gerr := store.Get(ctx)
			if gerr != nil {
				return gerr
			}
			if cur == nil || cur.ID != c.ID || cur.Phase.Index() > c.Phase.Index() {
				return fmt.Errorf("%w: another writer changed %s/%s (now %s); rerun to go on from there", ErrConflict, Namespace, ConfigMapName, describe(cur))
			}
			v, err = store.Put(ctx, c, curRV)
		}
		if err != nil {
			return err
		}
		*rv = v
		return nil
	})
}

func describe(c *Cluster) string {
	if c == nil {
		return "deleted"
	}
	return fmt.Sprintf("rotation %s of %s at phase %s", c.ID, c.CA, c.Phase)
}

func (r *Rotator) printf(format string, args ...any) {
	if r.Out != nil {
		fmt.Fprintf(r.Out, format+"\n", args...)
	}
}
