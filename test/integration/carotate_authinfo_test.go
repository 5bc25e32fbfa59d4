package integration

import (
	"bytes"
	"context"
	"crypto/x509"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestCARotateFrontProxyAuthInfo: against the real kube-apiserver (whose
// controller merges what it publishes in
// kube-system/extension-apiserver-authentication with what is there), a
// rotation of the front-proxy CA does not move to reissue before
// requestheader-client-ca-file holds the new CA (written here by the
// test, as kube-apiserver restarted after trust does), and once every
// node is done with finish the old CA is gone from it, and stays gone
// through kube-apiserver's next sync; client-ca-file is untouched.
func TestCARotateFrontProxyAuthInfo(t *testing.T) {
	c := sharedCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, _ := caRotationSetup(t, ctx, c)
	fp, err := pkitest.NewCA("front-proxy-ca", time.Now().Add(-time.Hour), time.Now().Add(10*365*24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	pkiDir := filepath.Join(root, "etc/kubernetes/pki")
	os.WriteFile(filepath.Join(pkiDir, "front-proxy-ca.crt"), pkitest.CertPEM(fp.Cert), 0o644)
	os.WriteFile(filepath.Join(pkiDir, "front-proxy-ca.key"), pkitest.KeyPEM(fp.Key), 0o600)
	cms := c.Admin.CoreV1().ConfigMaps(carotate.Namespace)
	orig, err := cms.Get(ctx, carotate.AuthInfoName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clientCA := orig.Data["client-ca-file"]
	t.Cleanup(func() {
		editAuthInfo(t, c.Admin, func(d map[string]string) { clear(d); maps.Copy(d, orig.Data) })
	})
	// A kube-apiserver with --requestheader-client-ca-file published it.
	editAuthInfo(t, c.Admin, func(d map[string]string) {
		d["requestheader-client-ca-file"] = string(pkitest.CertPEM(fp.Cert))
		d["requestheader-allowed-names"] = `["front-proxy-client"]`
	})
	cmd := exec.Command(certagentBin, "ca", "rotate", "--root", root, "--ca", "front-proxy-ca", "--timeout", "60s")
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, "the command to wait for extension-apiserver-authentication", 60*time.Second, func() bool {
		return strings.Contains(out.String(), "waiting until kube-system/extension-apiserver-authentication holds the new CA")
	})
	rcm, err := cms.Get(ctx, carotate.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := carotate.Parse(rcm.Data)
	if err != nil || st.Phase != carotate.Trust {
		t.Fatalf("while extension-apiserver-authentication lacks the new CA: %+v %v\n%s", st, err, out.String())
	}
	b, _ := pki.ParseBundle(st.NewCA)
	next := b.Certs[0]
	// kube-apiserver, restarted in trust, merges [old, new] in.
	editAuthInfo(t, c.Admin, func(d map[string]string) {
		d["requestheader-client-ca-file"] = string(pkitest.CertPEM(fp.Cert)) + string(pkitest.CertPEM(next))
	})
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ca rotate: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "rotation "+st.ID+" of front-proxy-ca done") {
		t.Fatalf("not done:\n%s", out.String())
	}
	// kube-apiserver's controller syncs again (it reacts to no update
	// but syncs once a minute, and puts back a key it publishes): what it
	// writes keeps the old CA out.
	editAuthInfo(t, c.Admin, func(d map[string]string) { delete(d, "client-ca-file") })
	var got *corev1.ConfigMap
	waitFor(t, "kube-apiserver to publish client-ca-file again", 150*time.Second, func() bool {
		got, err = cms.Get(ctx, carotate.AuthInfoName, metav1.GetOptions{})
		return err == nil && got.Data["client-ca-file"] != ""
	})
	if cas := certsOf(t, got.Data["requestheader-client-ca-file"]); len(cas) != 1 || !cas[0].Equal(next) {
		t.Errorf("requestheader-client-ca-file holds %d CAs after the rotation, want the new one alone\n%s", len(cas), out.String())
	}
	if got.Data["client-ca-file"] != clientCA {
		t.Error("client-ca-file changed")
	}
	t.Logf("the command's output:\n%s", out.String())
}

// editAuthInfo changes extension-apiserver-authentication's data, read
// again when kube-apiserver wrote in between.
func editAuthInfo(t *testing.T, admin kubernetes.Interface, edit func(map[string]string)) {
	t.Helper()
	cms := admin.CoreV1().ConfigMaps(carotate.Namespace)
	for try := 0; ; try++ {
		cm, err := cms.Get(context.Background(), carotate.AuthInfoName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		edit(cm.Data)
		_, err = cms.Update(context.Background(), cm, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) && try < 10 {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
}

// certsOf parses a PEM bundle.
func certsOf(t *testing.T, data string) []*x509.Certificate {
	t.Helper()
	b, err := pki.ParseBundle(bytes.TrimSpace([]byte(data)))
	if err != nil {
		t.Fatal(err)
	}
	return b.Certs
}
