package csrrenew

import (
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"

	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/rotate/pki"
)

// PendingKeys keeps the key of a request in flight, so that a retry asks
// for (and waits on) the same request instead of making another.
type PendingKeys interface {
	// Load returns the kept key of the certificate, or nil.
	Load(name string) crypto.Signer
	Save(name string, key crypto.Signer) error
	Drop(name string)
}

// pendingKeys are the job's: files in its PendingDir, or none.
func pendingKeys(job renewal.CSRJob) PendingKeys {
	if job.PendingDir == "" {
		return noPending{}
	}
	return pendingDir{dir: job.PendingDir, skipLoad: !job.ReusePending}
}

// pendingDir keeps pending keys as files in a host directory (the state
// directory). With skipLoad set, Load returns nothing: the daemon reuses
// a key only while its state names the request it was made for.
type pendingDir struct {
	dir      string
	skipLoad bool
}

func (p pendingDir) path(name string) string {
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(p.dir, "pending-"+hex.EncodeToString(sum[:8])+".key")
}

// Load returns the kept key, or nil.
func (p pendingDir) Load(name string) crypto.Signer {
	if p.skipLoad {
		return nil
	}
	data, err := os.ReadFile(p.path(name))
	if err != nil {
		return nil
	}
	k, err := pki.ParseKeyPEM(data)
	if err != nil {
		return nil
	}
	return k
}

// Save keeps the key, 0600.
func (p pendingDir) Save(name string, key crypto.Signer) error {
	b, err := pki.EncodeKeyPEM(key, "")
	if err != nil {
		return err
	}
	return os.WriteFile(p.path(name), b, 0o600)
}

// Drop forgets the key.
func (p pendingDir) Drop(name string) { os.Remove(p.path(name)) }

// noPending keeps nothing.
type noPending struct{}

func (noPending) Load(string) crypto.Signer        { return nil }
func (noPending) Save(string, crypto.Signer) error { return nil }
func (noPending) Drop(string)                      {}
