//go:build !certagent_testhooks

package main

import (
	"github.com/certagent/certagent/agent"
	"github.com/certagent/certagent/rotate"
)

// Without the certagent_testhooks tag (the shipped binary) the test hooks
// of testhooks_on.go do not exist: the environment variables are ignored.

func testHooks() rotate.Hooks { return nil }

func testNotifier(n agent.Notifier) agent.Notifier { return n }
