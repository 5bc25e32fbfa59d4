// Package restart reloads what uses a renewed certificate (systemd units
// over D-Bus, static pods by moving their manifest) and proves, with TLS
// probes, that the new certificate is served; a component that does not
// come up with it gets the old one back.
package restart

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/systemd"
)

// Renewed is a certificate that was just renewed, with a way back.
type Renewed struct {
	Cert      *inventory.Certificate // as it was before the renewal
	NewSerial string
	// Rollback puts the old files back.
	Rollback func() error
}

// Units restarts systemd units (systemd.Units over D-Bus in production).
type Units interface {
	Restart(ctx context.Context, unit string) error
}

// served is a TLS endpoint that should present a certificate on disk.
// Client, when set, names a client key pair below the PKI directory
// (without .crt/.key) that the probe presents, for endpoints that require
// client certificates (etcd).
type served struct {
	Address, Cert, Client string
}

// component is something that must reload renewed certificates.
type component struct {
	Name     string
	Unit     string // a systemd unit, or
	Manifest string // a static pod manifest file name
	Healthz  string
	// HealthzAuth: an answer of 401 or 403 from Healthz passes (the
	// server is up; its readiness is not for anonymous requests).
	HealthzAuth bool
	Served      []served
	Certs       []string
	// ClientCAFlags are the flags of its manifest (the first required)
	// naming the trust bundles it reloads by itself when they change, and
	// names, as the CAs it accepts, in its first served endpoint's TLS
	// handshake: a change of them alone needs no restart once it shows.
	ClientCAFlags []string
	// Reloads are the certificates of Certs it reads anew by itself when
	// they change (for its next TLS handshake): renewals of these alone
	// need no restart once a served one shows its new serial (see
	// loadedByItself).
	Reloads []string
}

// APIServerClientCAFlags are kube-apiserver's flags naming the client CA
// bundles it reloads by itself (--client-ca-file first: required).
var APIServerClientCAFlags = []string{"client-ca-file", "requestheader-client-ca-file"}

// components lists, in restart order (etcd before kube-apiserver), what
// uses which certificate.
func components(cfg *config.Config) []component {
	ep := cfg.Restart.Endpoints
	out := []component{
		// etcd reads its server and peer key pairs at every handshake;
		// the healthcheck client is kubeadm's, not etcd's.
		{Name: "etcd", Manifest: "etcd.yaml", Certs: []string{"etcd-server", "etcd-peer", "etcd-healthcheck-client"},
			Served:  []served{{ep["etcd"], "etcd-server", etcdProbeClient}, {ep["etcd-peer"], "etcd-peer", etcdProbeClient}},
			Reloads: []string{"etcd-server", "etcd-peer", "etcd-healthcheck-client"}},
		// kube-apiserver watches its serving pair, reads the kubelet client
		// pair for each new connection to a kubelet, and watches the front
		// proxy's; its etcd client pair is read when it dials etcd, which
		// a running server does only after a connection breaks: that
		// renewal takes a restart.
		{Name: "kube-apiserver", Manifest: "kube-apiserver.yaml", Certs: []string{"apiserver", "apiserver-kubelet-client", "apiserver-etcd-client", "front-proxy-client"},
			Served: []served{{ep["kube-apiserver"], "apiserver", ""}},
			// /livez, kubeadm's liveness probe: a restarted server that
			// exits (as one does that cannot reach etcd) is not confirmed;
			// kubeadm lets anonymous requests read it.
			Healthz: "https://" + ep["kube-apiserver"] + "/livez", HealthzAuth: true,
			ClientCAFlags: APIServerClientCAFlags,
			Reloads:       []string{"apiserver", "apiserver-kubelet-client", "front-proxy-client"}},
		{Name: "kube-controller-manager", Manifest: "kube-controller-manager.yaml", Certs: []string{"controller-manager.conf"},
			Healthz: "https://" + ep["kube-controller-manager"] + "/healthz"},
		{Name: "kube-scheduler", Manifest: "kube-scheduler.yaml", Certs: []string{"scheduler.conf"},
			Healthz: "https://" + ep["kube-scheduler"] + "/healthz"},
		{Name: "kubelet", Unit: cfg.Restart.KubeletUnit, Healthz: cfg.Restart.KubeletHealthz,
			Certs:  []string{"kubelet.conf", "kubelet-client-current", "kubelet-serving", "kubelet.crt"},
			Served: []served{{ep["kubelet"], "kubelet-serving", ""}}},
	}
	for _, u := range cfg.Restart.Units {
		c := component{Name: u.Unit, Unit: u.Unit, Healthz: u.Healthz, Certs: u.Certificates}
		if u.Address != "" {
			c.Served = []served{{u.Address, u.Certificates[0], ""}}
		}
		// One unit restarts once: merge with a component of the same unit.
		merged := false
		for i := range out {
			if out[i].Unit == u.Unit {
				out[i].Certs = append(out[i].Certs, c.Certs...)
				out[i].Served = append(out[i].Served, c.Served...)
				if c.Healthz != "" {
					out[i].Healthz = c.Healthz
				}
				merged = true
			}
		}
		if !merged {
			out = append(out, c)
		}
	}
	return out
}

