package carotate

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
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
	if _, link, err := resolveFile(opts.Root, p.Signer); err == nil && link != nil {
		// Written through, a link would overwrite the file it names.
		return false, fmt.Errorf("%s: %w", p.Signer, link)
	}
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
	e := rotate.FlagEdit{Name: SignerManifest + " --" + SignerFlag, Path: manifest, Flag: SignerFlag, From: path.Base(p.Cert), To: path.Base(p.Signer),
		Dir: path.Dir(p.Cert)}
	if !toSigner {
		e.From, e.To = e.To, e.From
	}
	return e
}

// SignerFlagNames tells whether the manifest's signer flag names file
// (a node path: kubeadm mounts the PKI directory at the same path); false
// when the manifest or the flag is absent, or it names a file of the
// same name elsewhere, which certagent neither writes nor edits.
func SignerFlagNames(root *pki.Root, manifest, file string) bool {
	f, err := root.ReadFile(manifest)
	if err != nil {
		return false
	}
	v, err := rotate.FlagValue(f.Data, SignerFlag)
	return err == nil && path.Clean(v) == file
}

// OneCA reports whether PEM data holds c and nothing else.
func OneCA(data []byte, c *x509.Certificate) bool { return ofCA(data, c) }

// RemoveSigner removes the signer file of p once no manifest names it,
// keeping a copy below keepDir/files when it holds next (anything else
// stays: certagent removes only what it wrote for this rotation).
func RemoveSigner(root *pki.Root, p Paths, next *x509.Certificate, keepDir string) error {
	f, err := root.ReadFile(p.Signer)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case !ofCA(f.Data, next):
		return fmt.Errorf("%s holds another CA than the rotation's new one: left in place", p.Signer)
	}
	dst := path.Join(keepDir, "files", p.Signer)
	d, err := root.MkdirAll(path.Dir(dst), 0o700)
	if err != nil {
		return fmt.Errorf("keep %s: %w", p.Signer, err)
	}
	d.Close()
	if err := root.WriteFile(dst, f.Data, 0o600, os.Geteuid(), os.Getegid()); err != nil {
		return fmt.Errorf("keep %s: %w", p.Signer, err)
	}
	return rotate.RemoveFile(root, p.Signer)
}
