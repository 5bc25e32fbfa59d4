package rotate

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"path"
	"strings"
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
	// BackupDir holds the transactions' backups and journals (node path,
	// default DefaultBackupDir): Repair must be run on the same one.
	BackupDir string
	// KeepBackups is how many backup directories Prune keeps (default 5).
	KeepBackups int
	Hooks       Hooks
}

// Current is the node path of the -current.pem symlink.
func (s KubeletStore) Current() string { return path.Join(s.Dir, s.Prefix+"-current.pem") }

// Update writes a new pair the way the kubelet does, as a transaction
// with a journal in BackupDir like every renewal (see StorageKubeletStore):
// a new timestamped file holding certs and key, and a symlink
// -updated.pem to it renamed over -current.pem. Both are staged and
// checked first (the key matches and, when roots is not nil, the chain
// leads to one of them), the old link is backed up, the new file is in
// place and synced before the link moves, and both are read back; a crash
// at any point is put right by Repair. The kubelet picks the result up
// unchanged. The old files stay where they are. Update returns the node
// path of the new file and the transaction's backup directory, from which
// Restore (entry s.Prefix+"-current") undoes it.
func (s KubeletStore) Update(certs []*x509.Certificate, key crypto.Signer, roots *x509.CertPool, now time.Time) (file, backup string, err error) {
	name, err := s.newName(now)
	if err != nil {
		return "", "", err
	}
	t := Target{Name: s.Prefix + "-current", Storage: StorageKubeletStore, CertPath: s.Current(), Roots: roots, file: path.Join(s.Dir, name)}
	cur, err := load(s.Root, t)
	if err != nil {
		// A missing, expired or broken pair is what a new one replaces:
		// only the current file's owner is kept.
		cur = &current{files: map[string]*pki.File{}}
		if f, err := s.Root.ReadFile(t.CertPath); err == nil {
			cur.files[t.CertPath] = f
		}
	}
	opts := Options{Root: s.Root, BackupDir: s.BackupDir, KeepBackups: s.KeepBackups, Now: now, Hooks: s.Hooks}
	res, err := install(opts, t, cur, certs, key)
	if err != nil {
		return "", res.Backup, err
	}
	return t.file, res.Backup, nil
}

// newName makes the store's directory if needed and picks the name of the
// new file: <prefix>-<time>.pem, or with the nanoseconds added when that
// is taken.
func (s KubeletStore) newName(now time.Time) (string, error) {
	if s.Prefix == "" || strings.ContainsAny(s.Prefix, "/") || s.Prefix == "." || s.Prefix == ".." {
		return "", fmt.Errorf("kubelet store: %q is not a file name prefix", s.Prefix)
	}
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
	return name, nil
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

// kubeletStoreCodec is StorageKubeletStore, the kubelet's store as
// client-go's certificate store keeps it: a renewal writes a new
// <prefix>-<time>.pem (the certificates and the key, 0600, owned like the
// current one), then a <prefix>-updated.pem link to it renamed over the
// <prefix>-current.pem link. Its journal entry lists the new file, then
// the link; the link's backup is a link.
type kubeletStoreCodec struct{}

func (kubeletStoreCodec) files(t Target) []string { return []string{t.CertPath} }

func (kubeletStoreCodec) decode(t Target, data map[string][]byte) (decoded, error) {
	return decodePEM(data[t.CertPath], data[t.CertPath])
}

func (kubeletStoreCodec) encode(t Target, cur *current, certs []*x509.Certificate, key crypto.Signer) ([]newFile, error) {
	dir := path.Dir(t.CertPath)
	if t.file == "" || path.Dir(t.file) != dir {
		// The link never leads out of the store's directory.
		return nil, fmt.Errorf("%s: the new file %q is not in the store's directory %s", t.Name, t.file, dir)
	}
	keyPEM, err := pki.EncodeKeyPEM(key, "")
	if err != nil {
		return nil, err
	}
	uid, gid := cur.owner(t.CertPath)
	prefix := strings.TrimSuffix(path.Base(t.CertPath), "-current.pem")
	return []newFile{
		{path: t.file, data: append(pki.EncodeCertPEM(certs...), keyPEM...), mode: 0o600, uid: uid, gid: gid},
		{path: t.CertPath, data: []byte(t.file), mode: 0o600, uid: uid, gid: gid, link: true, staged: path.Join(dir, prefix+"-updated.pem")},
	}, nil
}

// fromJournal: the link is the entry's last file.
func (kubeletStoreCodec) fromJournal(t Target, paths []string) Target {
	if n := len(paths); n > 0 {
		t.CertPath = paths[n-1]
	}
	return t
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
	if _, _, err := store.Update(b.Certs, key, roots, now); err != nil {
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
