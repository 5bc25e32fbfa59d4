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
			if r.code != 4 || !strings.Contains(r.stderr, fifo) || !strings.Contains(r.stderr, "not a regular file") {
				t.Fatalf("exit %d after %s, want 4 and a clear error naming %s:\n%s%s", r.code, took, fifo, r.stdout, r.stderr)
			}
		})
	}
}
