package carotate

import (
	"context"
	"crypto/x509"

	corev1 "k8s.io/api/core/v1"

	"github.com/certagent/certagent/rotate/pki"
)

// AuthInfoName is the ConfigMap kube-system/extension-apiserver-authentication:
// kube-apiserver publishes there its --client-ca-file (key client-ca-file)
// and --requestheader-client-ca-file (requestheader-client-ca-file), and
// aggregated API servers (metrics-server, ...) verify client
// certificates, and kube-apiserver's front proxy certificate, with them,
// following the ConfigMap as it changes. kube-apiserver merges what it
// publishes with what the ConfigMap holds: it adds a CA as soon as its
// file has it, and removes one only once it has expired.
const AuthInfoName = "extension-apiserver-authentication"

// authInfoKey is the key of AuthInfoName that holds the CA named ca
// ("" when none does: the etcd CA).
func authInfoKey(ca string) string {
	switch ca {
	case "ca":
		return "client-ca-file"
	case "front-proxy-ca":
		return "requestheader-client-ca-file"
	}
	return ""
}

// waitAuthInfo waits, once every node is done with trust in a rotation of
// the front-proxy CA, until extension-apiserver-authentication's
// requestheader-client-ca-file holds the new CA: reissue gives
// kube-apiserver a front proxy certificate from the new CA, and an
// aggregated API server that trusts only the old one would refuse every
// request kube-apiserver proxies to it. A cluster without that key (no
// --requestheader-client-ca-file) is not waited for. The cluster CA's
// copy (client-ca-file) is not waited for: kube-apiserver adds it once
// it has reloaded (or restarted with) the trust bundle, and it only matters to clients that present a
// certificate to an aggregated API server themselves.
func (r *Rotator) waitAuthInfo(ctx context.Context, c *Cluster) error {
	if c.CA != "front-proxy-ca" {
		return nil
	}
	_, err := r.waitPublished(ctx, c, published{name: AuthInfoName, key: authInfoKey(c.CA), keyOptional: true,
		absent:  "no kube-apiserver with --requestheader-client-ca-file publishes it",
		waiting: "kube-apiserver publishes its --requestheader-client-ca-file there for aggregated API servers, once it has the new CA",
		missing: "is kube-apiserver running, with --requestheader-client-ca-file the CA file certagent edited, and restarted since?"})
	return err
}

// dropAuthInfo removes the old CA from extension-apiserver-authentication
// once every node is done with finish (no kube-apiserver's file holds it
// any more, so none adds it back); kube-apiserver would keep it there
// until it expires, and aggregated API servers would trust it. It is left
// as it is while the new CA is not there too (removing the old one would
// leave them trusting neither), or when it is absent.
func (r *Rotator) dropAuthInfo(ctx context.Context, c *Cluster) error {
	key := authInfoKey(c.CA)
	if key == "" {
		return nil
	}
	oldCA, newCA, err := c.certs()
	if err != nil {
		return err
	}
	changed, err := r.editConfigMap(ctx, Namespace, AuthInfoName, func(cm *corev1.ConfigMap) (bool, error) {
		if v := cm.Data[key]; v != "" {
			if _, err := pki.ParseBundle([]byte(v)); err != nil {
				r.printf("warning: %s/%s's %s cannot be read (%v): left as it is; check what it trusts", Namespace, AuthInfoName, key, err)
				return false, nil
			}
		}
		kept, found, ok := without([]byte(cm.Data[key]), oldCA, newCA)
		switch {
		case !found:
			return false, nil
		case !ok:
			r.printf("warning: %s/%s's %s trusts the old CA and not the new one: left as it is; check that kube-apiserver runs with the CA file certagent edited",
				Namespace, AuthInfoName, key)
			return false, nil
		}
		cm.Data[key] = string(kept)
		return true, nil
	})
	if changed {
		r.printf("%s/%s: the old CA removed from %s (aggregated API servers read it there)", Namespace, AuthInfoName, key)
	}
	return err
}

// without returns the PEM bundle data without old; found says whether
// old was in it, ok whether next is (and data could be read).
func without(data []byte, old, next *x509.Certificate) (kept []byte, found, ok bool) {
	b, err := pki.ParseBundle(data)
	if err != nil {
		return nil, false, false
	}
	var certs []*x509.Certificate
	for _, c := range b.Certs {
		switch {
		case c.Equal(old):
			found = true
		case c.Equal(next):
			ok = true
			certs = append(certs, c)
		default:
			certs = append(certs, c)
		}
	}
	return pki.EncodeCertPEM(certs...), found, ok
}
