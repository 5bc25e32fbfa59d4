package rotate

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"reflect"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/rotate/pki"
)

// Storage says how a certificate and its key are kept on disk.
type Storage string

// Storages.
const (
	StoragePair       Storage = "pair"       // a certificate file and a key file
	StorageCombined   Storage = "combined"   // certificate and key in one PEM file
	StorageKubeconfig Storage = "kubeconfig" // client-certificate-data and client-key-data of a kubeconfig user
)

// Target is one certificate to renew and where it lives. Paths are node
// paths (below the Root).
type Target struct {
	Name    string
	Storage Storage
	// CertPath is the certificate file, the combined file or the kubeconfig.
	CertPath string
	KeyPath  string // StoragePair only
	User     string // StorageKubeconfig only
	// CA re-signs the certificate (Renew). For certificates issued
	// elsewhere (Install), CA is nil and Roots, when set, is what the new
	// certificate must chain to.
	CA    *LocalCA
	Roots *x509.CertPool
	// SelfSigned marks a pair whose certificate file bundles the
	// self-signed CA that issued it (the kubelet's kubelet.crt). Renew
	// makes a new pair the kubelet's way (see prepareSelfSigned), and the
	// transaction checks it in a narrow mode of its own: the new leaf
	// chains to the CA bundled with it in the new file and keeps the old
	// DNS and IP names; the subject (a timestamp) and the CA are new.
	SelfSigned bool
}

// Files lists the files a renewal of t replaces.
func (t Target) Files() []string {
	if t.Storage == StoragePair {
		return []string{t.CertPath, t.KeyPath}
	}
	return []string{t.CertPath}
}

// current is a target's material as found on disk.
type current struct {
	cert  *x509.Certificate
	key   crypto.Signer
	files map[string]*pki.File // by node path
	kc    *clientcmdapi.Config // StorageKubeconfig only
	// keyFormat is the PEM block type of the current key, kept on renewal.
	keyFormat string
}

// load reads the current certificate and key of t.
func load(root *pki.Root, t Target) (*current, error) {
	cur := &current{files: map[string]*pki.File{}}
	for _, p := range t.Files() {
		f, err := root.ReadFile(p)
		if err != nil {
			return nil, err
		}
		cur.files[p] = f
	}
	var certPEM, keyPEM []byte
	switch t.Storage {
	case StoragePair:
		certPEM, keyPEM = cur.files[t.CertPath].Data, cur.files[t.KeyPath].Data
	case StorageCombined:
		certPEM, keyPEM = cur.files[t.CertPath].Data, cur.files[t.CertPath].Data
	case StorageKubeconfig:
		kc, err := clientcmd.Load(cur.files[t.CertPath].Data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.CertPath, err)
		}
		ai := kc.AuthInfos[t.User]
		if ai == nil || len(ai.ClientCertificateData) == 0 || len(ai.ClientKeyData) == 0 {
			return nil, fmt.Errorf("%s: user %q has no embedded client certificate and key", t.CertPath, t.User)
		}
		cur.kc = kc
		certPEM, keyPEM = ai.ClientCertificateData, ai.ClientKeyData
	default:
		return nil, fmt.Errorf("unknown storage %q", t.Storage)
	}
	b, err := pki.ParseBundle(certPEM)
	if err != nil {
		return nil, fmt.Errorf("current certificate %s: %w", t.CertPath, err)
	}
	cur.cert = b.Certs[0]
	cur.keyFormat = pki.KeyPEMFormat(keyPEM)
	if cur.key, err = pki.ParseKeyPEM(keyPEM); err != nil {
		return nil, fmt.Errorf("current key: %w", err)
	}
	return cur, nil
}

// render produces the new content of every file of t.
func render(t Target, cur *current, cert *x509.Certificate, key crypto.Signer) (map[string][]byte, error) {
	certPEM := pki.EncodeCertPEM(cert)
	keyPEM, err := pki.EncodeKeyPEM(key, cur.keyFormat)
	if err != nil {
		return nil, err
	}
	switch t.Storage {
	case StoragePair:
		return map[string][]byte{t.CertPath: certPEM, t.KeyPath: keyPEM}, nil
	case StorageCombined:
		return map[string][]byte{t.CertPath: append(certPEM, keyPEM...)}, nil
	}
	data, err := rewriteKubeconfig(cur.files[t.CertPath].Data, cur.kc, t.User, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.CertPath, err)
	}
	return map[string][]byte{t.CertPath: data}, nil
}