// Gate lets this node take its turn, among the control-plane nodes of
// the cluster, before it restarts a static pod (coord.Coordinator).
type Gate interface {
	// Acquire waits for the turn and returns what ends it; an error (ctx
	// done) means no turn: nothing may be restarted.
	// cfg is the configuration of the restart.
	Acquire(ctx context.Context, cfg *config.Config, component string, ping func()) (release func(), err error)
}

// Restarter restarts components after renewals, one at a time for the
// whole node, and proves the new certificate is served; when it is not,
// it rolls the certificate back and restarts again.
type Restarter struct {
	Root  *pki.Root
	Units Units
	Clock clock.Clock
	Log   *logrus.Logger
	// Gate, when set, is passed before every static pod restart.
	Gate Gate

	mu     sync.Mutex // serialises restarts; guards status
	status map[string]*api.ComponentStatus
}

// Restart reloads every component that uses a renewed certificate:
// batched (one restart per component), in order, each confirmed healthy
// before the next. ping, when set, is called while a restart waits (the
// agent feeds its watchdog). It returns the certificates that were rolled
// back.
func (r *Restarter) Restart(ctx context.Context, cfg *config.Config, renewed []Renewed, ping func()) map[string]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	current := map[string]string{}
	for _, rn := range renewed {
		if rn.NewSerial != "" { // "": no serial to expect (tests)
			current[rn.Cert.Name] = rn.NewSerial
		}
	}
	failed := map[string]error{}
	for _, comp := range components(cfg) {
		var mine []Renewed
		for _, rn := range renewed {
			for _, n := range comp.Certs {
				if rn.Cert.Name == n {
					mine = append(mine, rn)
				}
			}
		}
		if len(mine) == 0 {
			continue
		}
		if comp.Unit == "" && !r.exists(path.Join(cfg.Restart.ManifestsDir, comp.Manifest)) {
			continue // no such static pod on this node
		}
		if r.loadedByItself(ctx, cfg, comp, mine, current, ping) {
			continue
		}
		release := func() {}
		if comp.Unit == "" && r.Gate != nil {
			rel, err := r.Gate.Acquire(ctx, cfg, comp.Name, ping)
			if err != nil {
				// Nothing was restarted: the new certificate stays, and the
				// stale check points at the component.
				r.Log.WithFields(logrus.Fields{"MESSAGE_ID": logfields.MsgRestartFailed, "COMPONENT": comp.Name, "REASON": err.Error()}).
					Error("no turn to restart " + comp.Name + ": not restarted")
				continue
			}
			release = rel
		}
		r.restartConfirmed(ctx, cfg, comp, mine, current, ping, failed)
		release()
	}
	return failed
}

