package canode

import (
	"context"
	"fmt"
	"path"
	"time"

	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
)

// signerManifest is the controller manager's manifest when this node
// runs it with the CA being rotated as its cluster signer (its
// --cluster-signing-cert-file names <stem>.crt or the signer file), ""
// otherwise.
func (s *step) signerManifest() string {
	if s.stem != "ca" || !s.hasCAKey() {
		return ""
	}
	m := path.Join(s.in.Config.Restart.ManifestsDir, ca.SignerManifest)
	p := ca.PathsOf(s.in.Config.PKIDir, s.stem)
	if ca.SignerFlagNames(s.n.Root, m, p.Cert) || ca.SignerFlagNames(s.n.Root, m, p.Signer) {
		return m
	}
	return ""
}

// toSigner gives the controller manager its one-certificate signer file
// before <stem>.crt holds two CAs (in prepare, where it holds the same
// CA as <stem>.crt: the kubelet's restart on the manifest change is
// that phase's one restart; trust does it again should prepare have
// missed it): the file written (the CA of the key), then the manifest's
// flag pointed at it. False when the bundles must wait.
func (s *step) toSigner(ctx context.Context) bool {
	m := s.signerManifest()
	if m == "" {
		return true
	}
	p := ca.PathsOf(s.in.Config.PKIDir, s.stem)
	ok := s.locked(ctx, "give the controller manager its signer file", func() error {
		if _, err := ca.WriteSigner(s.opts(), s.in.Config.PKIDir, s.stem); err != nil {
			return err
		}
		return s.editFlag(ctx, ca.SignerFlagEdit(m, p, true))
	})
	return ok
}

// fromSigner points the controller manager's flag back at <stem>.crt
// once the rotation is done (<stem>.crt holds the new CA alone again;
// the kubelet's restart on the manifest change is the one restart, not
// in finish where the bundles' readers restart), then removes the
// signer file, a copy kept with the staged CA's.
func (s *step) fromSigner(ctx context.Context) bool {
	m := s.signerManifest()
	if m == "" {
		return true
	}
	cfg := s.in.Config
	p := ca.PathsOf(cfg.PKIDir, s.stem)
	if f, err := s.n.Root.ReadFile(p.Cert); err != nil || !ca.OneCA(f.Data, s.next) {
		s.problems = append(s.problems, fmt.Sprintf("%s does not hold the new CA alone: the controller manager's signer stays %s", p.Cert, p.Signer))
		return false
	}
	keep := path.Join(cfg.Renewal.BackupDir, "ca-rotation-"+s.in.Cluster.ID[:16])
	return s.locked(ctx, "point the controller manager back at "+p.Cert, func() error {
		if err := s.editFlag(ctx, ca.SignerFlagEdit(m, p, false)); err != nil {
			return err
		}
		return ca.RemoveSigner(s.n.Root, p, s.next, keep)
	})
}

// editFlag edits the controller manager's manifest flag in a
// transaction. The kubelet restarts it on the change: when the edit
// changes the file, the controller manager is recorded first as pending
// confirmation (a daemon killed after the edit still confirms it), and
// the phase is done only once it is healthy again.
func (s *step) editFlag(ctx context.Context, e rotate.FlagEdit) error {
	if f, err := s.n.Root.ReadFile(e.Path); err == nil {
		if out, err := e.Edit(f.Data); err == nil && out != nil {
			s.it.addPendingManifest("kube-controller-manager")
			if err := s.it.save(s.n.StateDir); err != nil {
				return err
			}
		}
	}
	_, _, err := rotate.EditFlags(ctx, s.opts(), []rotate.FlagEdit{e})
	return err
}

// locked runs f under the renewal lock; false (with a problem, or left
// when the lock was not had) when it did not succeed.
func (s *step) locked(ctx context.Context, what string, f func() error) bool {
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	lock, err := rotate.Acquire(lctx, s.n.Root, s.in.Config.Renewal.BackupDir)
	cancel()
	if err != nil {
		s.left = append(s.left, fmt.Sprintf("%s (%v)", what, err))
		return false
	}
	defer lock.Unlock()
	if err := f(); err != nil {
		s.problems = append(s.problems, fmt.Sprintf("%s: %v", what, err))
		return false
	}
	return true
}