// rewriteKubeconfig swaps one user's embedded certificate and key. It
// replaces the two base64 values in the text, so that everything else in
// the file (order, comments, other users, extensions) stays byte for byte;
// only when the values cannot be found verbatim does it re-serialise the
// whole file with clientcmd.
func rewriteKubeconfig(data []byte, old *clientcmdapi.Config, user string, certPEM, keyPEM []byte) ([]byte, error) {
	ai := old.AuthInfos[user]
	oldCert := []byte(base64.StdEncoding.EncodeToString(ai.ClientCertificateData))
	oldKey := []byte(base64.StdEncoding.EncodeToString(ai.ClientKeyData))
	var out []byte
	if bytes.Count(data, oldCert) == 1 && bytes.Count(data, oldKey) == 1 {
		out = bytes.Replace(data, oldCert, []byte(base64.StdEncoding.EncodeToString(certPEM)), 1)
		out = bytes.Replace(out, oldKey, []byte(base64.StdEncoding.EncodeToString(keyPEM)), 1)
	} else {
		cp := old.DeepCopy()
		cp.AuthInfos[user].ClientCertificateData, cp.AuthInfos[user].ClientKeyData = certPEM, keyPEM
		var err error
		if out, err = clientcmd.Write(*cp); err != nil {
			return nil, err
		}
	}
	// Whatever way it was written, the result must load and differ from
	// the old file in exactly that user's certificate and key.
	got, err := clientcmd.Load(out)
	if err != nil {
		return nil, fmt.Errorf("rewritten kubeconfig does not load: %w", err)
	}
	want := old.DeepCopy()
	want.AuthInfos[user].ClientCertificateData, want.AuthInfos[user].ClientKeyData = certPEM, keyPEM
	if !reflect.DeepEqual(got, want) {
		return nil, fmt.Errorf("rewritten kubeconfig differs in more than user %q's certificate", user)
	}
	return out, nil
}

// verify checks a certificate and key as the transaction stages and reads
// them back: the key is the certificate's, the certificate chains to the
// CA, and its subject, names and usages are those of the old one. bundled
// is what follows the certificate in its file (a self-signed target's CA).
func verify(t Target, old, cert *x509.Certificate, bundled []*x509.Certificate, key crypto.Signer, now time.Time) error {
	if !pki.KeyMatches(cert, key) {
		return fmt.Errorf("%s: private key does not match the certificate", t.Name)
	}
	if t.SelfSigned {
		return verifySelfSigned(t, old, cert, bundled, now)
	}
	if t.CA == nil {
		if t.Roots == nil {
			return nil
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: t.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: now}); err != nil {
			return fmt.Errorf("%s: chain: %w", t.Name, err)
		}
		return nil
	}
	if !pki.SignedBy(cert, t.CA.Cert) {
		return fmt.Errorf("%s: does not chain to CA %s", t.Name, t.CA.Name)
	}
	pool := x509.NewCertPool()
	pool.AddCert(t.CA.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: now}); err != nil {
		return fmt.Errorf("%s: chain to CA %s: %w", t.Name, t.CA.Name, err)
	}
	return sameIdentity(old, cert)
}

// sameIdentity compares what a renewal must keep.
func sameIdentity(old, cert *x509.Certificate) error {
	switch {
	case !bytes.Equal(old.RawSubject, cert.RawSubject):
		return fmt.Errorf("subject changed: %s -> %s", old.Subject, cert.Subject)
	case !bytes.Equal(sanBytes(old), sanBytes(cert)):
		return fmt.Errorf("subject alternative names changed")
	case old.KeyUsage != cert.KeyUsage:
		return fmt.Errorf("key usage changed: %v -> %v", old.KeyUsage, cert.KeyUsage)
	case !reflect.DeepEqual(old.ExtKeyUsage, cert.ExtKeyUsage) || !reflect.DeepEqual(old.UnknownExtKeyUsage, cert.UnknownExtKeyUsage):
		return fmt.Errorf("extended key usage changed: %v -> %v", old.ExtKeyUsage, cert.ExtKeyUsage)
	}
	return nil
}

func sanBytes(c *x509.Certificate) []byte {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidSAN) {
			return e.Value
		}
	}
	return nil
}

// parseRendered reads back a staged or final file set of t: the
// certificate, the certificates bundled after it, and the key.
func parseRendered(t Target, files map[string][]byte) (*x509.Certificate, []*x509.Certificate, crypto.Signer, error) {
	var certPEM, keyPEM []byte
	switch t.Storage {
	case StoragePair:
		certPEM, keyPEM = files[t.CertPath], files[t.KeyPath]
	case StorageCombined:
		certPEM, keyPEM = files[t.CertPath], files[t.CertPath]
	case StorageKubeconfig:
		kc, err := clientcmd.Load(files[t.CertPath])
		if err != nil {
			return nil, nil, nil, err
		}
		ai := kc.AuthInfos[t.User]
		if ai == nil {
			return nil, nil, nil, fmt.Errorf("user %q missing", t.User)
		}
		certPEM, keyPEM = ai.ClientCertificateData, ai.ClientKeyData
	}
	b, err := pki.ParseBundle(certPEM)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, nil, err
	}
	return b.Certs[0], b.Certs[1:], key, nil
}
