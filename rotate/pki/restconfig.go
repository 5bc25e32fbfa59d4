package pki

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ErrRefusedCredential is wrapped by RESTConfig's error for a kubeconfig
// user that authenticates in a way certagent does not allow: a credential
// plugin (exec or auth-provider), which would run a program or call out to
// an identity provider as root, or a username and password.
var ErrRefusedCredential = errors.New("credential refused")

// certOnly is the advice every refusal ends with.
const certOnly = "give the user a client certificate (client-certificate and client-key, or their -data forms)"

// RESTConfig builds the client configuration for the current context of the
// kubeconfig at a node path. It is the only way certagent turns a kubeconfig
// into a client, and it trusts nothing in the file to run or to reach the
// host:
//
//   - Only the allowed fields are copied into a fresh rest.Config: server,
//     tls-server-name, insecure-skip-tls-verify, proxy-url,
//     disable-compression, the CA, the client certificate and key, and a
//     bearer token. Impersonation, extensions and everything else are
//     ignored.
//   - A user with an exec plugin or an auth-provider is refused (wrapping
//     ErrRefusedCredential): certagent runs as root and never runs a program
//     named in a file it reads. So is a username/password (basic
//     authentication, which no supported API server accepts).
//   - Every file the kubeconfig names (certificate-authority,
//     client-certificate, client-key, tokenFile) is read through the root,
//     relative paths against the kubeconfig's directory, and passed as data:
//     client-go never opens a host path on certagent's behalf.
func RESTConfig(r *Root, kubeconfig string) (*rest.Config, error) {
	f, err := r.ReadFile(kubeconfig)
	if err != nil {
		return nil, err
	}
	rc, err := restConfig(f.Data, path.Dir(kubeconfig), func(p string) ([]byte, error) {
		rf, err := r.ReadFile(p)
		if err != nil {
			return nil, err
		}
		return rf.Data, nil
	})
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}

// restConfig is RESTConfig on a kubeconfig's bytes; dir is its node
// directory and read reads a node path.
func restConfig(data []byte, dir string, read func(string) ([]byte, error)) (*rest.Config, error) {
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, err
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil {
		return nil, fmt.Errorf("current context %q not found", cfg.CurrentContext)
	}
	cl := cfg.Clusters[ctx.Cluster]
	if cl == nil {
		return nil, fmt.Errorf("context %q: cluster %q not found", cfg.CurrentContext, ctx.Cluster)
	}
	ai := cfg.AuthInfos[ctx.AuthInfo]
	if ai == nil {
		return nil, fmt.Errorf("context %q: user %q not found", cfg.CurrentContext, ctx.AuthInfo)
	}
	if err := allowedCredential(ai); err != nil {
		return nil, fmt.Errorf("user %q: %w", ctx.AuthInfo, err)
	}
	rc := &rest.Config{}
	if err := copyCluster(rc, cl, ctx.Cluster, dir, read); err != nil {
		return nil, err
	}
	if err := copyUser(rc, ai, ctx.AuthInfo, dir, read); err != nil {
		return nil, err
	}
	return rc, nil
}

// allowedCredential refuses the ways of authenticating that would run
// something, or that no API server accepts.
func allowedCredential(ai *clientcmdapi.AuthInfo) error {
	var what []string
	if ai.Exec != nil {
		what = append(what, fmt.Sprintf("an exec plugin (command %q)", ai.Exec.Command))
	}
	if ai.AuthProvider != nil {
		what = append(what, fmt.Sprintf("an auth-provider (%q)", ai.AuthProvider.Name))
	}
	if len(what) > 0 {
		return fmt.Errorf("%w: it names %s, and certagent runs as root: it never runs a program or plugin named in a file it reads; %s",
			ErrRefusedCredential, strings.Join(what, " and "), certOnly)
	}
	if ai.Username != "" || ai.Password != "" {
		return fmt.Errorf("%w: username/password (basic authentication) is not accepted by any supported API server; %s", ErrRefusedCredential, certOnly)
	}
	return nil
}

func copyCluster(rc *rest.Config, cl *clientcmdapi.Cluster, name, dir string, read func(string) ([]byte, error)) error {
	u, err := url.Parse(cl.Server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("cluster %q: server %q: certagent talks to the API server over https only", name, cl.Server)
	}
	rc.Host = cl.Server
	rc.ServerName = cl.TLSServerName
	rc.Insecure = cl.InsecureSkipTLSVerify
	rc.DisableCompression = cl.DisableCompression
	if cl.ProxyURL != "" {
		p, err := url.Parse(cl.ProxyURL)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https" && p.Scheme != "socks5") {
			return fmt.Errorf("cluster %q: proxy-url %q: want an http, https or socks5 URL", name, cl.ProxyURL)
		}
		rc.Proxy = http.ProxyURL(p)
	}
	rc.CAData = cl.CertificateAuthorityData
	if len(rc.CAData) == 0 && cl.CertificateAuthority != "" {
		if rc.CAData, err = read(absUnder(dir, cl.CertificateAuthority)); err != nil {
			return fmt.Errorf("cluster %q: certificate-authority: %w", name, err)
		}
	}
	return nil
}

func copyUser(rc *rest.Config, ai *clientcmdapi.AuthInfo, name, dir string, read func(string) ([]byte, error)) error {
	var err error
	if c, ok := credential(ai, dir); ok {
		rc.CertData, rc.KeyData = c.CertData, c.KeyData
		if c.CertPath != "" {
			if rc.CertData, err = read(c.CertPath); err != nil {
				return fmt.Errorf("user %q: client-certificate: %w", name, err)
			}
		}
		if c.KeyPath != "" {
			if rc.KeyData, err = read(c.KeyPath); err != nil {
				return fmt.Errorf("user %q: client-key: %w", name, err)
			}
		}
		if len(rc.KeyData) == 0 {
			return fmt.Errorf("user %q: a client certificate without a client key", name)
		}
	}
	switch {
	case ai.Token != "":
		rc.BearerToken = ai.Token
	case ai.TokenFile != "":
		tok, err := read(absUnder(dir, ai.TokenFile))
		if err != nil {
			return fmt.Errorf("user %q: tokenFile: %w", name, err)
		}
		rc.BearerToken = strings.TrimSpace(string(tok))
	}
	if len(rc.CertData) == 0 && rc.BearerToken == "" {
		return fmt.Errorf("user %q: no client certificate or token; %s", name, certOnly)
	}
	return nil
}
