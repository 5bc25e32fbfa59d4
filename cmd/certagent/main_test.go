package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// execute runs the CLI in-process and returns stdout and the exit code.
func execute(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	cmd := newRootCommand()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	code := 0
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		code = exitCode(err)
	}
	return out.String(), code
}

func TestCheckExitCodes(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name     string
		notAfter map[string]time.Time
		extra    func(dir string)
		args     []string
		code     int
	}{
		{name: "healthy", code: 0},
		{name: "due", notAfter: map[string]time.Time{"apiserver": now.Add(10 * 24 * time.Hour)}, code: 1},
		{name: "expired", notAfter: map[string]time.Time{"scheduler.conf": now.Add(-time.Hour)}, code: 2},
		{name: "broken file", extra: func(dir string) {
			os.WriteFile(filepath.Join(dir, "etc/kubernetes/pki/x.crt"), []byte("garbage"), 0o644)
		}, code: 2},
		{name: "bad output flag", args: []string{"-o", "yaml"}, code: ExitUsage},
		{name: "missing config", args: []string{"--config", "/nonexistent/config.yaml"}, code: ExitUsage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := (pkitest.Layout{Now: now, NotAfter: tc.notAfter}).Write(dir); err != nil {
				t.Fatal(err)
			}
			if tc.extra != nil {
				tc.extra(dir)
			}
			out, code := execute(t, append([]string{"check", "--root", dir}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s", code, tc.code, out)
			}
		})
	}
}

func TestCheckJSONContract(t *testing.T) {
	dir := t.TempDir()
	if _, err := (pkitest.Layout{}).Write(dir); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "etc/kubernetes/pki/bad.crt"), nil, 0o644)
	out, code := execute(t, "check", "--root", dir, "-o", "json")
	if code != 2 {
		t.Fatalf("exit %d", code)
	}
	// The documented fields, by their JSON names.
	var doc struct {
		Certificates []map[string]any `json:"certificates"`
		Authorities  []map[string]any `json:"authorities"`
		Problems     []map[string]any `json:"problems"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(doc.Certificates) == 0 || len(doc.Authorities) == 0 || len(doc.Problems) != 1 {
		t.Fatalf("lists: %d %d %d", len(doc.Certificates), len(doc.Authorities), len(doc.Problems))
	}
	for _, key := range []string{"name", "path", "notAfter", "caName", "state"} {
		if _, ok := doc.Certificates[0][key]; !ok {
			t.Errorf("certificate lacks %q", key)
		}
	}
	if _, err := time.Parse(time.RFC3339, doc.Certificates[0]["notAfter"].(string)); err != nil {
		t.Errorf("notAfter not RFC 3339: %v", err)
	}
	for _, key := range []string{"path", "error"} {
		if _, ok := doc.Problems[0][key]; !ok {
			t.Errorf("problem lacks %q", key)
		}
	}
}

func TestDemoAndVersion(t *testing.T) {
	out, code := execute(t, "demo", "--check-only")
	if code != 0 || !strings.Contains(out, "front-proxy-client") || !strings.Contains(out, "expired") || !strings.Contains(out, "PROBLEMS (1)") {
		t.Fatalf("demo exit %d:\n%s", code, out)
	}
	out, code = execute(t, "version")
	if code != 0 || strings.TrimSpace(out) != version {
		t.Fatalf("version: %q %d", out, code)
	}
}
