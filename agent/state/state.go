// Package state keeps what the agent must remember across restarts: per
// certificate, the last attempt, its error and the next attempt, and the
// last renewal. A corrupt file is set aside and the agent starts fresh.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/renameio/v2"
)

// FileName is the state file inside the state directory.
const FileName = "state.json"

// Cert is what is remembered of one certificate.
type Cert struct {
	// Serial is the certificate the record is about; a new serial (renewed
	// by us or by someone else) clears the failure count.
	Serial      string    `json:"serial"`
	Failures    int       `json:"failures,omitempty"`
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
	LastRenewal time.Time `json:"lastRenewal,omitzero"`
	// LastResult is "renewed <old> -> <new>" or "failed: <error>".
	LastResult string `json:"lastResult,omitempty"`
	// PendingCSR names the CertificateSigningRequest in flight; its key
	// is kept in the state directory until it is issued or denied.
	PendingCSR string `json:"pendingCSR,omitempty"`
}

type file struct {
	Version      int             `json:"version"`
	Certificates map[string]Cert `json:"certificates"`
}

// Store is the state file of one agent. Its methods are safe for
// concurrent use; mu guards certs.
type Store struct {
	path  string
	mu    sync.Mutex
	certs map[string]Cert
	dirty bool // certs differ from the file in what must survive a crash
	lazy  bool // certs differ from the file in what may wait (see Put)
	ver   uint64
	grown bool // a record was added since the last Forget
}

// Grown reports whether a record was added since the last Forget: if not,
// Forget with the names it kept last time drops nothing.
func (s *Store) Grown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grown
}

// Version counts the changes to the records: the same version, the same
// records.
func (s *Store) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ver
}

// Open loads the state in dir. A missing file is a fresh start; a corrupt
// one is renamed to state.json.corrupt-<unix time> and also a fresh start,
// reported through the returned warning.
func Open(dir string, now time.Time) (s *Store, warning, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("state directory: %w", err)
	}
	s = &Store{path: filepath.Join(dir, FileName), certs: map[string]Cert{}, dirty: true}
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("state: %w", err)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil || f.Version != 1 {
		if err == nil {
			err = fmt.Errorf("unknown version %d", f.Version)
		}
		aside := fmt.Sprintf("%s.corrupt-%d", s.path, now.Unix())
		os.Rename(s.path, aside)
		return s, fmt.Errorf("state file %s is corrupt (%v): moved to %s, starting fresh", s.path, err, aside), nil
	}
	if f.Certificates != nil {
		s.certs = f.Certificates
	}
	s.dirty = false
	return s, nil, nil
}

// Get returns the record of a certificate.
func (s *Store) Get(name string) Cert {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.certs[name]
}

// Put replaces the record of a certificate.
func (s *Store) Put(name string, c Cert) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.certs[name]
	if ok && old == c {
		return
	}
	s.certs[name] = c
	s.ver++
	s.grown = s.grown || !ok
	if old == (Cert{Serial: old.Serial}) && c == (Cert{Serial: c.Serial}) {
		// A bare serial, lost in a crash, is learnt again at the next
		// scan: no write for it alone (thousands of certificates on a
		// node that changes them often).
		s.lazy = true
	} else {
		s.dirty = true
	}
}

// Forget drops records of certificates that are gone.
func (s *Store) Forget(keep map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grown = false
	for n := range s.certs {
		if !keep[n] {
			delete(s.certs, n)
			s.ver++
			s.lazy = true // a stale record is forgotten again at the next pass
		}
	}
}

// Dir returns the state directory.
func (s *Store) Dir() string { return filepath.Dir(s.path) }

// Save writes the state atomically and durably when what must survive a
// crash changed since it was read or last written.
func (s *Store) Save() error { return s.save(false) }

// Flush writes the state when anything changed (at a full scan and at
// shutdown).
func (s *Store) Flush() error { return s.save(true) }

func (s *Store) save(all bool) error {
	s.mu.Lock()
	if !s.dirty && (!all || !s.lazy) {
		s.mu.Unlock()
		return nil
	}
	data, err := json.MarshalIndent(file{Version: 1, Certificates: s.certs}, "", "  ")
	s.dirty, s.lazy = false, false
	s.mu.Unlock()
	if err == nil {
		err = renameio.WriteFile(s.path, data, 0o600, renameio.WithTempDir(filepath.Dir(s.path)))
	}
	if err != nil {
		s.mu.Lock()
		s.dirty = true // try again next time
		s.mu.Unlock()
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}
