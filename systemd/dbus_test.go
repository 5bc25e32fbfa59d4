package systemd

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestNoDBus: without a reachable bus the error says so plainly.
func TestNoDBus(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := Units{}.Restart(ctx, "kubelet.service")
	if err == nil {
		t.Skip("a systemd is reachable through its private socket here")
	}
	if !errors.Is(err, ErrNoDBus) {
		t.Fatalf("err = %v, want ErrNoDBus", err)
	}
}
