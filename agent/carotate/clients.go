package carotate

import (
	"context"
	"crypto/x509"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cafiles "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
)

// The cluster CA's copies in the API that no node file holds: kubeadm
// join reads the CA from cluster-info's kubeconfig; pods' in-cluster
// config reads kube-root-ca.crt (the controller manager publishes it in
// every namespace from its --root-ca-file).
const (
	ClusterInfoNamespace = "kube-public"
	ClusterInfoName      = "cluster-info"
	RootCAName           = "kube-root-ca.crt"
)

// conflictTries bounds how often an update of cluster-info that lost a
// race (someone else wrote it in between) is read and made again.
const conflictTries = 5

// syncClusterInfo keeps cluster-info's kubeconfig in step with phase p of
// a rotation of the cluster CA: from trust on, every cluster in it that
// trusts the old CA trusts the new one too; from finish on, the new one
// instead. It changes nothing when the ConfigMap is absent or holds no
// cluster that trusts the old CA. Each write is conditional on the
// resourceVersion read (a lost race reads it again).
func (r *Rotator) syncClusterInfo(ctx context.Context, c *Cluster, p Phase) error {
	if c.CA != "ca" || p.Index() < Trust.Index() || p == Done {
		return nil
	}
	oldCA, newCA, err := c.certs()
	if err != nil {
		return err
	}
	changed, err := r.editConfigMap(ctx, ClusterInfoNamespace, ClusterInfoName, func(cm *corev1.ConfigMap) (bool, error) {
		data, changed, err := cafiles.KubeconfigTrust([]byte(cm.Data["kubeconfig"]), oldCA, newCA, p != Finish)
		if err != nil {
			r.printf("warning: %s/%s is left as it is: its kubeconfig: %v", ClusterInfoNamespace, ClusterInfoName, err)
			return false, nil
		}
		if changed {
			cm.Data["kubeconfig"] = string(data)
		}
		return changed, nil
	})
	if err != nil || !changed {
		return err
	}
	what := "the new CA added next to the old one"
	if p == Finish {
		what = "the old CA replaced by the new one"
	}
	r.printf("%s/%s: %s (kubeadm join reads its CA there)", ClusterInfoNamespace, ClusterInfoName, what)
	return nil
}

// editConfigMap reads ConfigMap ns/name, lets edit change it (true when it
// did), and writes it conditionally on the resourceVersion read: a write
// in between (or one of this command's whose answer was lost) is a
// conflict, and the ConfigMap is read and edited again. An absent
// ConfigMap is no change and no error.
func (r *Rotator) editConfigMap(ctx context.Context, ns, name string, edit func(*corev1.ConfigMap) (bool, error)) (bool, error) {
	for try := 1; ; try++ {
		var cm *corev1.ConfigMap
		err := r.retry(ctx, func() (err error) {
			cm, err = r.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
			return err
		})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("read %s/%s: %w", ns, name, err)
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		if changed, err := edit(cm); err != nil || !changed {
			return false, err
		}
		err = r.retry(ctx, func() error {
			_, err := r.Client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
			return err
		})
		if apierrors.IsConflict(err) && try < conflictTries {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("update %s/%s: %w", ns, name, err)
		}
		return true, nil
	}
}

// waitRootCA waits, once every node is done with trust in a rotation of
// the cluster CA, until kube-system/kube-root-ca.crt holds the new CA
// (the controller manager publishes it after its trust restart), then
// tells the operator to restart the workloads that use in-cluster
// config. An absent ConfigMap (no controller publishes it) is not waited
// for.
func (r *Rotator) waitRootCA(ctx context.Context, c *Cluster) error {
	if c.CA != "ca" {
		return nil
	}
	found, err := r.waitPublished(ctx, c, published{name: RootCAName, key: "ca.crt", absent: "no controller publishes it",
		waiting: "the controller manager publishes its --root-ca-file, once restarted after trust",
		missing: "is kube-controller-manager running, with --root-ca-file the CA file certagent edited, and restarted since?"})
	if found && err == nil {
		r.notice()
	}
	return err
}

// published is a copy of a CA bundle that a controller publishes in a
// ConfigMap of kube-system, and what the wait for it says.
type published struct {
	name, key string
	// keyOptional: a ConfigMap without the key does not publish this
	// CA, and is not waited for.
	keyOptional bool
	absent      string // why the ConfigMap may be absent
	waiting     string // who publishes it, and when
	missing     string // what to check when the wait runs out
}

// waitPublished waits, once every node is done with trust, until the key
// of the ConfigMap holds the new CA; false (and no error) when the
// ConfigMap (or an optional key) is absent, which is not waited for. It
// asks every retryAfter, for at most the wait's bound.
func (r *Rotator) waitPublished(ctx context.Context, c *Cluster, pub published) (bool, error) {
	_, newCA, err := c.certs()
	if err != nil {
		return false, err
	}
	timer := r.Clock.NewTimer(r.timeout())
	defer timer.Stop()
	said, failing := false, error(nil)
	for {
		cm, err := r.Client.CoreV1().ConfigMaps(Namespace).Get(ctx, pub.name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			r.printf("note: there is no %s/%s (%s): not waited for", Namespace, pub.name, pub.absent)
			return false, nil
		case err == nil && pub.keyOptional && cm.Data[pub.key] == "":
			r.printf("note: %s/%s has no %s (%s): not waited for", Namespace, pub.name, pub.key, pub.absent)
			return false, nil
		case err == nil && holdsPEM([]byte(cm.Data[pub.key]), newCA):
			return true, nil
		case err == nil:
			failing = nil
			if !said {
				said = true
				r.printf("waiting until %s/%s holds the new CA (%s)", Namespace, pub.name, pub.waiting)
			}
		case !transient(ctx, err):
			return false, fmt.Errorf("read %s/%s: %w", Namespace, pub.name, err)
		default:
			if failing == nil {
				r.printf("read %s/%s: %v; trying again until the wait ends", Namespace, pub.name, err)
			}
			failing = err
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-timer.C():
			return false, &TimeoutError{Phase: Trust, After: r.timeout(), API: failing,
				Waiting: fmt.Sprintf("%s/%s does not hold the new CA: %s", Namespace, pub.name, pub.missing)}
		case <-r.Clock.After(retryAfter):
		}
		if err != nil {
			r.reconnect()
		}
	}
}

// notice says what the operator must do before reissue.
func (r *Rotator) notice() {
	r.printf("%s/%s holds the new CA. RESTART THE WORKLOADS THAT USE IN-CLUSTER CONFIG (e.g. kubectl rollout restart) BEFORE REISSUE: "+
		"a process reads its service account's ca.crt once at start, and once reissue gives kube-apiserver a certificate from the new CA, "+
		"one that trusts only the old CA cannot reach the API", Namespace, RootCAName)
	if r.Until != Trust {
		r.printf("warning: going on to reissue now; `certagent ca rotate --until trust` stops here for those restarts (see README)")
	}
}

// certs returns the rotation's old and new CA (Store.Get validated both).
func (c *Cluster) certs() (oldCA, newCA *x509.Certificate, err error) {
	if oldCA, err = oneCert("oldCA", c.OldCA); err != nil {
		return nil, nil, err
	}
	newCA, err = oneCert("newCA", c.NewCA)
	return oldCA, newCA, err
}

// holdsPEM reports whether the PEM certificates in data include c.
func holdsPEM(data []byte, c *x509.Certificate) bool {
	b, err := pki.ParseBundle(data)
	if err != nil {
		return false
	}
	for _, x := range b.Certs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}
