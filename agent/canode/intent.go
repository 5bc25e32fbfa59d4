package canode

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/renameio/v2"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// IntentFile is the node's record of its part in a rotation, in the
// daemon's state directory.
const IntentFile = "ca-rotation.json"

// Intent is written before any file of a phase changes and after each
// confirmed restart: a daemon killed at any point redoes the phase (its
// file edits are no-ops once made) and restarts what is still Pending,
// once.
type Intent struct {
	ID string `json:"id"`
	CA string `json:"ca"`
	// Phase is the phase this node works on or finished last.
	Phase carotate.Phase `json:"phase"`
	// Since is when this node began Phase.
	Since time.Time `json:"since"`
	// Done: the phase is finished on this node (at DoneAt).
	Done   bool       `json:"done,omitempty"`
	DoneAt *time.Time `json:"doneAt,omitempty"`
	// Pending are the components to restart before the phase is done.
	Pending []string `json:"pending,omitempty"`
	// PendingAt is, for a component pending because certificates it uses
	// are renewed (reissue), when it became so: a restart of it confirmed
	// since (by the renewal's own restart) counts; after a crash none is
	// known and it is restarted.
	PendingAt map[string]time.Time `json:"pendingAt,omitempty"`
	// ReloadOnly are pending components that read no changed file but
	// ones they reload by themselves: they are confirmed without a restart
	// once that shows (restart.Restarter.ReloadTrust).
	ReloadOnly []string `json:"reloadOnly,omitempty"`
	// ManifestChanged are pending static pods whose manifest this node
	// changed: the kubelet restarts them by itself, and they are
	// confirmed healthy, not restarted again
	// (restart.Restarter.ConfirmRestarted).
	ManifestChanged []string `json:"manifestChanged,omitempty"`
	// Restarted are the components restarted for this phase, confirmed.
	Restarted []string `json:"restarted,omitempty"`
	// OldCA is the CA being replaced (PEM), as verified against this
	// node's files when the rotation began here.
	OldCA []byte `json:"oldCA,omitempty"`
	// PhasesDone are the phases of this rotation done on this node: a
	// phase begins only once those before it are here.
	PhasesDone []carotate.Phase `json:"phasesDone,omitempty"`
	// Finished are the ids of earlier rotations this node went through
	// to their done phase: their ConfigMap, put back (each phase of it is
	// validly signed), is not run again.
	Finished []string `json:"finished,omitempty"`
}

// next is the record of rotation id that follows this one: the ids of
// rotations finished here carried over.
func (it *Intent) next(id, caName string, oldCA []byte) *Intent {
	fin := slices.Clone(it.Finished)
	if it.ID != "" && slices.Contains(it.PhasesDone, carotate.Done) && !slices.Contains(fin, it.ID) {
		fin = append(fin, it.ID)
	}
	return &Intent{ID: id, CA: caName, OldCA: oldCA, Finished: fin}
}

// nextPhase is the first phase, up to the cluster's, not done on this
// node ("" when none is left).
func (it *Intent) nextPhase(cluster carotate.Phase) carotate.Phase {
	for _, p := range carotate.Phases[:cluster.Index()+1] {
		if !slices.Contains(it.PhasesDone, p) {
			return p
		}
	}
	return ""
}

// busy: this record is of a rotation whose phase is not done on this
// node, or that has restarts pending: a rotation of another id must not
// replace it (its pending restarts would be lost).
func (it *Intent) busy() bool {
	return it.ID != "" && (!it.Done || len(it.Pending) > 0)
}

// busyReason says why another rotation waits (see busy), and how the
// operator clears the record.
func (it *Intent) busyReason(stateDir string) string {
	pending := "none"
	if len(it.Pending) > 0 {
		pending = strings.Join(it.Pending, ", ")
	}
	return fmt.Sprintf("this node is in the middle of phase %s of another rotation of %s (id %.16s; restarts pending: %s): it takes no other rotation until that one's phase is done here; finish it, or restart the pending components yourself and remove %s (see README)",
		it.Phase, it.CA, it.ID, pending, filepath.Join(stateDir, IntentFile))
}

// addDone records phase p done on this node.
func (it *Intent) addDone(p carotate.Phase) {
	if !slices.Contains(it.PhasesDone, p) {
		it.PhasesDone = append(it.PhasesDone, p)
	}
}

