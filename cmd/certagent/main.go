// Command certagent finds, checks and renews the certificates of a
// Kubernetes node. See README.md for the commands, flags and exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.0.0-dev"

// ExitUsage is the exit code for bad flags, a bad config or an
// unusable --root: certagent could not do what was asked at all.
const ExitUsage = 4

// exitError carries a command's exit code out of cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

// softMemoryLimit keeps the heap small on nodes where certagent is a
// guest: the GC works harder as the heap nears it (GOMEMLIMIT overrides).
const softMemoryLimit = 24 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(softMemoryLimit)
	}
	// A CSR is watched by name: client-go's watch-list attempt costs a
	// request that always falls back to list and watch. Off unless asked.
	if os.Getenv("KUBE_FEATURE_WatchListClient") == "" {
		os.Setenv("KUBE_FEATURE_WatchListClient", "false")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// run executes the command line and returns the process exit code.
func run(ctx context.Context, args []string) int {
	cmd := newRootCommand()
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if !errors.As(err, &ee) || ee.err != nil {
		fmt.Fprintln(os.Stderr, "certagent:", err)
	}
	return exitCode(err)
}

// exitCode maps a command's error to the process exit code.
func exitCode(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return ExitUsage
}
