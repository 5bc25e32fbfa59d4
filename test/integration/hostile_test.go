package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// runBounded runs the binary and kills it after limit: a command that
// should fail at once must not be able to hang the test.
func runBounded(t *testing.T, limit time.Duration, args ...string) (result, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, certagentBin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("certagent %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("certagent %v still running after %s: killed\n%s%s", args, limit, out.String(), errb.String())
	}
	return result{out.String(), errb.String(), code}, took
}

// TestConfigFIFO: a FIFO as the config file (given with --config, or at
// the default path below --root) once hung `certagent check` forever, deaf
// to SIGTERM. It must fail at once: exit 4, naming the file.
func TestConfigFIFO(t *testing.T) {
	for _, tc := range []struct {
		name string
		args func(root, fifo string) []string
		at   string // where the FIFO goes, below the root
	}{
		{name: "--config", at: "fifo.yaml", args: func(root, fifo string) []string { return []string{"check", "--root", root, "--config", fifo} }},
		{name: "default path", at: "etc/certagent/config.yaml", args: func(root, _ string) []string { return []string{"check", "--root", root} }},
		{name: "renew", at: "fifo.yaml", args: func(root, fifo string) []string {
			return []string{"renew", "--all", "--dry-run", "--root", root, "--config", fifo}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := sandbox(t)
			fifo := filepath.Join(root, tc.at)
			if err := os.MkdirAll(filepath.Dir(fifo), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			r, took := runBounded(t, 20*time.Second, tc.args(root, fifo)...)
			// A file below --root is named by its node path; --config by
			// the path given.
			name := fifo
			if tc.name == "default path" {
				name = "/" + tc.at
			}
			if r.code != 4 || !strings.Contains(r.stderr, name) || !strings.Contains(r.stderr, "not a regular file") {
				t.Fatalf("exit %d after %s, want 4 and a clear error naming %s:\n%s%s", r.code, took, name, r.stdout, r.stderr)
			}
		})
	}
}

// TestRunSocketIsRegularFile: `certagent run --socket` naming an existing
// regular file once deleted it (the stale-socket cleanup removed whatever
// was at the path). The daemon must refuse to start, naming the path, and
// leave the file byte for byte as it was.
func TestRunSocketIsRegularFile(t *testing.T) {
	root := sandbox(t)
	victim := filepath.Join(t.TempDir(), "precious.conf")
	data := []byte("do not delete me\n")
	if err := os.WriteFile(victim, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nagent: {reportToCluster: false}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, _ := runBounded(t, 30*time.Second, "run", "--root", root, "--config", cfg, "--socket", victim,
		"--state-dir", t.TempDir(), "--metrics-address", "", "--no-restart")
	if r.code != 1 || !strings.Contains(r.stderr, victim) || !strings.Contains(r.stderr, "not a socket") {
		t.Errorf("exit %d, want 1 and an error naming %s:\n%s%s", r.code, victim, r.stdout, r.stderr)
	}
	if got, err := os.ReadFile(victim); err != nil || string(got) != string(data) {
		t.Fatalf("%s after the run: %q, %v; want it intact", victim, got, err)
	}
}

// TestRenewAllTwiceLongRenewBefore: renewBefore at or past the lifetime
// puts every certificate in its window from birth, and each one-shot
// `renew --all` renewed them all again. The second run must renew nothing.
func TestRenewAllTwiceLongRenewBefore(t *testing.T) {
	for _, rb := range []string{"365d", "400d"} {
		t.Run(rb, func(t *testing.T) {
			root := t.TempDir()
			if _, err := (pkitest.Layout{Now: time.Now().Add(-100 * 24 * time.Hour)}).Write(root); err != nil {
				t.Fatal(err)
			}
			cfg := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(cfg, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nrenewBefore: "+rb+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"renew", "--all", "--root", root, "--config", cfg}
			first := run(t, certagentBin, args...)
			if first.code != 0 || renewedLines(first.stdout) == 0 {
				t.Fatalf("first run: exit %d, want renewals:\n%s%s", first.code, first.stdout, first.stderr)
			}
			second := run(t, certagentBin, args...)
			if second.code != 0 || renewedLines(second.stdout) != 0 || !strings.Contains(second.stdout, "a tenth of its") {
				t.Fatalf("second run: exit %d, want nothing renewed and the reason:\n%s%s", second.code, second.stdout, second.stderr)
			}
		})
	}
}

func renewedLines(out string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "renewed ") {
			n++
		}
	}
	return n
}
