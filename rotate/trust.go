package rotate

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/rotate/pki"
)

// Storages of trust files: certificates that verify others, no key. A CA
// rotation (`certagent ca rotate`) rewrites them through the same
// transaction as a renewal: staged, read back, backed up, swapped,
// synced, read back again, and repaired after a crash.
const (
	// StorageBundle is a PEM file of CA certificates (a client CA file,
	// a kubeconfig's certificate-authority file).
	StorageBundle Storage = "ca-bundle"
	// StorageKubeconfigCA is a kubeconfig whose clusters'
	// certificate-authority-data is rewritten.
	StorageKubeconfigCA Storage = "kubeconfig-ca"
)

func init() {
	codecs[StorageBundle] = trustCodec{}
	codecs[StorageKubeconfigCA] = trustCodec{kubeconfig: true}
}

// keyless reports whether a storage holds no key (certificates without
// one, or a manifest).
func keyless(s Storage) bool {
	return s == StorageBundle || s == StorageKubeconfigCA || s == StorageManifestFlag
}

// trustCodec reads a trust file: every certificate in it must be a CA.
// It has no encoder: TrustEdit brings the new contents whole.
type trustCodec struct{ kubeconfig bool }

func (trustCodec) files(t Target) []string { return []string{t.CertPath} }

func (c trustCodec) decode(t Target, data map[string][]byte) (decoded, error) {
	certs, err := TrustCerts(data[t.CertPath], c.kubeconfig)
	if err != nil {
		return decoded{}, &partError{err: fmt.Errorf("%s: %w", t.CertPath, err)}
	}
	return decoded{cert: certs[0], bundled: certs[1:]}, nil
}

func (trustCodec) encode(t Target, _ *current, _ []*x509.Certificate, _ crypto.Signer) ([]newFile, error) {
	return nil, fmt.Errorf("%s: a trust file is rewritten whole, not renewed", t.Name)
}

func (trustCodec) fromJournal(t Target, paths []string) Target { return firstPath(t, paths) }

