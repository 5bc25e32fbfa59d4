package rotate

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"reflect"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/rotate/pki"
)

// kubeconfigCodec: client-certificate-data and client-key-data of one
// user of a kubeconfig (0600).
type kubeconfigCodec struct{}

func (kubeconfigCodec) files(t Target) []string { return []string{t.CertPath} }

func (kubeconfigCodec) decode(t Target, data map[string][]byte) (decoded, error) {
	_, ai, err := loadUser(t, data[t.CertPath])
	if err != nil {
		return decoded{}, err
	}
	return decodePEM(ai.ClientCertificateData, ai.ClientKeyData)
}

func (kubeconfigCodec) encode(t Target, cur *current, certs []*x509.Certificate, key crypto.Signer) ([]newFile, error) {
	keyPEM, err := pki.EncodeKeyPEM(key, cur.keyFormat)
	if err != nil {
		return nil, err
	}
	old := cur.files[t.CertPath].Data
	kc, _, err := loadUser(t, old)
	if err != nil {
		return nil, err
	}
	data, err := rewriteKubeconfig(old, kc, t.User, pki.EncodeCertPEM(certs...), keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", t.CertPath, err)
	}
	return []newFile{cur.file(t.CertPath, data, 0o600)}, nil
}

func (kubeconfigCodec) fromJournal(t Target, paths []string) Target { return firstPath(t, paths) }

// loadUser loads a kubeconfig and finds t's user, with its embedded
// certificate and key.
func loadUser(t Target, data []byte) (*clientcmdapi.Config, *clientcmdapi.AuthInfo, error) {
	kc, err := clientcmd.Load(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", t.CertPath, err)
	}
	ai := kc.AuthInfos[t.User]
	if ai == nil || len(ai.ClientCertificateData) == 0 || len(ai.ClientKeyData) == 0 {
		return nil, nil, fmt.Errorf("%s: user %q has no embedded client certificate and key", t.CertPath, t.User)
	}
	return kc, ai, nil
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
