// Package canode is a node's daemon in a CA rotation: it takes the phase
// the cluster asks for (the ConfigMap kube-system/certagent-ca-rotation,
// read through a Source built in cmd), checks the new CA, and converges
// its node to that phase: trust bundles given the new CA, the signer
// switched and certificates re-issued, the old CA dropped, with the
// restarts each needs. It records its intent in the state directory
// before it changes a file, so a daemon killed at any point finishes the
// phase when it starts again, restarting only what was still pending.
// What it reports goes on the Node condition CertagentCARotation.
package canode

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Source reads the rotation the cluster asks for, with the node's own
// credential.
type Source interface {
	// Rotation returns the rotation; nil (and no error) when there is none.
	Rotation(ctx context.Context) (*carotate.Cluster, error)
}

// Restarter restarts named components, confirmed healthy
// (restart.Restarter.RestartComponents).
type Restarter interface {
	RestartComponents(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error
	// ReloadTrust is RestartComponents for components whose trust
	// bundles alone changed: one that loads them by itself and shows it
	// is not restarted (restart.Restarter.ReloadTrust).
	ReloadTrust(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error
	// ConfirmRestarted confirms, without restarting them, static pods
	// the kubelet restarts by itself because their manifest changed
	// (restart.Restarter.ConfirmRestarted).
	ConfirmRestarted(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error
}

// Leaf is a certificate of the node's scan.
type Leaf struct {
	ca.Leaf
	// CSR: renewed through the cluster (its signer is the controller
	// manager's), not from a local CA.
	CSR bool
	// Fixed: certagent does not renew it here (Why says why).
	Fixed bool
	Why   string
}

// LeavesOf lists a scan's certificates as Converge reads them.
func LeavesOf(rep *inventory.Report) []Leaf {
	out := make([]Leaf, 0, len(rep.Certificates))
	for _, c := range rep.Certificates {
		l := Leaf{Leaf: ca.Leaf{Name: c.Name, Path: c.Path}, CSR: c.RenewalPath == inventory.RenewCSR}
		if c.RenewalPath != inventory.RenewCSR && c.RenewalPath != inventory.RenewLocalCA {
			l.Fixed, l.Why = true, "renewal path "+string(c.RenewalPath)
			if c.LeftAlone != "" {
				l.Why += ": " + c.LeftAlone
			}
		}
		if c.Kind == inventory.KindKubeconfigEmbedded {
			l.User = c.User
		}
		out = append(out, l)
	}
	return out
}

// Node converges one node. Its methods run on the agent's loop only.
type Node struct {
	Root *pki.Root
	// StateDir is the daemon's state directory (a host path).
	StateDir  string
	Log       *logrus.Logger
	Restarter Restarter // nil: nothing is restarted
	Hooks     rotate.Hooks

	logged map[string]bool // journal lines given, by kind/phase/reason
}

// Input is what one pass gives the node.
type Input struct {
	Cluster *carotate.Cluster
	Config  *config.Config
	// Leaves are the certificates of the latest scan.
	Leaves []Leaf
	Now    time.Time
	Ping   func()
	// Busy are the certificates whose CSR job is not over: the job may
	// have put the new certificate on disk and not yet restarted its
	// user, so reissue is not done before it is over.
	Busy []string
}

// Outcome is what the agent does with a pass's result.
type Outcome struct {
	Report carotate.NodeReport
	Status *api.CARotationStatus
	// Renew are the certificates to renew now because the CA that
	// issued them is being replaced (the reissue phase).
	Renew []string
	// Retiring is the CA being replaced, once this node verified the
	// rotation and works on (or finished) its reissue or finish phase:
	// a certificate it issues then is of no use. Nil otherwise: an
	// unverified ConfigMap never steers the node's renewals.
	Retiring *x509.Certificate
}

// RenewReason is the reason a certificate of Outcome.Renew is renewed.
const RenewReason = "its issuer is being rotated (certagent ca rotate): re-issued from the new CA"

// Converge works the node towards the cluster's phase and says where it
// stands. A nil Cluster is no rotation: a zero Outcome.
func (n *Node) Converge(ctx context.Context, in Input) Outcome {
	c := in.Cluster
	if c == nil {
		return Outcome{}
	}
	st := &step{n: n, in: in, out: Outcome{Report: carotate.NodeReport{ID: c.ID, Phase: c.Phase}}}
	st.out.Status = &api.CARotationStatus{CA: c.CA, ID: c.ID, Phase: string(c.Phase), NodePhase: string(c.Phase), Since: c.Since}
	st.run(ctx)
	return st.out
}

// step is one Converge.
type step struct {
	n         *Node
	in        Input
	out       Outcome
	it        *Intent
	old, next *x509.Certificate
	stem      string
	left      []string
	problems  []string
}

func (s *step) run(ctx context.Context) {
	c, cfg := s.in.Cluster, s.in.Config
	var err error
	if s.stem, err = ca.Stem(c.CA); err != nil {
		s.block(err.Error())
		return
	}
	if s.old, s.next, err = Verify(c); err != nil {
		s.block(err.Error())
		return
	}
	if err := s.anchor(); err != nil {
		s.block(err.Error())
		return
	}
	s.out.Report.HasNewKey = ca.HasKey(s.n.Root, cfg.PKIDir, s.stem, s.next)
	if !s.record() {
		return
	}
	// The phase is the operator's only when the new CA's key, verified
	// above, signed it: a ConfigMap writer without it cannot move the
	// nodes ahead of the command's waits. A phase done here already (and
	// those before it) asks for nothing: a finished rotation's ConfigMap
	// written by an older certagent is no block; nor does the phase this
	// node's record says it began (under a ConfigMap of an older
	// certagent, or one signed then): its restarts may be pending.
	proofErr := c.CheckPhase(s.next)
	if proofErr == nil && s.joinedAfter() {
		return
	}
	retiring := func(p carotate.Phase) {
		if p == carotate.Reissue || p == carotate.Finish {
			s.out.Retiring = s.old
		}
	}
	// The node goes through the phases in order, each done here before
	// the next begins, whatever phase the cluster asks for.
	for {
		p := s.it.nextPhase(c.Phase)
		if p == "" {
			if proofErr == nil {
				retiring(c.Phase)
			}
			s.out.Report.Phase, s.out.Status.NodePhase = c.Phase, string(c.Phase)
			s.out.Status.Since = s.it.Since
			s.done()
			return
		}
		if proofErr != nil && (p != s.it.Phase || s.it.Done) {
			s.block(proofErr.Error())
			return
		}
		retiring(p)
		if !s.enter(ctx, p) {
			return
		}
		s.left, s.problems = nil, nil
	}
}

// record loads this node's intent record for the cluster's rotation and
// checks that the phase is the operator's; false when blocked.
func (s *step) record() bool {
	c := s.in.Cluster
	var err error
	if s.it, err = loadIntent(s.n.StateDir); err != nil {
		s.n.Log.WithField("REASON", err.Error()).Warn("CA rotation record unreadable: the phase is redone")
	}
	switch {
	case s.it.ID != c.ID && s.it.busy():
		s.block(s.it.busyReason(s.n.StateDir))
		return false
	case slices.Contains(s.it.Finished, c.ID):
		s.block(fmt.Sprintf("rotation %.16s of %s finished on this node already: its ConfigMap, put back, is not run again (delete it; see README)", c.ID, c.CA))
		return false
	case s.it.ID != c.ID:
		s.it = s.it.next(c.ID, c.CA, pki.EncodeCertPEM(s.old))
	case len(s.it.OldCA) == 0:
		// A record written before it named the old CA (verified above).
		s.it.OldCA = pki.EncodeCertPEM(s.old)
	}
	return true
}

// enter works on phase p of this node; true when p is done.
func (s *step) enter(ctx context.Context, p carotate.Phase) bool {
	s.out.Report.Phase, s.out.Status.NodePhase = p, string(p)
	if s.it.Phase != p || s.it.Done {
		s.it.Phase, s.it.Since, s.it.Done, s.it.DoneAt, s.it.Restarted = p, s.in.Now.UTC(), false, nil, nil
		if err := s.it.save(s.n.StateDir); err != nil {
			s.block(err.Error())
			return false
		}
		s.n.journal(logfields.MsgCAPhaseStart, s.in.Cluster, p, "", nil, "CA rotation phase begun")
	}
	s.out.Status.Since = s.it.Since
	if p.Index() <= carotate.Trust.Index() {
		// Before this node trusts the new CA: it must be fit to.
		if err := ca.CheckLifetime(s.old, s.next, s.in.Now); err != nil {
			s.block(err.Error())
			return false
		}
	}
	if p != carotate.Prepare && p != carotate.Done && s.hasCAKey() && !s.nextStaged() {
		s.block(fmt.Sprintf("this node holds the CA key (%s) but %s is not the rotation's new CA: stage it first (copy it, or certagent ca rotate --stage-only; see README)",
			ca.PathsOf(s.in.Config.PKIDir, s.stem).Key, ca.PathsOf(s.in.Config.PKIDir, s.stem).NextCert))
		return false
	}
	switch p {
	case carotate.Prepare:
		s.toSigner(ctx)
	case carotate.Done:
		s.fromSigner(ctx)
	case carotate.Trust:
		s.trust(ctx)
	case carotate.Reissue:
		s.reissue(ctx)
	case carotate.Finish:
		s.finish(ctx)
	}
	return s.conclude(ctx)
}

// conclude runs the pending restarts once nothing else is left, and
// marks the phase done (true), blocked or in progress.
func (s *step) conclude(ctx context.Context) bool {
	if len(s.left) == 0 && len(s.problems) == 0 && len(s.it.Pending) > 0 {
		s.restart(ctx)
	}
	for _, p := range s.it.Pending {
		s.left = append(s.left, "restart "+p)
	}
	if s.in.Cluster.Phase == carotate.Reissue {
		for _, b := range s.in.Busy {
			s.left = append(s.left, "the certificate signing request of "+b+" is not over")
		}
	}
	switch {
	case len(s.problems) > 0:
		s.block(strings.Join(s.problems, "; "))
	case len(s.left) > 0:
		s.out.Status.State = api.RotationInProgress
		s.out.Status.Left = s.left
		s.out.Report.Left = strings.Join(s.left, "; ")
	default:
		now := s.in.Now.UTC()
		s.it.Done, s.it.DoneAt = true, &now
		s.it.addDone(s.it.Phase)
		if err := s.it.save(s.n.StateDir); err != nil {
			s.block(err.Error())
			return false
		}
		s.n.journal(logfields.MsgCAPhaseDone, s.in.Cluster, s.it.Phase, "", logrus.Fields{"COMPONENTS": strings.Join(s.it.Restarted, " ")}, "CA rotation phase done on this node")
		return true
	}
	return false
}

func (s *step) done() {
	s.out.Report.Done = true
	s.out.Status.State = api.RotationDone
	if s.it.DoneAt != nil && s.in.Cluster.Phase == carotate.Done {
		s.out.Status.Since = *s.it.DoneAt
	}
}

func (s *step) block(reason string) {
	if len(reason) > 800 {
		reason = reason[:800] + "…"
	}
	s.out.Report.Blocked = reason
	s.out.Report.Done = false
	s.out.Status.State, s.out.Status.Blocked = api.RotationBlocked, reason
	s.out.Status.Left = s.left
	s.n.journal(logfields.MsgCAPhaseBlocked, s.in.Cluster, s.out.Report.Phase, reason, nil, "CA rotation blocked on this node")
}

func (s *step) save() {
	if err := s.it.save(s.n.StateDir); err != nil {
		s.problems = append(s.problems, err.Error())
	}
}

// Verify checks the rotation's CAs against each other before the node
// trusts the new one: a CA certificate that may sign, validly
// self-signed, whose fingerprint is the rotation's id, with the old CA's
// subject, and a proof (newCAProof) that the old CA's key chose it. The
// node then ties the old CA to its own files (step.anchor).
func Verify(c *carotate.Cluster) (old, next *x509.Certificate, err error) {
	if old, err = onePEM(c.OldCA); err != nil {
		return nil, nil, fmt.Errorf("oldCA: %w", err)
	}
	if next, err = onePEM(c.NewCA); err != nil {
		return nil, nil, fmt.Errorf("newCA: %w", err)
	}
	if got := carotate.Fingerprint(next); got != c.ID {
		return nil, nil, fmt.Errorf("newCA's fingerprint %s is not the rotation's id %s", got, c.ID)
	}
	if err := ca.CheckSuccessor(old, next); err != nil {
		return nil, nil, err
	}
	if err := ca.CheckProof(c.Proof, old, next); err != nil {
		return nil, nil, err
	}
	return old, next, nil
}

func onePEM(data []byte) (*x509.Certificate, error) {
	b, err := pki.ParseBundle(data)
	if err != nil {
		return nil, err
	}
	if len(b.Certs) != 1 || b.Key != nil {
		return nil, errors.New("not exactly one certificate")
	}
	return b.Certs[0], nil
}

// journal gives a phase's journal line once per rotation, phase and reason.
func (n *Node) journal(id string, c *carotate.Cluster, phase carotate.Phase, reason string, extra logrus.Fields, msg string) {
	key := id + "/" + c.ID + "/" + string(phase) + "/" + reason
	if n.logged == nil {
		n.logged = map[string]bool{}
	}
	if n.logged[key] {
		return
	}
	n.logged[key] = true
	f := logrus.Fields{"MESSAGE_ID": id, "CA_NAME": c.CA, "CA_ROTATION_ID": c.ID, "CA_PHASE": string(phase)}
	if reason != "" {
		f["REASON"] = reason
	}
	for k, v := range extra {
		f[k] = v
	}
	e := n.Log.WithFields(f)
	if id == logfields.MsgCAPhaseBlocked {
		e.Warn(msg)
	} else {
		e.Info(msg)
	}
}
