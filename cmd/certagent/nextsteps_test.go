package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// fakeUnits records the units restarted over "D-Bus".
type fakeUnits struct {
	mu    sync.Mutex
	units []string
}

func (f *fakeUnits) Restart(_ context.Context, unit string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.units = append(f.units, unit)
	return nil
}

// TestRenewNextSteps: an offline renew says what must reload the renewed
// certificates and that nobody will restart it; with --restart it
// restarts the kubelet unit through the daemon's Restarter (after its
// health check passes).
func TestRenewNextSteps(t *testing.T) {
	healthz := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer healthz.Close()
	tests := []struct {
		name      string
		args      []string
		want      []string
		restarted string
		manifest  bool // a kube-apiserver static pod on the node
	}{
		{name: "told", args: []string{"kubelet.conf", "apiserver"}, want: []string{
			"next: kubelet must restart to load kubelet.conf: systemctl restart kubelet.service",
			"next: kube-apiserver must restart to load apiserver (it does not run as a static pod here",
			"next: certagent will not restart them"}},
		{name: "reads it by itself", args: []string{"apiserver"}, manifest: true, want: []string{
			"next: kube-apiserver (static pod kube-apiserver.yaml) reads apiserver anew by itself: no restart needed"}},
		{name: "nothing served renewed", args: []string{"apiserver-kubelet-client"}, manifest: true, want: []string{
			"next: kube-apiserver (static pod kube-apiserver.yaml) must restart to load apiserver-kubelet-client"}},
		{name: "--restart", args: []string{"--restart", "kubelet.conf"}, want: []string{"restarted kubelet                    ok"}, restarted: "kubelet.service"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := (pkitest.Layout{}).Write(dir); err != nil {
				t.Fatal(err)
			}
			if tc.manifest {
				os.MkdirAll(filepath.Join(dir, "etc/kubernetes/manifests"), 0o755)
				os.WriteFile(filepath.Join(dir, "etc/kubernetes/manifests/kube-apiserver.yaml"), []byte("kind: Pod\n"), 0o600)
			}
			cfg := filepath.Join(t.TempDir(), "config.yaml")
			os.WriteFile(cfg, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nrestart: {kubeletHealthz: "+healthz.URL+", timeout: 5s}\n"), 0o600)
			units := &fakeUnits{}
			defer func(old func() restart.Units) { newUnits = old }(newUnits)
			newUnits = func() restart.Units { return units }
			out, code := execute(t, append([]string{"renew", "--root", dir, "--config", cfg}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("lacks %q:\n%s", w, out)
				}
			}
			if tc.name == "reads it by itself" && strings.Contains(out, "will not restart them") {
				t.Errorf("nothing here needs a restart:\n%s", out)
			}
			if got := strings.Join(units.units, ","); got != tc.restarted {
				t.Errorf("restarted %q, want %q", got, tc.restarted)
			}
		})
	}
}
