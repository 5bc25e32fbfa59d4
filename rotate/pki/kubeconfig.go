package pki

import (
	"bytes"
	"fmt"
	"path"
	"sort"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Credential is one user's client certificate in a kubeconfig: embedded
// data, or a node path to a file (relative paths are made absolute against
// the kubeconfig's directory, as kubectl does).
type Credential struct {
	User string
	// Current is true for the user of the current context.
	Current bool
	// CertData and KeyData are embedded PEM; CertPath and KeyPath are set
	// instead when the kubeconfig refers to files.
	CertData, KeyData []byte
	CertPath, KeyPath string
}

// Embedded reports whether the certificate is embedded in the kubeconfig.
func (c Credential) Embedded() bool { return len(c.CertData) > 0 }

// LooksLikeKubeconfig is a cheap test for files that may be kubeconfigs,
// used to pick the parser for a file of unknown kind.
func LooksLikeKubeconfig(data []byte) bool {
	return !bytes.HasPrefix(bytes.TrimSpace(data), pemBegin) &&
		(bytes.Contains(data, []byte("apiVersion")) || bytes.Contains(data, []byte("users:")) ||
			bytes.Contains(data, []byte("clusters:")))
}

// ClusterCA is the certificate-authority-data of one cluster in a
// kubeconfig: the PEM as embedded (it may hold several certificates).
type ClusterCA struct {
	Cluster string
	Data    []byte
}

// ParseKubeconfig loads a kubeconfig with client-go's clientcmd and returns
// every user that has a client certificate, the current context's user
// first. dir is the kubeconfig's node directory. A kubeconfig whose users
// authenticate otherwise (a bootstrap token) returns no credentials and no
// error.
func ParseKubeconfig(data []byte, dir string) ([]Credential, error) {
	creds, _, err := LoadKubeconfig(data, dir)
	return creds, err
}

// LoadKubeconfig is ParseKubeconfig that also returns the clusters'
// embedded CA data (certificate-authority-data), sorted by cluster name.
// Clusters that name a CA file instead, or none, are left out.
func LoadKubeconfig(data []byte, dir string) ([]Credential, []ClusterCA, error) {
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, nil, fmt.Errorf("kubeconfig: %w", err)
	}
	if len(cfg.AuthInfos) == 0 && len(cfg.Clusters) == 0 && len(cfg.Contexts) == 0 {
		return nil, nil, fmt.Errorf("kubeconfig: %w", ErrUnknownFmt)
	}
	current := ""
	if ctx, ok := cfg.Contexts[cfg.CurrentContext]; ok && ctx != nil {
		current = ctx.AuthInfo
	}
	users := make([]string, 0, len(cfg.AuthInfos))
	for name := range cfg.AuthInfos {
		users = append(users, name)
	}
	sort.Slice(users, func(i, j int) bool {
		if (users[i] == current) != (users[j] == current) {
			return users[i] == current
		}
		return users[i] < users[j]
	})
	var out []Credential
	for _, name := range users {
		ai := cfg.AuthInfos[name]
		if c, ok := credential(ai, dir); ok {
			c.User, c.Current = name, name == current
			out = append(out, c)
		}
	}
	var cas []ClusterCA
	for name, c := range cfg.Clusters {
		if c != nil && len(c.CertificateAuthorityData) > 0 {
			cas = append(cas, ClusterCA{Cluster: name, Data: c.CertificateAuthorityData})
		}
	}
	sort.Slice(cas, func(i, j int) bool { return cas[i].Cluster < cas[j].Cluster })
	return out, cas, nil
}

func credential(ai *clientcmdapi.AuthInfo, dir string) (Credential, bool) {
	if ai == nil || (len(ai.ClientCertificateData) == 0 && ai.ClientCertificate == "") {
		return Credential{}, false
	}
	c := Credential{CertData: ai.ClientCertificateData, KeyData: ai.ClientKeyData}
	if len(c.CertData) == 0 {
		c.CertPath = absUnder(dir, ai.ClientCertificate)
	}
	if len(c.KeyData) == 0 && ai.ClientKey != "" {
		c.KeyPath = absUnder(dir, ai.ClientKey)
	}
	return c, true
}

func absUnder(dir, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	return path.Join(dir, p)
}
