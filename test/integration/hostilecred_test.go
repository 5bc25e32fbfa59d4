package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestRunRefusesPlugins: `certagent run` on a worker root
// whose kubeconfig names a credential plugin. The plugin is a host program
// that leaves a canary file when it runs; the daemon must refuse the
// credential, say why in status and in its log, and never run it: not for
// the CSR renewal, not for the Node reporter.
func TestRunRefusesPlugins(t *testing.T) {
	exec := "exec: {apiVersion: client.authentication.k8s.io/v1, command: %q, interactiveMode: Never}"
	oidc := "auth-provider: {name: oidc, config: {idp-issuer-url: 'https://127.0.0.1:1', client-id: x, id-token: x}}"
	for _, tc := range []struct {
		name, user, want string
		// bootstrap: the client certificate expired, so the renewal goes
		// through bootstrap-kubelet.conf, which carries the user.
		bootstrap bool
	}{
		{name: "exec", user: exec, want: "exec plugin"},
		{name: "oidc", user: oidc, want: "auth-provider"},
		{name: "exec+oidc", user: exec + ", " + oidc, want: "exec plugin"},
		{name: "bootstrap exec", user: exec, want: "exec plugin", bootstrap: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := t.TempDir()
			script, canary := filepath.Join(host, "plugin.sh"), filepath.Join(host, "canary")
			os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\necho ran >> %q\n"+
				`echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"x"}}'`+"\n", canary)), 0o755)

			root := t.TempDir()
			now := time.Now()
			notAfter := now.Add(2 * time.Hour) // due: 10-day lifetime
			if tc.bootstrap {
				notAfter = now.Add(-time.Hour)
			}
			l := pkitest.Layout{Now: now, LeafLifetime: 10 * 24 * time.Hour, ExternalCA: true, KubeletConfReference: true,
				NotAfter: map[string]time.Time{"kubelet-client-current": notAfter}}
			if _, err := l.Write(root); err != nil {
				t.Fatal(err)
			}
			ca, _ := os.ReadFile(filepath.Join(root, "etc/kubernetes/pki/ca.crt"))
			user := tc.user
			if strings.Contains(user, "%q") {
				user = fmt.Sprintf(user, script)
			}
			kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: k, cluster: {server: "https://127.0.0.1:1", certificate-authority-data: %s}}]
users: [{name: u, user: {%s}}]
contexts: [{name: c, context: {cluster: k, user: u}}]
current-context: c
`, base64.StdEncoding.EncodeToString(ca), user)
			file := "etc/kubernetes/kubelet.conf"
			if tc.bootstrap {
				file = "etc/kubernetes/bootstrap-kubelet.conf"
			}
			os.WriteFile(filepath.Join(root, file), []byte(kc), 0o600)
			os.MkdirAll(filepath.Join(root, "etc/certagent"), 0o755)
			os.WriteFile(filepath.Join(root, "etc/certagent/config.yaml"),
				[]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nagent: {retryInitial: 1s, retryMax: 2s}\n"), 0o644)

			d := startDaemon(t, certagentBin, root, nil)
			// Any failure ends the wait (what a client that ran the plugin
			// or asked for it would report, too); the checks below say
			// whether it was the refusal.
			d.waitCert(t, "kubelet-client-current", "the refusal", 20*time.Second, func(_, _, reason, _ string) bool {
				return strings.Contains(reason, tc.want) || strings.Contains(reason, "dial tcp") || strings.Contains(reason, "Auth Provider")
			})
			s := d.status(t)
			for _, c := range s.Certificates {
				if c.Name == "kubelet-client-current" && (!strings.Contains(c.Renewal.LastError, tc.want) || !strings.Contains(c.Renewal.LastError, "credential refused")) {
					t.Errorf("status lastError %q does not say why", c.Renewal.LastError)
				}
			}
			if !strings.Contains(d.log(), "certificate renewal failed") || !strings.Contains(d.log(), tc.want) {
				t.Errorf("the refusal is not in the log:\n%s", d.log())
			}
			if !tc.bootstrap {
				// The Node reporter reads kubelet.conf too.
				got := waitReportError(t, d, 20*time.Second)
				if !strings.Contains(got, tc.want) || !strings.Contains(d.log(), "cannot report to the cluster") {
					t.Errorf("daemon.reportError %q does not say why, or not logged:\n%s", got, d.log())
				}
			}
			if _, err := os.Stat(canary); err == nil {
				t.Errorf("the kubeconfig's %s ran (%s exists)", tc.want, canary)
			}
		})
	}
}

// waitReportError waits for the daemon's status to carry daemon.reportError.
func waitReportError(t *testing.T, d *daemon, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var s struct {
			Daemon struct {
				ReportError string `json:"reportError"`
			} `json:"daemon"`
		}
		if resp, err := unixClient(d.socket).Get("http://x/v1/status"); err == nil {
			json.NewDecoder(resp.Body).Decode(&s)
			resp.Body.Close()
		}
		if s.Daemon.ReportError != "" {
			return s.Daemon.ReportError
		}
		if time.Now().After(deadline) {
			t.Fatalf("no daemon.reportError within %s\n%s", within, d.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
