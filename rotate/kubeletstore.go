package rotate

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/rotate/pki"
)

// KubeletStore is the kubelet's certificate store in a directory: files
// <prefix>-<YYYY-MM-DD-HH-MM-SS>.pem (certificate and key, 0600) and the
// <prefix>-current.pem symlink to the one in use. Prefix is
// "kubelet-client" or "kubelet-server".
type KubeletStore struct {
	Root   *pki.Root
	Dir    string // node path
	Prefix string
}

// Current is the node path of the -current.pem symlink.
func (s KubeletStore) Current() string { return path.Join(s.Dir, s.Prefix+"-current.pem") }

// Update writes a new pair the way the kubelet does: a new timestamped
// file, synced; a symlink -updated.pem to it; a rename over -current.pem,
// which swaps atomically; a sync of the directory. The kubelet picks it up
// unchanged. Before the swap the file is read back and checked: its key
// matches and, when roots is not nil, it chains to one of them. The old
// files stay where they are.
func (s KubeletStore) Update(certs []*x509.Certificate, key crypto.Signer, roots *x509.CertPool, now time.Time) (string, error) {
	keyPEM, err := pki.EncodeKeyPEM(key, "")
	if err != nil {
		return "", err
	}
	data := append(pki.EncodeCertPEM(certs...), keyPEM...)
	// The store directory is resolved and opened once: every write below
	// names an entry of it, so nothing can redirect one outside the root.
	d, err := s.Root.MkdirAll(s.Dir, 0o755)
	if err != nil {
		return "", err
	}
	defer d.Close()
	stamp := now.UTC().Format("2006-01-02-15-04-05")
	name := fmt.Sprintf("%s-%s.pem", s.Prefix, stamp)
	if _, err := d.Lstat(name); err == nil {
		name = fmt.Sprintf("%s-%s-%d.pem", s.Prefix, stamp, now.UnixNano()%1000000)
	}
	file := path.Join(s.Dir, name)
	uid, gid := os.Geteuid(), os.Getegid()
	if f, err := s.Root.ReadFile(s.Current()); err == nil {
		uid, gid = f.UID, f.GID
	}
	if err := d.WriteFile(name, data, 0o600, uid, gid); err != nil {
		return "", err
	}
	if err := checkPair(s.Root, path.Join(d.Path, name), roots, now); err != nil {
		d.Remove(name)
		return "", err
	}
	if err := s.swap(d, file); err != nil {
		return "", err
	}
	if err := checkPair(s.Root, s.Current(), roots, now); err != nil {
		return "", fmt.Errorf("after the swap: %w", err)
	}
	return file, nil
}

// swap points -current.pem at target the kubelet's way: a link
// -updated.pem renamed over it, then the directory synced.
func (s KubeletStore) swap(d *pki.Dir, target string) error {
	updated := s.Prefix + "-updated.pem"
	if err := d.Remove(updated); err != nil {
		return err
	}
	if err := d.Symlink(target, updated); err != nil {
		return fmt.Errorf("symlink: %w", err)
	}
	if err := d.Rename(updated, path.Base(s.Current())); err != nil {
		return fmt.Errorf("swap %s: %w", s.Current(), err)
	}
	return d.Sync()
}

// Target returns where -current.pem points now ("" if it does not exist).
func (s KubeletStore) Target() string {
	d, err := s.Root.OpenDir(s.Dir)
	if err != nil {
		return ""
	}
	defer d.Close()
	t, err := d.ReadLink(path.Base(s.Current()))
	if err != nil {
		return ""
	}
	return t
}

// Rollback points -current.pem back at an earlier file, atomically.
func (s KubeletStore) Rollback(target string) error {
	if target == "" {
		return errors.New("rollback: no earlier file")
	}
	d, err := s.Root.OpenDir(s.Dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return s.swap(d, target)
}

// checkPair reads a combined file and checks its key and chain.
func checkPair(root *pki.Root, p string, roots *x509.CertPool, now time.Time) error {
	f, err := root.ReadFile(p)
	if err != nil {
		return err
	}
	b, err := pki.ParseBundle(f.Data)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if b.Key == nil || !pki.KeyMatches(b.Certs[0], b.Key) {
		return fmt.Errorf("%s: key does not match the certificate", p)
	}
	if roots != nil {
		inter := x509.NewCertPool()
		for _, c := range b.Certs[1:] {
			inter.AddCert(c)
		}
		if _, err := b.Certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// ConvertKubeconfig moves a kubeconfig user's embedded client certificate
// into the kubelet's store and makes the kubeconfig refer to
// <store>/<prefix>-current.pem, as kubeadm writes kubelet.conf on joined
// nodes, so that the kubelet's own rotation (and certagent's CSR renewal)
// keep it fresh. Each step leaves a working pair: first the store gets the
// same certificate, then the kubeconfig is rewritten atomically; a copy of
// it as it was is kept in backupDir.
func ConvertKubeconfig(root *pki.Root, kubeconfig, user string, store KubeletStore, roots *x509.CertPool, backupDir string, now time.Time) error {
	f, err := root.ReadFile(kubeconfig)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.Load(f.Data)
	if err != nil {
		return fmt.Errorf("%s: %w", kubeconfig, err)
	}
	ai := cfg.AuthInfos[user]
	if ai == nil || len(ai.ClientCertificateData) == 0 || len(ai.ClientKeyData) == 0 {
		return fmt.Errorf("%s: user %q embeds no client certificate", kubeconfig, user)
	}
	b, err := pki.ParseBundle(ai.ClientCertificateData)
	if err != nil {
		return err
	}
	key, err := pki.ParseKeyPEM(ai.ClientKeyData)
	if err != nil {
		return err
	}
	if _, err := store.Update(b.Certs, key, roots, now); err != nil {
		return err
	}
	keep := "kubeconfig-before-convert-" + now.UTC().Format("20060102T150405Z") + "-" + path.Base(kubeconfig)
	bd, err := root.MkdirAll(backupDir, 0o700)
	if err != nil {
		return err
	}
	err = bd.WriteFile(keep, f.Data, 0o600, f.UID, f.GID)
	bd.Close()
	if err != nil {
		return err
	}
	ai.ClientCertificateData, ai.ClientKeyData = nil, nil
	ai.ClientCertificate, ai.ClientKey = store.Current(), store.Current()
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeDurable(root, kubeconfig, data, 0o600, f.UID, f.GID)
}
