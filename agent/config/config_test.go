package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const head = "apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n"

func TestParse(t *testing.T) {
	tests := []struct {
		name, doc, err string
	}{
		{name: "minimal", doc: head},
		{name: "full", doc: head + "pkiDir: /srv/pki\npaths: [/opt/certs, '/opt/*.pem']\nexclude: [/opt/certs/old.crt]\nrenewBefore: 30d\nmaxFileSize: 4096\n"},
		{name: "unknown key named", doc: head + "renewBefor: 30d\n", err: `unknown field "renewBefor"`},
		{name: "unknown nested type", doc: head + "paths: /not/a/list\n", err: "paths"},
		{name: "bad duration named", doc: head + "renewBefore: soon\n", err: `renewBefore: invalid duration "soon"`},
		{name: "negative duration", doc: head + "renewBefore: -5h\n", err: "renewBefore: must be positive"},
		{name: "relative path named", doc: head + "paths: [certs/x.crt]\n", err: "paths[0]: must be an absolute path"},
		{name: "bad glob named", doc: head + "exclude: ['/a/[']\n", err: "exclude[0]: bad glob"},
		{name: "relative dir", doc: head + "kubeletPKIDir: pki\n", err: "kubeletPKIDir: must be an absolute path"},
		{name: "wrong version", doc: "apiVersion: v1\nkind: AgentConfiguration\n", err: `apiVersion: must be "certagent.io/v1alpha1"`},
		{name: "wrong kind", doc: "apiVersion: certagent.io/v1alpha1\nkind: Config\n", err: "kind: must be"},
		{name: "empty", doc: "", err: "config is empty"},
		{name: "not yaml", doc: "{{{", err: "config:"},
		{name: "duplicate key", doc: head + "pkiDir: /a\npkiDir: /b\n", err: "pkiDir"},
		{name: "negative size", doc: head + "maxFileSize: -1\n", err: "maxFileSize"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc))
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error = %v, want it to contain %q (config %+v)", err, tc.err, c)
			}
		})
	}
}

func TestDefaultsAndDurations(t *testing.T) {
	c, err := Parse([]byte(head + "kubernetesDir: /srv/k8s\nrenewBefore: 30d\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.PKIDir != "/srv/k8s/pki" || c.KubeletPKIDir != "/var/lib/kubelet/pki" || c.RenewBeforeDuration != 30*24*time.Hour {
		t.Fatalf("defaults: %+v", c)
	}
	if d, err := ParseDuration("36h"); err != nil || d != 36*time.Hour {
		t.Fatalf("36h = %v %v", d, err)
	}
}

func TestLoad(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.yaml")
	if c, err := Load(missing, true); err != nil || c.PKIDir != "/etc/kubernetes/pki" {
		t.Fatalf("optional missing: %v %v", c, err)
	}
	if _, err := Load(missing, false); err == nil {
		t.Fatal("a missing explicit config must be an error")
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(head+"nope: 1\n"), 0o644)
	if _, err := Load(bad, true); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("bad config error should name file and key: %v", err)
	}
}
