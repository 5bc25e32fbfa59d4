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
		{name: "bad output flag", args: []string{"-o", "xml"}, code: ExitUsage},
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

// TestInvalidDurationExits4: a duration that overflows, is negative or is
// past its bound, in the config or in a flag, is an invalid config (exit
// 4) that names the key or flag, never a silently wrapped value.
func TestInvalidDurationExits4(t *testing.T) {
	dir := t.TempDir()
	if _, err := (pkitest.Layout{}).Write(dir); err != nil {
		t.Fatal(err)
	}
	head := "apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n"
	tests := []struct {
		name, config string
		args         []string
		want         string
	}{
		{name: "renewBefore wrapping to 25 minutes", config: "renewBefore: 213504d\n", args: []string{"check"}, want: "renewBefore: invalid duration"},
		{name: "validity wrapping to a day", config: "renewal: {validity: 213505d}\n", args: []string{"renew", "--all", "--dry-run"}, want: "renewal.validity: invalid duration"},
		{name: "validity over a century", config: "renewal: {validity: 200y}\n", args: []string{"check"}, want: "renewal.validity: must be at most 100y"},
		{name: "retryMax of max int64", config: "agent: {retryMax: 9223372036854775807ns}\n", args: []string{"check"}, want: "agent.retryMax: must be at most 1w"},
		{name: "--renew-before wrapping", args: []string{"run", "--renew-before", "213504d"}, want: "out of range"},
		{name: "--renew-before negative", args: []string{"run", "--renew-before", "-30d"}, want: "must be positive"},
		{name: "--renew-before past a century", args: []string{"run", "--renew-before", "36501d"}, want: "must be at most 100y"},
		{name: "--lock-timeout negative", args: []string{"renew", "--all", "--lock-timeout", "-1s"}, want: "must be positive"},
		{name: "--lock-timeout overflowing", args: []string{"renew", "--all", "--lock-timeout", "3000000h"}, want: "out of range"},
		{name: "--webhook-lifetime of centuries", args: []string{"demo", "--webhook-lifetime", "200y"}, want: "must be at most 1h"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{}, tc.args...)
			if tc.args[0] != "demo" {
				cfg := filepath.Join(t.TempDir(), "config.yaml")
				if err := os.WriteFile(cfg, []byte(head+tc.config), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--root", dir, "--config", cfg)
				if tc.args[0] == "run" {
					args = append(args, "--socket", filepath.Join(t.TempDir(), "s.sock"), "--state-dir", t.TempDir(), "--metrics-address", "")
				}
			}
			// Bounded: before the fix `run` started a daemon with the
			// wrapped value; it must fail before doing anything.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, code := executeCtx(t, ctx, args...)
			if code != ExitUsage || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, ExitUsage, tc.want, out)
			}
		})
	}
}

// executeCtx is execute with a context, and the error text in the output
// as main prints it.
func executeCtx(t *testing.T, ctx context.Context, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	cmd := newRootCommand()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return out.String(), 0
	}
	out.WriteString(err.Error())
	return out.String(), exitCode(err)
}