// restartConfirmed restarts one component, and on failure rolls its
// certificates back (recorded in failed) and restarts it again.
func (r *Restarter) restartConfirmed(ctx context.Context, cfg *config.Config, comp component, mine []Renewed, current map[string]string, ping func(), failed map[string]error) {
	err := r.restartOne(ctx, cfg, comp, current, ping)
	r.note(comp.Name, api.ActionRestart, err)
	fields := logrus.Fields{"COMPONENT": comp.Name, "UNIT": comp.Unit}
	if err == nil {
		fields["MESSAGE_ID"] = logfields.MsgRestartDone
		r.Log.WithFields(fields).Info("restarted; the new certificate is served")
		return
	}
	fields["MESSAGE_ID"], fields["REASON"] = logfields.MsgRestartFailed, err.Error()
	if ctx.Err() != nil {
		// The daemon stops: nothing showed the new certificate to be bad.
		r.Log.WithFields(fields).Warn("stopped while confirming the restart of " + comp.Name + ": not rolled back")
		return
	}
	if errors.Is(err, systemd.ErrNoDBus) {
		// Nothing was restarted, so nothing showed the new certificate
		// to be bad: keep it, and let the stale check say what to do.
		r.Log.WithFields(fields).Error("cannot restart " + comp.Name + ": restart it by hand to load the renewed certificate")
		return
	}
	r.Log.WithFields(fields).Error("restart with the new certificate failed: rolling back")
	old := map[string]string{}
	for _, rn := range mine {
		if rn.Rollback != nil {
			if rerr := rn.Rollback(); rerr != nil {
				err = fmt.Errorf("%v; rollback: %w", err, rerr)
			}
		}
		old[rn.Cert.Name] = rn.Cert.Serial
		failed[rn.Cert.Name] = fmt.Errorf("rolled back: %s did not come up with it: %w", comp.Name, err)
	}
	if rerr := r.restartOne(ctx, cfg, comp, old, ping); rerr != nil {
		r.Log.WithFields(logrus.Fields{"MESSAGE_ID": logfields.MsgRestartFailed, "COMPONENT": comp.Name, "REASON": rerr.Error()}).Error("restart after rollback failed too")
	}
}

func (r *Restarter) exists(node string) bool {
	_, err := os.Stat(r.Root.HostPath(node))
	return err == nil
}

func (r *Restarter) note(name, action string, err error) {
	if r.status == nil {
		r.status = map[string]*api.ComponentStatus{}
	}
	s := r.status[name]
	if s == nil {
		s = &api.ComponentStatus{Name: name}
		r.status[name] = s
	}
	now := r.Clock.Now().UTC()
	s.LastRestart, s.LastResult, s.LastAction = &now, "ok", action
	if err != nil {
		s.LastResult = "failed: " + err.Error()
	}
}

// restartOne restarts a component and waits until it is healthy and
// serves the expected serials (certificate name -> serial).
func (r *Restarter) restartOne(ctx context.Context, cfg *config.Config, comp component, expect map[string]string, ping func()) error {
	if comp.Unit != "" {
		if r.Units == nil {
			return errors.New("no systemd connection")
		}
		rctx, cancel := context.WithTimeout(ctx, cfg.Restart.TimeoutDuration)
		err := r.Units.Restart(rctx, comp.Unit)
		cancel()
		if err != nil {
			return err
		}
	} else if err := r.cyclePod(ctx, cfg, comp.Manifest); err != nil {
		return err
	}
	return r.settle(ctx, cfg, comp, expect, ping)
}

