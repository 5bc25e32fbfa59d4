package carotate

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/agent/kube"

	cafiles "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
)

// ErrInvalid marks a ConfigMap whose content is not a rotation certagent
// wrote (edited by hand, or tampered with).
var ErrInvalid = errors.New("invalid rotation state")

// ErrConflict: the ConfigMap changed between a read and a write (someone
// else wrote it); the write was not made.
var ErrConflict = errors.New("the rotation state changed under this command")

// CAs are the CA names a rotation may name.
var CAs = []string{"ca", "etcd-ca", "front-proxy-ca"}

// Store reads and writes the ConfigMap kube-system/certagent-ca-rotation
// with the admin credential. Writes are conditional on the resourceVersion
// read, so two writers never overwrite each other silently.
type Store struct {
	Client kube.Interface
}

// Get returns the rotation and the ConfigMap's resourceVersion; (nil, "",
// nil) when there is none. Content that fails Validate is an error
// wrapping ErrInvalid.
func (s Store) Get(ctx context.Context) (*Cluster, string, error) {
	cm, err := s.Client.CoreV1().ConfigMaps(Namespace).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read %s/%s: %w", Namespace, ConfigMapName, err)
	}
	c, err := Parse(cm.Data)
	if err == nil {
		err = Validate(c)
	}
	if err != nil {
		return nil, cm.ResourceVersion, fmt.Errorf("%w: %w; fix it or delete it (see README, Rotating a CA)", ErrInvalid, err)
	}
	return c, cm.ResourceVersion, nil
}

// Put writes c: it creates the ConfigMap when rv is empty and updates
// the version rv otherwise. It returns the new resourceVersion; a write
// that lost a race is ErrConflict.
func (s Store) Put(ctx context.Context, c *Cluster, rv string) (string, error) {
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: Namespace, ResourceVersion: rv,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "certagent"}},
		Data: c.Data(),
	}
	var err error
	if rv == "" {
		cm, err = s.Client.CoreV1().ConfigMaps(Namespace).Create(ctx, cm, metav1.CreateOptions{})
	} else {
		cm, err = s.Client.CoreV1().ConfigMaps(Namespace).Update(ctx, cm, metav1.UpdateOptions{})
	}
	if apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("write %s/%s: %w", Namespace, ConfigMapName, ErrConflict)
	}
	if err != nil {
		return "", fmt.Errorf("write %s/%s: %w", Namespace, ConfigMapName, err)
	}
	return cm.ResourceVersion, nil
}

// Validate checks what Parse cannot: a known CA name, a new CA that is a
// self-signed CA whose fingerprint is the id, an old CA with the same
// subject, a proof (newCAProof) that the old CA's key chose the new CA,
// a proof (phaseProof) that the new CA's key set the phase,
// node lists without doubles, nodesDone among nodes, and
// phaseTimes lines in their form.
func Validate(c *Cluster) error {
	if !slices.Contains(CAs, c.CA) {
		return fmt.Errorf("ca %q is not one of %s", c.CA, strings.Join(CAs, ", "))
	}
	newCA, err := oneCert("newCA", c.NewCA)
	if err != nil {
		return err
	}
	if Fingerprint(newCA) != c.ID {
		return fmt.Errorf("id %s is not the fingerprint of newCA (%s)", c.ID, Fingerprint(newCA))
	}
	if !newCA.IsCA || newCA.CheckSignatureFrom(newCA) != nil {
		return errors.New("newCA is not a self-signed CA certificate")
	}
	oldCA, err := oneCert("oldCA", c.OldCA)
	if err != nil {
		return err
	}
	if !bytes.Equal(oldCA.RawSubject, newCA.RawSubject) || bytes.Equal(oldCA.Raw, newCA.Raw) {
		return errors.New("oldCA and newCA are the same certificate, or their subjects differ")
	}
	if len(c.Proof) == 0 {
		return errors.New("no newCAProof (the new CA signed by the old CA key): nodes refuse a rotation without it; a rotation begun by an older certagent cannot go on: delete the ConfigMap and run certagent ca rotate again")
	}
	if err := cafiles.CheckProof(c.Proof, oldCA, newCA); err != nil {
		return err
	}
	if err := c.CheckPhase(newCA); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, n := range c.Nodes {
		if seen[n] || strings.ContainsAny(n, " \t") {
			return fmt.Errorf("nodes: %q is listed twice or is not a node name", n)
		}
		seen[n] = true
	}
	for _, n := range c.NodesDone {
		if !seen[n] {
			return fmt.Errorf("nodesDone: %q is not in nodes", n)
		}
	}
	for _, l := range c.PhaseTimes {
		if _, err := ParsePhaseTime(l); err != nil {
			return err
		}
	}
	return nil
}

