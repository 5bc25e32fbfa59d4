package rotate

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"io/fs"
	"os"

	"github.com/certagent/certagent/rotate/pki"
)

// A codec is one Storage: which files hold a certificate and its key, how
// to read the pair out of them, and how to write a new pair into them. The
// transaction, Repair and Restore know no storage by name: they look its
// codec up by the name the journal records (see codecOf), so a storage is
// added by adding a codec.
type codec interface {
	// files lists the node paths that hold t's certificate and key now,
	// the certificate's first: what a renewal reads before it writes.
	files(t Target) []string
	// decode reads the certificate, the certificates bundled after it and
	// the key out of the contents of t's files, by node path (a link's
	// contents are those of the file it points to).
	decode(t Target, data map[string][]byte) (decoded, error)
	// encode renders certs (the new certificate first) and key as the
	// files to write, in the order they are committed; cur is what t's
	// files hold now.
	encode(t Target, cur *current, certs []*x509.Certificate, key crypto.Signer) ([]newFile, error)
	// fromJournal fills in t, which has the name, storage and user of a
	// journal entry, from the node paths the entry lists (in their
	// order), so that decode can read them.
	fromJournal(t Target, paths []string) Target
}

// codecs are the storages by the name the journal records.
var codecs = map[Storage]codec{
	StoragePair:         pairCodec{},
	StorageCombined:     combinedCodec{},
	StorageKubeconfig:   kubeconfigCodec{},
	StorageKubeletStore: kubeletStoreCodec{},
}

// codecOf returns the codec of a storage.
func codecOf(s Storage) (codec, error) {
	c, ok := codecs[s]
	if !ok {
		return nil, fmt.Errorf("unknown storage %q", s)
	}
	return c, nil
}

// decoded is a certificate and its key as a codec found them.
type decoded struct {
	cert    *x509.Certificate
	bundled []*x509.Certificate // what follows the certificate in its file
	key     crypto.Signer
	// keyFormat is the PEM block type of the key, kept on renewal.
	keyFormat string
}

// newFile is one file a codec writes.
type newFile struct {
	path     string // node path
	data     []byte // the contents, or a link's target
	mode     fs.FileMode
	uid, gid int
	// link makes the file a symbolic link to data, made under the name
	// staged (an entry of the same directory, "" for a temporary name)
	// and renamed over path. A link points at a file written before it
	// in the same transaction.
	link   bool
	staged string
}

// partError says which half of a pair a codec could not read: the
// certificate, or (key set) the key. Its message is its cause's.
type partError struct {
	key bool
	err error
}

func (e *partError) Error() string { return e.err.Error() }
func (e *partError) Unwrap() error { return e.err }

// decodePEM reads a certificate (with what is bundled after it) and a key
// out of PEM data; both may be the same data.
func decodePEM(certPEM, keyPEM []byte) (decoded, error) {
	b, err := pki.ParseBundle(certPEM)
	if err != nil {
		return decoded{}, &partError{err: err}
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return decoded{}, &partError{key: true, err: err}
	}
	return decoded{cert: b.Certs[0], bundled: b.Certs[1:], key: key, keyFormat: pki.KeyPEMFormat(keyPEM)}, nil
}

// owner is the owner of a file a renewal replaces: the current file's, or
// the user certagent runs as for a new one.
func (cur *current) owner(p string) (uid, gid int) {
	if f := cur.files[p]; f != nil {
		return f.UID, f.GID
	}
	return os.Geteuid(), os.Getegid()
}

// file is a new regular file at p with the owner of the current one.
func (cur *current) file(p string, data []byte, mode fs.FileMode) newFile {
	uid, gid := cur.owner(p)
	return newFile{path: p, data: data, mode: mode, uid: uid, gid: gid}
}

// pairCodec: a certificate file (0644) and a key file (0600).
type pairCodec struct{}

func (pairCodec) files(t Target) []string { return []string{t.CertPath, t.KeyPath} }

func (pairCodec) decode(t Target, data map[string][]byte) (decoded, error) {
	return decodePEM(data[t.CertPath], data[t.KeyPath])
}

func (pairCodec) encode(t Target, cur *current, certs []*x509.Certificate, key crypto.Signer) ([]newFile, error) {
	keyPEM, err := pki.EncodeKeyPEM(key, cur.keyFormat)
	if err != nil {
		return nil, err
	}
	return []newFile{cur.file(t.CertPath, pki.EncodeCertPEM(certs...), 0o644), cur.file(t.KeyPath, keyPEM, 0o600)}, nil
}

func (pairCodec) fromJournal(t Target, paths []string) Target {
	if len(paths) == 2 {
		t.CertPath, t.KeyPath = paths[0], paths[1]
	}
	return t
}

// combinedCodec: certificate and key in one PEM file (0600).
type combinedCodec struct{}

func (combinedCodec) files(t Target) []string { return []string{t.CertPath} }

func (combinedCodec) decode(t Target, data map[string][]byte) (decoded, error) {
	return decodePEM(data[t.CertPath], data[t.CertPath])
}

func (combinedCodec) encode(t Target, cur *current, certs []*x509.Certificate, key crypto.Signer) ([]newFile, error) {
	keyPEM, err := pki.EncodeKeyPEM(key, cur.keyFormat)
	if err != nil {
		return nil, err
	}
	return []newFile{cur.file(t.CertPath, append(pki.EncodeCertPEM(certs...), keyPEM...), 0o600)}, nil
}

func (combinedCodec) fromJournal(t Target, paths []string) Target { return firstPath(t, paths) }

// firstPath: the certificate is in the entry's one file.
func firstPath(t Target, paths []string) Target {
	if len(paths) > 0 {
		t.CertPath = paths[0]
	}
	return t
}
