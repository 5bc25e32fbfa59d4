package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/csrrenew"
	"github.com/certagent/certagent/agent/kubeclient"
	"github.com/certagent/certagent/agent/report"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// canary is a host program that leaves a file behind when it runs: the
// proof that a kubeconfig made certagent execute something.
type canary struct {
	script, file string
}

func newCanary(t *testing.T) canary {
	t.Helper()
	dir := t.TempDir() // outside every --root: the host's own file
	c := canary{script: filepath.Join(dir, "plugin.sh"), file: filepath.Join(dir, "canary")}
	body := fmt.Sprintf("#!/bin/sh\necho ran >> %q\n"+
		`echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"stolen"}}'`+"\n", c.file)
	if err := os.WriteFile(c.script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return c
}

// ran reports whether the canary program ran.
func (c canary) ran() bool {
	_, err := os.Stat(c.file)
	return err == nil
}

// hostileNode is a root whose kubelet.conf is written by the test, a CA
// and a client key pair, and a host directory outside the root holding
// files a kubeconfig must never reach.
type hostileNode struct {
	root *pki.Root
	// dir is the root; host holds secret.pem (a client key pair) and
	// ca.crt, outside the root.
	dir, host      string
	caB64, pairB64 string // the CA and the key pair, for -data fields
	canary         canary
	kubeconfig     string // node path
}

func newHostileNode(t *testing.T) *hostileNode {
	t.Helper()
	ca, err := pkitest.NewCA("kubernetes", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(pkitest.Spec{CommonName: "system:node:node1", Organization: []string{"system:nodes"}})
	if err != nil {
		t.Fatal(err)
	}
	n := &hostileNode{dir: t.TempDir(), host: t.TempDir(), canary: newCanary(t), kubeconfig: "/etc/kubernetes/kubelet.conf"}
	caPEM, pairPEM := pkitest.CertPEM(ca.Cert), append(pkitest.CertPEM(cert), pkitest.KeyPEM(key)...)
	n.caB64, n.pairB64 = base64.StdEncoding.EncodeToString(caPEM), base64.StdEncoding.EncodeToString(pairPEM)
	os.WriteFile(filepath.Join(n.host, "secret.pem"), pairPEM, 0o600)
	os.WriteFile(filepath.Join(n.host, "ca.crt"), caPEM, 0o644)
	os.MkdirAll(filepath.Join(n.dir, "etc/kubernetes"), 0o755)
	if n.root, err = pki.NewRoot(n.dir); err != nil {
		t.Fatal(err)
	}
	return n
}

// write puts a kubeconfig with one cluster and the given user in place.
func (n *hostileNode) write(t *testing.T, cluster, user string) {
	t.Helper()
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: k
  cluster:
    server: https://127.0.0.1:1
%s
users:
- name: node
  user:
%s
contexts:
- name: c
  context: {cluster: k, user: node}
current-context: c
`, indent(cluster, 4), indent(user, 4))
	if err := os.WriteFile(filepath.Join(n.dir, "etc/kubernetes/kubelet.conf"), []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
}

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = pad + lines[i]
	}
	return strings.Join(lines, "\n")
}

// credCase is a kubelet.conf cluster and user, with placeholders that
// hostileNode.expand fills in, and what the refusal must say.
type credCase struct {
	name, cluster, user, want string
	// refused: the error wraps pki.ErrRefusedCredential.
	refused bool
	// setup plants files in the root before the kubeconfig is read.
	setup func(t *testing.T, n *hostileNode)
}

const (
	embeddedCA  = "certificate-authority-data: {{CA}}"
	embeddedKey = "client-certificate-data: {{PAIR}}\nclient-key-data: {{PAIR}}"
	execUser    = "exec:\n  apiVersion: client.authentication.k8s.io/v1\n  command: {{PLUGIN}}\n  interactiveMode: Never"
	oidcUser    = "auth-provider:\n  name: oidc\n  config: {idp-issuer-url: 'https://127.0.0.1:1', client-id: x, id-token: x, refresh-token: x}"
)

// hostileCredentials must not steer certagent: into running a program, or
// into reading a host file outside --root. Each must fail with want in the
// error, before any request, and the canary must never run.
var hostileCredentials = []credCase{
	{name: "exec plugin", cluster: embeddedCA, user: execUser, want: "exec plugin", refused: true},
	{name: "auth-provider", cluster: embeddedCA, user: oidcUser, want: "auth-provider", refused: true},
	{name: "exec and auth-provider", cluster: embeddedCA, user: execUser + "\n" + oidcUser, want: "exec plugin", refused: true},
	{name: "exec beside a client certificate", cluster: embeddedCA, user: embeddedKey + "\n" + execUser, want: "exec plugin", refused: true},
	{name: "basic auth", cluster: embeddedCA, user: "username: admin\npassword: secret", want: "username/password", refused: true},
	{name: "client certificate through a symlink out of the root", cluster: embeddedCA,
		user:  "client-certificate: /etc/kubernetes/node.pem\nclient-key: /etc/kubernetes/node.pem",
		setup: linkOut("etc/kubernetes/node.pem", "secret.pem"), want: "dangling symlink"},
	{name: "CA through a symlink out of the root", cluster: "certificate-authority: /etc/kubernetes/ca.crt", user: embeddedKey,
		setup: linkOut("etc/kubernetes/ca.crt", "ca.crt"), want: "dangling symlink"},
	{name: "token file through a symlink out of the root", cluster: embeddedCA, user: "tokenFile: /etc/kubernetes/token",
		setup: linkOut("etc/kubernetes/token", "secret.pem"), want: "dangling symlink"},
	{name: "CA is a FIFO", cluster: "certificate-authority: /etc/kubernetes/ca.crt", user: embeddedKey,
		setup: func(t *testing.T, n *hostileNode) {
			if err := syscall.Mkfifo(filepath.Join(n.dir, "etc/kubernetes/ca.crt"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, want: "not a regular file"},
}

// linkOut plants a symlink in the root to a file of the host directory,
// by its absolute host path, which does not exist inside the root.
func linkOut(nodePath, hostFile string) func(t *testing.T, n *hostileNode) {
	return func(t *testing.T, n *hostileNode) {
		if err := os.Symlink(filepath.Join(n.host, hostFile), filepath.Join(n.dir, nodePath)); err != nil {
			t.Fatal(err)
		}
	}
}

func (n *hostileNode) expand(s string) string {
	return strings.NewReplacer("{{CA}}", n.caB64, "{{PAIR}}", n.pairB64, "{{PLUGIN}}", n.canary.script).Replace(s)
}

// TestKubeClientRefusesHostileCredentials: every client certagent builds
// goes through kubeClient; a hostile kubelet.conf is refused with a reason,
// and nothing it names is run or read from outside the root. A client the
// old code built anyway is used once, to show what it would have done.
func TestKubeClientRefusesHostileCredentials(t *testing.T) {
	for _, tc := range hostileCredentials {
		t.Run(tc.name, func(t *testing.T) {
			n := newHostileNode(t)
			if tc.setup != nil {
				tc.setup(t, n)
			}
			n.write(t, n.expand(tc.cluster), n.expand(tc.user))
			done := make(chan error, 1)
			go func() {
				c, _, err := kubeclient.New(n.root, n.kubeconfig, nil)
				if err == nil {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, rerr := c.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
					cancel()
					err = fmt.Errorf("client built and used (request: %v)", rerr)
				}
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("kubeClient blocked (opened a FIFO?)")
			}
			if n.canary.ran() {
				t.Errorf("the kubeconfig's exec command ran")
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one that says %q", err, tc.want)
			}
			if tc.refused != errors.Is(err, pki.ErrRefusedCredential) {
				t.Errorf("errors.Is(%v, ErrRefusedCredential) = %v", err, !tc.refused)
			}
		})
	}
}

// TestAgentNeverRunsKubeconfigExec runs the agent loop on a worker whose
// kubelet client certificate is due and whose kubelet.conf names an exec
// plugin: the CSR renewal and the Node reporter both build clients from it.
// The renewal fails with the reason in status and the journal, and the
// plugin never runs.
func TestAgentNeverRunsKubeconfigExec(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	l := pkitest.Layout{Now: now, LeafLifetime: 10 * 24 * time.Hour, ExternalCA: true, KubeletConfReference: true,
		NotAfter: map[string]time.Time{"kubelet-client-current": now.Add(2 * time.Hour)}}
	if _, err := l.Write(dir); err != nil {
		t.Fatal(err)
	}
	n := &hostileNode{dir: dir, canary: newCanary(t)}
	ca, _ := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/ca.crt"))
	n.caB64 = base64.StdEncoding.EncodeToString(ca)
	n.write(t, n.expand(embeddedCA), n.expand(execUser))
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	logger, hook := test.NewNullLogger()
	rep := report.New(kubeclient.ForReport(root, "/etc/kubernetes/kubelet.conf"), "/etc/kubernetes/kubelet.conf", logger)
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	go rep.Run(rctx)
	a, err := New(Options{
		Root: root, Log: logger, Clock: clock.RealClock{}, Version: "test",
		LoadConfig: func() (*config.Config, error) {
			return config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nagent: {nodeName: node1}\n"))
		},
		StateDir: filepath.Join(dir, "var/lib/certagent"), Socket: filepath.Join(dir, "run/certagent.sock"),
		Reporter: rep,
		CSR:      csrrenew.Renewer{Root: root, Client: kubeclient.ForCSR(root)},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, a: a, log: hook}
	h.start()
	defer h.stop()
	s := h.waitFor("the renewal to fail", func(s *api.Status) bool {
		c := cert(s, "kubelet-client-current")
		return c != nil && c.Renewal.LastError != ""
	})
	if got := cert(s, "kubelet-client-current").Renewal.LastError; !strings.Contains(got, "exec plugin") || !strings.Contains(got, "credential refused") {
		t.Errorf("status lastError %q does not say why", got)
	}
	logged := false
	for _, e := range hook.AllEntries() {
		if e.Message == "certificate renewal failed" && strings.Contains(fmt.Sprint(e.Data["REASON"]), "exec plugin") {
			logged = true
		}
	}
	if !logged {
		t.Error("the refusal is not in the journal")
	}
	s = h.waitFor("the reporter to give up", func(s *api.Status) bool { return s.Daemon.ReportError != "" })
	if got := s.Daemon.ReportError; !strings.Contains(got, "exec plugin") {
		t.Errorf("daemon.reportError %q does not say why", got)
	}
	reported := false
	for _, e := range hook.AllEntries() {
		if e.Message == "cannot report to the cluster" && strings.Contains(fmt.Sprint(e.Data["REASON"]), "exec plugin") {
			reported = true
		}
	}
	if !reported {
		t.Error("the reporter's refusal is not in the journal")
	}
	if n.canary.ran() {
		t.Error("the kubeconfig's exec command ran")
	}
}