// TrustCerts reads the CA certificates of a trust file: a PEM bundle, or
// (kubeconfig set) every cluster's certificate-authority-data of a
// kubeconfig, clusters in name order. Anything that is not a CA
// certificate, a private key, or no certificate at all is an error.
func TrustCerts(data []byte, kubeconfig bool) ([]*x509.Certificate, error) {
	if !kubeconfig {
		return caBundle(data)
	}
	kc, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	names := make([]string, 0, len(kc.Clusters))
	for n, cl := range kc.Clusters {
		if cl != nil && len(cl.CertificateAuthorityData) > 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []*x509.Certificate
	for _, n := range names {
		certs, err := caBundle(kc.Clusters[n].CertificateAuthorityData)
		if err != nil {
			return nil, fmt.Errorf("cluster %q certificate-authority-data: %w", n, err)
		}
		out = append(out, certs...)
	}
	if len(out) == 0 {
		return nil, errors.New("no cluster has certificate-authority-data")
	}
	return out, nil
}

func caBundle(data []byte) ([]*x509.Certificate, error) {
	b, err := pki.ParseBundle(data)
	if err != nil {
		return nil, err
	}
	if b.Key != nil {
		return nil, errors.New("holds a private key: not a trust bundle")
	}
	if b.Warning != nil {
		return nil, b.Warning
	}
	for _, c := range b.Certs {
		if !pki.IsCA(c) {
			return nil, fmt.Errorf("%s is not a CA certificate: not a trust bundle", c.Subject)
		}
	}
	return b.Certs, nil
}

// TrustEdit is the new contents of one trust file.
type TrustEdit struct {
	Name string
	// Path is the node path written (where links lead: a link stays).
	Path string
	// Kubeconfig: the file is a kubeconfig, else a PEM bundle.
	Kubeconfig bool
	Data       []byte
}

// RewriteTrust writes trust files in one transaction. Each file keeps its
// mode and owner; its new contents must read as a trust file of the same
// kind. An edit that fails before the commit is reported in its result
// and dropped; the others go ahead. The error is the transaction's, or
// the first failed edit's.
func RewriteTrust(ctx context.Context, opts Options, edits []TrustEdit) ([]Result, error) {
	opts = opts.withDefaults()
	out := make([]Result, len(edits))
	var ps []*prepared
	var idx []int
	for i, e := range edits {
		out[i].Name = e.Name
		p, err := prepareTrust(opts.Root, e)
		if err != nil {
			out[i].Err = err
			continue
		}
		ps, idx = append(ps, p), append(idx, i)
	}
	if len(ps) == 0 || ctx.Err() != nil {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		return out, firstErr(out)
	}
	dir, txErr := runTx(opts, ps)
	Prune(opts.Root, opts.BackupDir, opts.KeepBackups)
	for k, p := range ps {
		r := &out[idx[k]]
		r.Backup, r.Err = dir, p.err
		if r.Err == nil {
			r.Err = txErr
		}
	}
	if txErr != nil {
		return out, txErr
	}
	return out, firstErr(out)
}

// firstErr is the first result's error (nil when all went well).
func firstErr(rs []Result) error {
	for _, r := range rs {
		if r.Err != nil {
			return fmt.Errorf("%s: %w", r.Name, r.Err)
		}
	}
	return nil
}

func prepareTrust(root *pki.Root, e TrustEdit) (*prepared, error) {
	t := Target{Name: e.Name, Storage: StorageBundle, CertPath: e.Path}
	if e.Kubeconfig {
		t.Storage = StorageKubeconfigCA
	}
	cur, err := load(root, t)
	if err != nil {
		return nil, err
	}
	certs, err := TrustCerts(e.Data, e.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("new %s: %w", e.Path, err)
	}
	f := cur.files[e.Path]
	nf := cur.file(e.Path, e.Data, f.Mode)
	return &prepared{t: t, cur: cur, cert: certs[0], files: []newFile{nf}}, nil
}

// ReplacePair writes certs (the certificate its key belongs to first, the
// rest bundled after it) and key over a certificate file and a key file
// in one transaction: a CA's signer switch. The pair never mismatches on
// disk, even after a crash (Repair). The trust files of also (the
// signer file of a rotation) are written in the same transaction; any of
// them failing fails it all before anything is swapped.
func ReplacePair(opts Options, name, certPath, keyPath string, certs []*x509.Certificate, key crypto.Signer, also ...TrustEdit) (Result, error) {
	if len(certs) == 0 || !pki.KeyMatches(certs[0], key) {
		err := fmt.Errorf("%s: the key is not the first certificate's", name)
		return Result{Name: name, Err: err}, err
	}
	t := Target{Name: name, Storage: StoragePair, CertPath: certPath, KeyPath: keyPath}
	cur, err := load(opts.Root, t)
	if err != nil {
		return Result{Name: name, Err: err}, err
	}
	if len(also) == 0 {
		return install(opts, t, cur, certs, key)
	}
	opts = opts.withDefaults()
	r := Result{Name: name, NewSerial: serialHex(certs[0]), NotAfter: certs[0].NotAfter, OldSerial: serialHex(cur.cert)}
	files, err := render(t, cur, certs, key)
	if err != nil {
		r.Err = err
		return r, err
	}
	ps := []*prepared{{t: t, cur: cur, cert: certs[0], key: key, files: files}}
	for _, e := range also {
		p, err := prepareTrust(opts.Root, e)
		if err != nil {
			r.Err = fmt.Errorf("%s: %w", e.Path, err)
			return r, r.Err
		}
		ps = append(ps, p)
	}
	r.Backup, err = runTxOf(opts, ps, true)
	for _, p := range ps {
		if err == nil && p.err != nil {
			err = p.err
		}
	}
	Prune(opts.Root, opts.BackupDir, opts.KeepBackups)
	r.Err = err
	return r, err
}

// errDropped fails a transaction whose files must change together when
// one of them could not be staged.
var errDropped = errors.New("a file of the transaction could not be staged: none is written")

// RemoveFile removes a file (a link as a link) inside the root and syncs
// its directory; a missing file is not an error.
func RemoveFile(root *pki.Root, nodePath string) error { return removeDurable(root, nodePath) }
