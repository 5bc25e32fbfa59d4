// Package logfields holds the journal MESSAGE_IDs of certagent's events
// and the fields every certificate event carries (README, Logging).
package logfields

import (
	"time"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/agent/inventory"
)

// MESSAGE_IDs of the journal events, fixed so that
// `journalctl MESSAGE_ID=<id>` finds every event of a kind.
const (
	MsgRenewalScheduled = "85f30c921ec54ed0955e52a9b60a5473"
	MsgRenewed          = "5bb61177dc074362822c1a458b6a50ca"
	MsgRenewalFailed    = "a59553fb20784acaa5a2f5736483e4d1"
	MsgExpired          = "64349d2ba4cc4f5e8fb0a1bac60f3435"
	MsgRestartDone      = "271eedc13f474c33becd23a12b4f4e1d"
	MsgRestartFailed    = "b85542c31bc4436f876171be7e4a0b3c"
	MsgChangedOnDisk    = "c374caa827ac4d1b938983710563c161"
	MsgCSRPending       = "683b4d79cee84e7088889439925c8984"
	MsgSteppedIn        = "d6e5af9d6a0445feb533eb3e063d76a5"
	MsgStale            = "832b505158f0444da9abca70171bf44d"
	MsgRepaired         = "0f2e7c7b9d8a4c1f9a55e1d3c6b2a4e7"
	MsgLeftAlone        = "9b1d44c2e6f34a7d8c0e5f21a3b7d6c8"
	// Coordination of control-plane restarts between nodes.
	MsgCoordWaiting  = "3c4e8f0a6b2d4e1f9a7c5b3d1e0f2a48"
	MsgCoordAcquired = "7d2a9c4e1b6f4a3d8e0c2b5f7a9d1c36"
	MsgCoordAPIDown  = "e5b1f3a7c9d24b6e8f0a2c4d6e8b0f13"
	MsgCoordLocal    = "a8c6e4b2d0f84e1a9c7b5d3f1e2a4c69"
	// A node's part in a CA rotation (`certagent ca rotate`): a phase
	// begun on this node, done on it, or blocked (REASON says why).
	MsgCAPhaseStart   = "1c38487c6984414e979d65264ae0b2c5"
	MsgCAPhaseDone    = "c1fd021ba14f4255a770e623eb9c7834"
	MsgCAPhaseBlocked = "caaf537c59104a4b89d233449355b0fb"
)

// Cert returns the journal fields of a certificate event. Nothing here
// is key material.
func Cert(msgID string, c *inventory.Certificate, method, reason string) logrus.Fields {
	f := logrus.Fields{
		"MESSAGE_ID": msgID,
		"CERT_NAME":  c.Name,
		"CERT_PATH":  c.Path,
		"SERIAL":     c.Serial,
		"NOT_AFTER":  c.NotAfter.UTC().Format(time.RFC3339),
	}
	if method != "" {
		f["METHOD"] = method
	}
	if reason != "" {
		f["REASON"] = reason
	}
	return f
}