func loadIntent(dir string) (*Intent, error) {
	data, err := os.ReadFile(filepath.Join(dir, IntentFile))
	if errors.Is(err, fs.ErrNotExist) {
		return &Intent{}, nil
	}
	if err != nil {
		return &Intent{}, err
	}
	it := &Intent{}
	if err := json.Unmarshal(data, it); err != nil {
		return &Intent{}, fmt.Errorf("%s: %w", IntentFile, err)
	}
	return it, nil
}

// save writes the intent atomically and durably.
func (it *Intent) save(dir string) error {
	data, err := json.MarshalIndent(it, "", "  ")
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(filepath.Join(dir, IntentFile), append(data, '\n'), 0o600, renameio.WithTempDir(dir)); err != nil {
		return fmt.Errorf("write %s: %w", IntentFile, err)
	}
	return nil
}

// addPendingAt adds components to restart because of renewals at t;
// one already pending keeps its time.
func (it *Intent) addPendingAt(t time.Time, names ...string) {
	for _, n := range names {
		it.ReloadOnly = slices.DeleteFunc(it.ReloadOnly, func(p string) bool { return p == n })
		it.ManifestChanged = slices.DeleteFunc(it.ManifestChanged, func(p string) bool { return p == n })
		if slices.Contains(it.Pending, n) {
			continue
		}
		if it.PendingAt == nil {
			it.PendingAt = map[string]time.Time{}
		}
		it.PendingAt[n] = t.UTC()
	}
	it.addPending(names...)
}

// addPendingReload adds a component to restart because a trust file it
// reads changed; reload says it reloads that file by itself. It stays
// reload-only while every cause so far is one it reloads.
func (it *Intent) addPendingReload(name string, reload bool) {
	was, only := slices.Contains(it.Pending, name), slices.Contains(it.ReloadOnly, name)
	it.ReloadOnly = slices.DeleteFunc(it.ReloadOnly, func(p string) bool { return p == name })
	it.ManifestChanged = slices.DeleteFunc(it.ManifestChanged, func(p string) bool { return p == name })
	if reload && (!was || only) {
		it.ReloadOnly = append(it.ReloadOnly, name)
	}
	it.addPending(name)
}

// addPendingManifest adds a static pod whose manifest is about to change:
// the kubelet restarts it, and it is to be confirmed. Pending for another
// cause already, it stays a restart.
func (it *Intent) addPendingManifest(name string) {
	if slices.Contains(it.Pending, name) {
		return
	}
	it.ManifestChanged = append(it.ManifestChanged, name)
	it.addPending(name)
}

// confirmed forgets a pending component once its restart is confirmed.
func (it *Intent) confirmed(name string) {
	it.ManifestChanged = slices.DeleteFunc(it.ManifestChanged, func(p string) bool { return p == name })
	it.ReloadOnly = slices.DeleteFunc(it.ReloadOnly, func(p string) bool { return p == name })
	it.Pending = slices.DeleteFunc(it.Pending, func(p string) bool { return p == name })
	delete(it.PendingAt, name)
	it.addRestarted(name)
}

// addPending adds components to restart, keeping each once.
func (it *Intent) addPending(names ...string) {
	for _, n := range names {
		if !slices.Contains(it.Pending, n) {
			it.Pending = append(it.Pending, n)
		}
	}
	slices.Sort(it.Pending)
}

// addRestarted records a confirmed restart.
func (it *Intent) addRestarted(name string) {
	if !slices.Contains(it.Restarted, name) {
		it.Restarted = append(it.Restarted, name)
	}
}

// Retire lets lc re-sign what the CA it replaces issued, when lc is the
// new CA of this node's rotation (the switch is made) and that rotation's
// old CA is bundled in lc's file. The daemon's intent is read from its
// state directory: the operator's host path (`run --state-dir`), or
// agent.stateDir below the root. Without such a rotation it does nothing.
func Retire(root *pki.Root, agent config.Agent, lc *rotate.LocalCA) {
	var data []byte
	if agent.StateHostDir != "" {
		b, err := os.ReadFile(filepath.Join(agent.StateHostDir, IntentFile))
		if err != nil {
			return
		}
		data = b
	} else {
		f, err := root.ReadFile(path.Join(agent.StateDir, IntentFile))
		if err != nil {
			return
		}
		data = f.Data
	}
	it := &Intent{}
	if json.Unmarshal(data, it) != nil || it.ID != carotate.Fingerprint(lc.Cert) {
		return
	}
	if b, err := pki.ParseBundle(it.OldCA); err == nil && len(b.Certs) == 1 {
		lc.Retire(b.Certs[0])
	}
}
