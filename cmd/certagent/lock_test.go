package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestLockTimeoutExitCode: a renewal that cannot take the lock says once
// what it waits for (the holder's pid) and exits 5, not the usage error's 4.
func TestLockTimeoutExitCode(t *testing.T) {
	dir := t.TempDir()
	if _, err := (pkitest.Layout{}).Write(dir); err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := rotate.Acquire(context.Background(), root, "/etc/kubernetes/tmp")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, code := executeCtx(t, ctx, "renew", "--root", dir, "--lock-timeout", "300ms", "apiserver")
	if code != ExitLockTimeout || code == ExitUsage {
		t.Fatalf("exit %d, want %d:\n%s", code, ExitLockTimeout, out)
	}
	want := fmt.Sprintf("waiting up to 300ms for /etc/kubernetes/tmp/certagent.lock, held by pid %d", os.Getpid())
	if strings.Count(out, want) != 1 || !strings.Contains(out, "another renewal is in progress") {
		t.Fatalf("want %q once:\n%s", want, out)
	}
}
