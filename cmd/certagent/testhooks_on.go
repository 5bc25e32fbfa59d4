//go:build certagent_testhooks

package main

import (
	"os"
	"syscall"
	"time"

	"github.com/certagent/certagent/agent"
	"github.com/certagent/certagent/rotate"
)

// This file is built only with the certagent_testhooks tag (`make build`,
// the binary the integration tests run); the shipped binary (`make
// package`) has none of it.

// testHooks kill the process (CERTAGENT_TEST_CRASH_AT=<step>) or hold it
// for two seconds (CERTAGENT_TEST_PAUSE_AT=<step>) at a transaction step,
// for the crash and locking tests. Unset, they do nothing.
func testHooks() rotate.Hooks {
	crash, pause := os.Getenv("CERTAGENT_TEST_CRASH_AT"), os.Getenv("CERTAGENT_TEST_PAUSE_AT")
	if crash == "" && pause == "" {
		return nil
	}
	return stepHooks{crash: crash, pause: pause}
}

type stepHooks struct{ crash, pause string }

func (h stepHooks) Step(name string) {
	if h.pause == name {
		time.Sleep(2 * time.Second)
	}
	if h.crash == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}

// testNotifier stops the watchdog pings when CERTAGENT_TEST_STOP_WATCHDOG
// is set, as a stuck loop would.
func testNotifier(n agent.Notifier) agent.Notifier {
	if os.Getenv("CERTAGENT_TEST_STOP_WATCHDOG") == "" {
		return n
	}
	return noWatchdog{n}
}

type noWatchdog struct{ agent.Notifier }

func (noWatchdog) Watchdog() error { return nil }
