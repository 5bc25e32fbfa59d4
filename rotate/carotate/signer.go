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

// ErrNoNewKey: the new CA's key is not staged on this node.
var ErrNoNewKey = errors.New("the new CA key is not on this node")

// Switch makes next the CA that signs: <stem>.crt becomes [next, the
// certificates it held but next] and <stem>.key next's staged key, in one
// transaction (the pair never mismatches, even after a crash). It
// reports whether it changed anything: a CA already switched is left as
// it is. Without the staged key it fails with ErrNoNewKey. The signer
// file, when there, becomes next alone in the same transaction.
func Switch(opts rotate.Options, pkiDir, stem string, next *x509.Certificate) (bool, error) {
	p := PathsOf(pkiDir, stem)
	if _, err := rotate.LoadLocalCA(opts.Root, stem, p.Cert, p.Key); err != nil {
		return false, err
	}
	if IsSwitched(opts.Root, pkiDir, stem, next) {
		// The signer file follows (a transaction that wrote the pair
		// wrote it too, so this is only a repair).
		return WriteSignerIfThere(opts, p, next)
	}
	staged, key, err := Staged(opts.Root, pkiDir, stem)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("%w: %s is missing; copy the new CA there (see README, Rotating a CA)", ErrNoNewKey, p.NextKey)
	case err != nil:
		return false, err
	case !staged.Equal(next):
		return false, fmt.Errorf("%s is another CA (serial %X) than the rotation's (serial %X)", p.NextCert, staged.SerialNumber, next.SerialNumber)
	}
	f, err := opts.Root.ReadFile(p.Cert)
	if err != nil {
		return false, err
	}
	b, err := pki.ParseBundle(f.Data)
	if err != nil {
		return false, fmt.Errorf("%s: %w", p.Cert, err)
	}
	certs := []*x509.Certificate{next}
	for _, c := range b.Certs {
		if !c.Equal(next) {
			certs = append(certs, c)
		}
	}
	var also []rotate.TrustEdit
	if HasSigner(opts.Root, p) {
		also = append(also, SignerEdit(p, next))
	}
	_, err = rotate.ReplacePair(opts, "switch "+stem, p.Cert, p.Key, certs, key, also...)
	return err == nil, err
}

// WriteSignerIfThere makes the signer file, when there, hold c alone.
func WriteSignerIfThere(opts rotate.Options, p Paths, c *x509.Certificate) (bool, error) {
	f, err := opts.Root.ReadFile(p.Signer)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if string(f.Data) == string(pki.EncodeCertPEM(c)) {
		return false, nil
	}
	_, err = rotate.RewriteTrust(context.Background(), opts, []rotate.TrustEdit{SignerEdit(p, c)})
	return err == nil, err
}

// IsSwitched reports, from the files, whether next signs: the key in
// <stem>.key is next's and next is the first certificate of <stem>.crt.
func IsSwitched(root *pki.Root, pkiDir, stem string, next *x509.Certificate) bool {
	p := PathsOf(pkiDir, stem)
	ca, err := rotate.LoadLocalCA(root, stem, p.Cert, p.Key)
	if err != nil || !ca.Cert.Equal(next) {
		return false
	}
	f, err := root.ReadFile(p.Cert)
	if err != nil {
		return false
	}
	b, err := pki.ParseBundle(f.Data)
	return err == nil && b.Certs[0].Equal(next)
}

// Unstage removes <stem>.next.crt, <stem>.next.key and the signer file
// (<stem>.signer.crt) once the rotation of next is over, keeping a copy of both in keepDir (a node path, below
// keepDir/files; "" keeps none). A staged file that is not next's (the
// next rotation's, placed early) stays.
func Unstage(root *pki.Root, pkiDir, stem string, next *x509.Certificate, keepDir string) error {
	p := PathsOf(pkiDir, stem)
	for _, f := range []string{p.NextCert, p.NextKey, p.Signer} {
		data, err := root.ReadFile(f)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return err
		case !ofCA(data.Data, next):
			continue
		}
		if keepDir != "" {
			dst := path.Join(keepDir, "files", f)
			d, err := root.MkdirAll(path.Dir(dst), 0o700)
			if err != nil {
				return fmt.Errorf("keep %s: %w", f, err)
			}
			d.Close()
			if err := root.WriteFile(dst, data.Data, 0o600, os.Geteuid(), os.Getegid()); err != nil {
				return fmt.Errorf("keep %s: %w", f, err)
			}
		}
		if err := rotate.RemoveFile(root, f); err != nil {
			return fmt.Errorf("remove %s: %w", f, err)
		}
	}
	return nil
}

// ofCA: data is ca's certificate or its private key (PEM).
func ofCA(data []byte, ca *x509.Certificate) bool {
	if key, err := pki.ParseKeyPEM(data); err == nil {
		return pki.KeyMatches(ca, key)
	}
	b, err := pki.ParseBundle(data)
	return err == nil && len(b.Certs) == 1 && b.Certs[0].Equal(ca)
}

// Leaf is one certificate on the node: the first certificate of a PEM
// file, or (User set) a kubeconfig user's embedded one.
type Leaf struct {
	Name, Path, User string
}

// IssuedBy returns the names of the leaves that old signed, and a
// problem per leaf that cannot be read.
func IssuedBy(root *pki.Root, leaves []Leaf, old *x509.Certificate) ([]string, []error) {
	var out []string
	var problems []error
	for _, l := range leaves {
		c, err := readLeaf(root, l)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", l.Name, err))
			continue
		}
		if pki.SignedBy(c, old) {
			out = append(out, l.Name)
		}
	}
	return out, problems
}

func readLeaf(root *pki.Root, l Leaf) (*x509.Certificate, error) {
	f, err := root.ReadFile(l.Path)
	if err != nil {
		return nil, err
	}
	if l.User == "" {
		b, err := pki.ParseBundle(f.Data)
		if err != nil {
			return nil, err
		}
		return b.Certs[0], nil
	}
	creds, err := pki.ParseKubeconfig(f.Data, path.Dir(l.Path))
	if err != nil {
		return nil, err
	}
	for _, c := range creds {
		if c.User == l.User && c.Embedded() {
			b, err := pki.ParseBundle(c.CertData)
			if err != nil {
				return nil, err
			}
			return b.Certs[0], nil
		}
	}
	return nil, fmt.Errorf("user %q has no embedded certificate", l.User)
}