// settle waits until the restarted component is healthy and has stayed
// so for restart.settle, every check in between passing: a component
// that answers and then exits (a crash loop: the controller manager's
// /healthz answers before a controller fails to start) is not confirmed.
func (r *Restarter) settle(ctx context.Context, cfg *config.Config, comp component, expect map[string]string, ping func()) error {
	settle := cfg.Restart.SettleDuration
	if !checked(comp, expect) {
		settle = 0 // nothing to watch stay up
	}
	deadline := r.Clock.Now().Add(cfg.Restart.TimeoutDuration + settle)
	clients := r.clientsOf(cfg, comp) // read once, not at every check
	var up time.Time                  // since when every check passed; zero: not up
	var last error
	for {
		now := r.Clock.Now()
		if last = r.healthy(ctx, comp, expect, clients); last != nil {
			up = time.Time{}
		} else if up.IsZero() {
			up = now
		}
		if last == nil && now.Sub(up) >= settle {
			return nil
		}
		if now.After(deadline) {
			if last == nil {
				last = errors.New("it did not stay up")
			}
			return fmt.Errorf("%s not healthy with the new certificate for %s after %s: %w", comp.Name, cfg.Restart.SettleDuration, cfg.Restart.TimeoutDuration, last)
		}
		if ping != nil {
			ping()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.Clock.After(250 * time.Millisecond):
		}
	}
}

// clientsOf loads the client key pairs comp's served endpoints are
// probed with, by stem.
func (r *Restarter) clientsOf(cfg *config.Config, comp component) map[string]clientPair {
	out := map[string]clientPair{}
	for _, s := range comp.Served {
		if _, ok := out[s.Client]; !ok {
			out[s.Client] = r.clientCert(cfg, s.Client)
		}
	}
	return out
}

// checked reports whether healthy checks anything of comp.
func checked(comp component, expect map[string]string) bool {
	for _, s := range comp.Served {
		if _, ok := expect[s.Cert]; ok {
			return true
		}
	}
	return comp.Healthz != ""
}

// cyclePod recreates a static pod the documented way: the manifest goes
// out of the manifests directory (a dotfile there is ignored) for longer
// than the kubelet's file check period, then back.
func (r *Restarter) cyclePod(ctx context.Context, cfg *config.Config, manifest string) error {
	// The manifests directory is resolved inside the root and held open
	// for both moves.
	dir, err := r.Root.OpenDir(cfg.Restart.ManifestsDir)
	if err != nil {
		return fmt.Errorf("manifests: %w", err)
	}
	defer dir.Close()
	in, out := manifest, ".certagent-"+manifest
	if err := dir.Rename(in, out); err != nil {
		return fmt.Errorf("move %s out: %w", manifest, err)
	}
	wait := cfg.Restart.FileCheckDuration + cfg.Restart.FileCheckDuration/2
	select {
	case <-ctx.Done():
	case <-r.Clock.After(wait):
	}
	// Back in even when cancelled: a control plane is never left without it.
	if err := dir.Rename(out, in); err != nil {
		return fmt.Errorf("move %s back: %w", manifest, err)
	}
	return ctx.Err()
}

// healthy checks the health URL and that every served endpoint of the
// component presents the expected serial.
func (r *Restarter) healthy(ctx context.Context, comp component, expect map[string]string, clients map[string]clientPair) error {
	if comp.Healthz != "" {
		if err := probeHealthz(ctx, comp.Healthz, comp.HealthzAuth); err != nil {
			return err
		}
	}
	for _, s := range comp.Served {
		want, ok := expect[s.Cert]
		if !ok {
			continue
		}
		got, err := servedSerial(ctx, s.Address, clients[s.Client])
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s serves serial %s, want %s", s.Address, got, want)
		}
	}
	return nil
}

// Components lists the names of the components certagent restarts, in
// restart order.
func Components(cfg *config.Config) []string {
	var out []string
	for _, c := range components(cfg) {
		out = append(out, c.Name)
	}
	return out
}

// Users returns the components that use the named certificates, in
// restart order, each once.
func Users(cfg *config.Config, certs []string) []string {
	var out []string
	for _, c := range components(cfg) {
		for _, n := range c.Certs {
			if slices.Contains(certs, n) {
				out = append(out, c.Name)
				break
			}
		}
	}
	return out
}
