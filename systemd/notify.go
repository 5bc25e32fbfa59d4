package systemd

import (
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify messages to the service manager. Outside
// systemd (no NOTIFY_SOCKET) every call is a no-op.
type Notifier struct{}

// Ready says start-up is complete, with a one-line status.
func (Notifier) Ready(status string) error {
	_, err := daemon.SdNotify(false, daemon.SdNotifyReady+"\nSTATUS="+status)
	return err
}

// Status updates the one-line status `systemctl status` shows.
func (Notifier) Status(status string) error {
	_, err := daemon.SdNotify(false, "STATUS="+status)
	return err
}

// Watchdog pings the watchdog.
func (Notifier) Watchdog() error {
	_, err := daemon.SdNotify(false, daemon.SdNotifyWatchdog)
	return err
}

// Stopping says shutdown has begun.
func (Notifier) Stopping() error {
	_, err := daemon.SdNotify(false, daemon.SdNotifyStopping)
	return err
}

// WatchdogInterval returns WatchdogSec of the unit, or 0 when the watchdog
// is off (or the process is not the one systemd watches).
func WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}