// SignPhase signs c's phase with the new CA's key (PhaseProof): the
// command calls it for every phase it publishes, and only it holds that
// key. A proof names its rotation and phase only: replayed, it can only
// set again a phase of this rotation the operator already published.
func (c *Cluster) SignPhase(newKey crypto.Signer) error {
	newCA, err := oneCert("newCA", c.NewCA)
	if err != nil {
		return err
	}
	proof, err := cafiles.ProvePhase(newCA, newKey, c.CA, c.ID, string(c.Phase))
	if err != nil {
		return err
	}
	c.PhaseProof = proof
	return nil
}

// CheckPhase checks that c's phase was set by the holder of newCA's key
// (PhaseProof, see SignPhase). Nodes call it with the new CA they
// verified against their own files.
func (c *Cluster) CheckPhase(newCA *x509.Certificate) error {
	return cafiles.CheckPhaseProof(c.PhaseProof, newCA, c.CA, c.ID, string(c.Phase))
}

func oneCert(field string, data []byte) (*x509.Certificate, error) {
	b, err := pki.ParseBundle(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if b.Format != pki.FormatPEM || len(b.Certs) != 1 || b.Key != nil {
		return nil, fmt.Errorf("%s: not exactly one PEM certificate", field)
	}
	return b.Certs[0], nil
}

// PhaseTime is one phaseTimes line: when a phase began and when every
// node was done with it.
type PhaseTime struct {
	Phase       Phase     `json:"phase"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	WallSeconds float64   `json:"wallSeconds"`
}

// ParsePhaseTime decodes a "<phase> <start> <end>" line.
func ParsePhaseTime(line string) (PhaseTime, error) {
	f := strings.Fields(line)
	if len(f) != 3 || Phase(f[0]).Index() < 0 {
		return PhaseTime{}, fmt.Errorf("phaseTimes: %q is not \"<phase> <start> <end>\"", line)
	}
	start, err1 := time.Parse(time.RFC3339, f[1])
	end, err2 := time.Parse(time.RFC3339, f[2])
	if err := errors.Join(err1, err2); err != nil {
		return PhaseTime{}, fmt.Errorf("phaseTimes: %q: %w", line, err)
	}
	return PhaseTime{Phase: Phase(f[0]), Start: start, End: end, WallSeconds: end.Sub(start).Seconds()}, nil
}

// Line encodes t as a phaseTimes line.
func (t PhaseTime) Line() string {
	return fmt.Sprintf("%s %s %s", t.Phase, t.Start.UTC().Format(time.RFC3339), t.End.UTC().Format(time.RFC3339))
}

// Times decodes c's phaseTimes (Validate checked them).
func (c *Cluster) Times() []PhaseTime {
	var out []PhaseTime
	for _, l := range c.PhaseTimes {
		if t, err := ParsePhaseTime(l); err == nil {
			out = append(out, t)
		}
	}
	return out
}

// Over reports whether the rotation is over: at phase done, and every
// node done with it.
func (c *Cluster) Over() bool {
	return c.Phase == Done && c.finished(Done)
}

// finished reports whether c records phase p as done everywhere.
func (c *Cluster) finished(p Phase) bool {
	for _, t := range c.Times() {
		if t.Phase == p {
			return true
		}
	}
	return false
}
