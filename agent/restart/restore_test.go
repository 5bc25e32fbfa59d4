package restart

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
)

// TestRestoreManifests: a restart killed between its two renames left
// manifests aside; the next start puts back only what is certagent's and
// free, and never follows a link planted under the aside name.
func TestRestoreManifests(t *testing.T) {
	dir := t.TempDir()
	man := filepath.Join(dir, "etc/kubernetes/manifests")
	if err := os.MkdirAll(man, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(man, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(".certagent-kube-apiserver.yaml", "apiserver") // a crash left it aside
	write(".certagent-etcd.yaml", "old etcd")            // aside, but a new etcd.yaml was written since
	write("etcd.yaml", "new etcd")                       //
	write(".certagent-evil.yaml", "not a component")     // not certagent's: stays
	outside := filepath.Join(dir, "outside.yaml")        // a link planted as a moved-aside manifest
	os.WriteFile(outside, []byte("outside"), 0o600)      //
	os.Symlink(outside, filepath.Join(man, ".certagent-kube-scheduler.yaml"))

	cfg, err := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &Restarter{Root: root}
	if !r.ManifestsAside(cfg) {
		t.Fatal("ManifestsAside: false with manifests aside")
	}
	got := map[string]string{}
	for _, m := range r.RestoreManifests(cfg) {
		got[m.Manifest] = "ok"
		if m.Err != nil {
			got[m.Manifest] = m.Err.Error()
		}
	}
	if got["kube-apiserver.yaml"] != "ok" {
		t.Errorf("kube-apiserver.yaml: %q", got["kube-apiserver.yaml"])
	}
	if !strings.Contains(got["etcd.yaml"], "exists again") {
		t.Errorf("etcd.yaml: %q", got["etcd.yaml"])
	}
	if !strings.Contains(got["kube-scheduler.yaml"], "not a regular file") {
		t.Errorf("kube-scheduler.yaml: %q", got["kube-scheduler.yaml"])
	}
	read := func(name string) string { b, _ := os.ReadFile(filepath.Join(man, name)); return string(b) }
	if read("kube-apiserver.yaml") != "apiserver" || read("etcd.yaml") != "new etcd" || read(".certagent-etcd.yaml") != "old etcd" {
		t.Error("wrong files after the restore")
	}
	if _, err := os.Lstat(filepath.Join(man, "kube-scheduler.yaml")); err == nil {
		t.Error("a planted link was put in place of a manifest")
	}
	if _, err := os.Stat(filepath.Join(man, ".certagent-evil.yaml")); err != nil {
		t.Error("a file that is not certagent's was touched")
	}
	if len(r.RestoreManifests(cfg)) != 2 { // etcd and the link stay for the operator
		t.Error("a second restore changed more")
	}
}

// TestManifestsAsideSeesDanglingLink: the check looks at the entry itself,
// inside the root, not at where a link leads.
func TestManifestsAsideSeesDanglingLink(t *testing.T) {
	dir := t.TempDir()
	man := filepath.Join(dir, "etc/kubernetes/manifests")
	if err := os.MkdirAll(man, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent", filepath.Join(man, ".certagent-etcd.yaml")); err != nil {
		t.Fatal(err)
	}
	cfg, _ := config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n"))
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &Restarter{Root: root}
	if !r.ManifestsAside(cfg) {
		t.Error("a dangling link left aside was not seen")
	}
	if got := r.RestoreManifests(cfg); len(got) != 1 || got[0].Err == nil {
		t.Errorf("restore of a dangling link: %+v", got)
	}
}
