package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestKubeAPIServerReloadsTrust: the real kube-apiserver, run with
// kubeadm's flags (client CA and request header CA), picks up its client
// CA bundle by itself when a CA rotation changes it. certagent's
// ReloadTrust sees that in the handshake and does not restart it: after
// trust (old + new CA in ca.crt) a client certificate of the new CA is
// accepted, after finish (the new CA alone) one of the old CA is refused,
// and the stand-in kubelet saw no restart.
func TestKubeAPIServerReloadsTrust(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// What certagent reads of kubeadm's manifest: the client CA flags.
	root, h, tl := startOneControlPlane(t, ctx, "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n"+
		"    - --client-ca-file=/etc/kubernetes/pki/ca.crt\n    - --requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt\n")
	addr := h.Nodes[0].APIAddr()

	rfs, _ := pki.NewRoot(root)
	old, err := rotate.LoadLocalCA(rfs, "ca", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	nextCert, nextKey, err := ca.NewCA(old.Cert, old.Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	oldCA, nextCA := &pkitest.CA{Cert: old.Cert, Key: old.Key}, &pkitest.CA{Cert: nextCert, Key: nextKey}
	cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n" +
		"restart: {fileCheckFrequency: 1s, timeout: 60s, reloadWait: 60s, endpoints: {kube-apiserver: \"" + addr + "\"}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	log, hook := test.NewNullLogger()
	r := &restart.Restarter{Root: rfs, Clock: clock.RealClock{}, Log: log}
	reload := func(bundle ...*x509.Certificate) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(root, "etc/kubernetes/pki/ca.crt"), pkitest.CertPEM(bundle...), 0o644); err != nil {
			t.Fatal(err)
		}
		hook.Reset()
		if err := r.ReloadTrust(ctx, cfg, []string{"kube-apiserver"}, nil)["kube-apiserver"]; err != nil {
			t.Fatalf("ReloadTrust: %v", err)
		}
		if e := hook.LastEntry(); e == nil || !strings.Contains(e.Message, "not restarted") {
			var msgs []string
			for _, e := range hook.AllEntries() {
				msgs = append(msgs, e.Message+" "+fmt.Sprint(e.Data))
			}
			t.Errorf("ReloadTrust restarted the kube-apiserver:\n%s", strings.Join(msgs, "\n"))
		}
	}
	status := func(by *pkitest.CA) int {
		t.Helper()
		c, k, err := by.Issue(pkitest.Spec{CommonName: "reload-trust", Organization: []string{"system:masters"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(pkitest.CertPEM(c), pkitest.KeyPEM(k))
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}}}}
		resp, err := hc.Get("https://" + addr + "/api/v1/namespaces")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(nextCA); got != http.StatusUnauthorized {
		t.Fatalf("before trust, the new CA's client: HTTP %d, want 401", got)
	}
	reload(old.Cert, nextCert) // trust
	if got := status(nextCA); got != http.StatusOK {
		t.Errorf("after trust, the new CA's client: HTTP %d, want 200", got)
	}
	if got := status(oldCA); got != http.StatusOK {
		t.Errorf("after trust, the old CA's client: HTTP %d, want 200", got)
	}
	reload(nextCert) // finish
	if got := status(oldCA); got != http.StatusUnauthorized {
		t.Errorf("after finish, the old CA's client: HTTP %d, want 401", got)
	}
	if got := status(nextCA); got != http.StatusOK {
		t.Errorf("after finish, the new CA's client: HTTP %d, want 200", got)
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.restarts) > 0 || len(tl.crashes) > 0 {
		t.Errorf("the kube-apiserver restarted: %v %v", tl.restarts, tl.crashes)
	}
}
