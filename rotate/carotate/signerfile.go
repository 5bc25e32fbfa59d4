package carotate

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"path"

	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// The controller manager reads its cluster signer (the flag
// --cluster-signing-cert-file, kubeadm's pki/ca.crt) as exactly one
// certificate and exits when the file holds two. During a rotation of
// the CA "ca", <stem>.crt holds two CAs from trust to finish, so
// certagent gives the controller manager a file of its own, the signer
// file <stem>.signer.crt: the CA of <stem>.key alone (the old CA until
// the switch, the new one after it, written in the switch's transaction),
// and points the flag at it until finish points it back.

// SignerFlag is the controller manager's flag naming its signer's
// certificate.
const SignerFlag = "cluster-signing-cert-file"

// SignerManifest is the static pod whose signer flag is edited.
const SignerManifest = "kube-controller-manager.yaml"

// WriteSigner makes the signer file of stem hold the CA of <stem>.key
// alone (the first certificate of <stem>.crt); a file already so is left
// as it is. It reports whether it wrote.
func WriteSigner(opts rotate.Options, pkiDir, stem string) (bool, error) {
	p := PathsOf(pkiDir, stem)
	ca, err := rotate.LoadLocalCA(opts.Root, stem, p.Cert, p.Key)
	if err != nil {
		return false, err
	}
	want := pki.EncodeCertPEM(ca.Cert)
	f, err := opts.Root.ReadFile(p.Signer)
	switch {
	case err == nil && string(f.Data) == string(want):
		return false, nil
	case err == nil:
		// There: rewritten through the transaction, backed up.
		_, err = rotate.RewriteTrust(context.Background(), opts, []rotate.TrustEdit{SignerEdit(p, ca.Cert)})
		return err == nil, err
	case !errors.Is(err, fs.ErrNotExist):
		return false, err
	}
	// A new file no component reads yet: written whole and synced.
	cf, err := opts.Root.ReadFile(p.Cert)
	if err != nil {
		return false, err
	}
	if err := opts.Root.WriteFile(p.Signer, want, cf.Mode, cf.UID, cf.GID); err != nil {
		return false, fmt.Errorf("write %s: %w", p.Signer, err)
	}
	return true, nil
}

// SignerEdit is the edit that makes the signer file hold c alone.
func SignerEdit(p Paths, c *x509.Certificate) rotate.TrustEdit {
	return rotate.TrustEdit{Name: path.Base(p.Signer), Path: p.Signer, Data: pki.EncodeCertPEM(c)}
}

// HasSigner reports whether the signer file of p is there.
func HasSigner(root *pki.Root, p Paths) bool {
	_, err := root.ReadFile(p.Signer)
	return err == nil
}

// SignerFlagEdit points the controller manager's signer flag in the
// manifest at the signer file (toSigner) or back at <stem>.crt.
func SignerFlagEdit(manifest string, p Paths, toSigner bool) rotate.FlagEdit {
	e := rotate.FlagEdit{Name: SignerManifest + " --" + SignerFlag, Path: manifest, Flag: SignerFlag, From: path.Base(p.Cert), To: path.Base(p.Signer)}
	if !toSigner {
		e.From, e.To = e.To, e.From
	}
	return e
}

// SignerFlagNames tells whether the manifest's signer flag names the
// file base (false when the manifest or the flag is absent).
func SignerFlagNames(root *pki.Root, manifest, base string) bool {
	f, err := root.ReadFile(manifest)
	if err != nil {
		return false
	}
	v, err := rotate.FlagValue(f.Data, SignerFlag)
	return err == nil && path.Base(v) == base
}
