package restart

import (
	"errors"
	"io/fs"

	"github.com/certagent/certagent/agent/config"
)

// Restored is one static pod manifest that a restart interrupted by a
// crash had left out of the manifests directory.
type Restored struct {
	Manifest string
	// Err is why it was not put back (nil: it was).
	Err error
}

// ManifestsAside reports whether a restart left a manifest moved aside.
func (r *Restarter) ManifestsAside(cfg *config.Config) bool {
	if r.Root == nil {
		return false
	}
	dir, err := r.Root.OpenDir(cfg.Restart.ManifestsDir)
	if err != nil {
		return false
	}
	defer dir.Close()
	for _, comp := range components(cfg) {
		if comp.Manifest == "" {
			continue
		}
		if _, err := dir.Lstat(".certagent-" + comp.Manifest); err == nil {
			return true
		}
	}
	return false
}

// RestoreManifests puts back the manifests a killed restart left moved
// aside (".certagent-<manifest>"), so a crash mid-restart never leaves a
// control plane without a component. Only the control-plane manifests
// certagent itself moves are considered, and one is put back only while
// its name is free: a manifest written there since (by kubeadm or an
// operator) wins, and the moved-aside copy is left for the operator.
func (r *Restarter) RestoreManifests(cfg *config.Config) []Restored {
	if r.Root == nil {
		return nil
	}
	dir, err := r.Root.OpenDir(cfg.Restart.ManifestsDir)
	if err != nil {
		return nil // no manifests directory: a worker
	}
	defer dir.Close()
	var out []Restored
	for _, comp := range components(cfg) {
		if comp.Manifest == "" {
			continue
		}
		aside := ".certagent-" + comp.Manifest
		fi, err := dir.Lstat(aside)
		if err != nil {
			continue
		}
		res := Restored{Manifest: comp.Manifest}
		switch _, err := dir.Lstat(comp.Manifest); {
		case !fi.Mode().IsRegular():
			res.Err = errors.New(aside + " is not a regular file")
		case err == nil:
			res.Err = errors.New(comp.Manifest + " exists again: " + aside + " left for the operator")
		case !errors.Is(err, fs.ErrNotExist):
			res.Err = err
		default:
			if res.Err = dir.Rename(aside, comp.Manifest); res.Err == nil {
				res.Err = dir.Sync()
			}
		}
		out = append(out, res)
	}
	return out
}
