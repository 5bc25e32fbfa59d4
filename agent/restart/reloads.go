package restart

import (
	"path"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
)

// Reload is a component that must reload renewed certificates.
type Reload struct {
	Component string
	// Unit is its systemd unit, or Manifest its static pod manifest.
	Unit, Manifest string
	Certificates   []string
	// Present is false for a static pod whose manifest is not on this node.
	Present bool
	// ByItself: the component reads every one of Certificates anew by
	// itself when it changes; a daemon or --restart confirms that by the
	// served serial and restarts it only when that does not show.
	ByItself bool
}

// Reloads maps renewed certificate names onto what must reload them, with
// the daemon's mapping (the order in which the daemon restarts them).
func Reloads(root *pki.Root, cfg *config.Config, names []string) []Reload {
	r := &Restarter{Root: root}
	var out []Reload
	for _, comp := range components(cfg) {
		rl := Reload{Component: comp.Name, Unit: comp.Unit, Manifest: comp.Manifest, Present: true}
		for _, n := range names {
			for _, cn := range comp.Certs {
				if n == cn {
					rl.Certificates = append(rl.Certificates, n)
				}
			}
		}
		if len(rl.Certificates) == 0 {
			continue
		}
		rl.ByItself = byItself(cfg, comp, rl.Certificates)
		if comp.Unit == "" {
			rl.Present = r.exists(path.Join(cfg.Restart.ManifestsDir, comp.Manifest))
		}
		out = append(out, rl)
	}
	return out
}

// Results returns the last restart of each component this Restarter
// restarted, in cfg's restart order.
func (r *Restarter) Results(cfg *config.Config) []api.ComponentStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []api.ComponentStatus
	for _, comp := range components(cfg) {
		if s := r.status[comp.Name]; s != nil {
			out = append(out, *s)
		}
	}
	return out
}
