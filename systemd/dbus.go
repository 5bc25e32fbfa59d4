package systemd

import (
	"context"
	"errors"
	"fmt"

	"github.com/coreos/go-systemd/v22/dbus"
)

// ErrNoDBus means the system bus (and so systemd) cannot be reached.
var ErrNoDBus = errors.New("systemd's D-Bus API is not available")

// Units restarts systemd units through the D-Bus API. Each call opens its
// own connection, so a restarted dbus-daemon or systemd costs nothing.
type Units struct{}

func connect(ctx context.Context) (*dbus.Conn, error) {
	c, err := dbus.NewWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoDBus, err)
	}
	return c, nil
}

// Restart restarts a unit and waits for the job: any result other than
// "done" (failed, timeout, canceled, dependency, skipped) is an error.
func (Units) Restart(ctx context.Context, unit string) error {
	c, err := connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	ch := make(chan string, 1)
	if _, err := c.RestartUnitContext(ctx, unit, "replace", ch); err != nil {
		return fmt.Errorf("restart %s: %w", unit, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("restart %s: job %s", unit, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("restart %s: %w", unit, ctx.Err())
	}
}

// MainPID returns a service's main process id (0 when it is not running).
func (Units) MainPID(ctx context.Context, unit string) (uint32, error) {
	c, err := connect(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	p, err := c.GetServicePropertyContext(ctx, unit, "MainPID")
	if err != nil {
		return 0, fmt.Errorf("%s MainPID: %w", unit, err)
	}
	pid, _ := p.Value.Value().(uint32)
	return pid, nil
}
