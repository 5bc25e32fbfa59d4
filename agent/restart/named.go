package restart

import (
	"context"
	"fmt"
	"path"

	"github.com/sirupsen/logrus"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/logfields"
)

// RestartComponents restarts the named components, not because of a
// renewed certificate but because a file they read changed (a signer's
// flag in a manifest, or certificates renewed by a daemon that died
// before it restarted them): in the usual order, one at a time, static
// pods each behind the Gate, each confirmed healthy before the next. A
// component whose manifest is absent is skipped (no entry). It returns
// every component it restarted or skipped with nil, and the error of the
// others; nothing is rolled back.
func (r *Restarter) RestartComponents(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error {
	return r.restartNamed(ctx, cfg, names, false, ping)
}

// ReloadTrust is RestartComponents for components whose trust bundles
// (and nothing else) changed: one that loads them by itself (the
// kube-apiserver) is confirmed, without a restart, once it shows them in
// its TLS handshake (see reloaded); the others, or one that does not show
// them within restart.reloadWait, are restarted.
func (r *Restarter) ReloadTrust(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error {
	return r.restartNamed(ctx, cfg, names, true, ping)
}

// ConfirmRestarted confirms components the kubelet restarts by itself
// because their static pod manifest changed (a CA rotation's signer
// flag): after the kubelet's file check period (1.5 ×
// restart.fileCheckFrequency, as for certagent's own restarts) each must
// be healthy for restart.settle within restart.timeout. They are not
// restarted again; a component whose manifest is absent is skipped (nil).
func (r *Restarter) ConfirmRestarted(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]error{}
	for _, n := range names {
		out[n] = fmt.Errorf("no static pod %q", n)
	}
	for _, comp := range components(cfg) {
		if _, asked := out[comp.Name]; !asked || comp.Unit != "" {
			continue
		}
		if !r.exists(path.Join(cfg.Restart.ManifestsDir, comp.Manifest)) {
			out[comp.Name] = nil
			continue
		}
		select {
		case <-ctx.Done():
			out[comp.Name] = ctx.Err()
			continue
		case <-r.Clock.After(cfg.Restart.FileCheckDuration + cfg.Restart.FileCheckDuration/2):
		}
		err := r.settle(ctx, cfg, comp, nil, ping)
		r.note(comp.Name, api.ActionRestart, err)
		fields := logrus.Fields{"COMPONENT": comp.Name, "MESSAGE_ID": logfields.MsgRestartDone}
		if err != nil {
			fields["MESSAGE_ID"], fields["REASON"] = logfields.MsgRestartFailed, err.Error()
			r.Log.WithFields(fields).Error("not healthy after the kubelet restarted it for its changed manifest")
		} else {
			r.Log.WithFields(fields).Info("healthy after the kubelet restarted it for its changed manifest")
		}
		out[comp.Name] = err
	}
	return out
}

func (r *Restarter) restartNamed(ctx context.Context, cfg *config.Config, names []string, trustOnly bool, ping func()) map[string]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]error{}
	for _, comp := range components(cfg) {
		if !want[comp.Name] {
			continue
		}
		delete(want, comp.Name)
		if comp.Unit == "" && !r.exists(path.Join(cfg.Restart.ManifestsDir, comp.Manifest)) {
			out[comp.Name] = nil
			continue
		}
		if trustOnly && len(comp.ClientCAFlags) > 0 {
			err := r.reloaded(ctx, cfg, comp, ping)
			if err == nil {
				r.note(comp.Name, api.ActionReload, nil)
				r.Log.WithFields(logrus.Fields{"COMPONENT": comp.Name, "MESSAGE_ID": logfields.MsgRestartDone}).
					Info("loaded the changed trust bundles by itself: not restarted")
				out[comp.Name] = nil
				continue
			}
			r.Log.WithFields(logrus.Fields{"COMPONENT": comp.Name, "REASON": err.Error()}).Info("the changed trust bundles do not show: restarting")
		}
		release := func() {}
		if comp.Unit == "" && r.Gate != nil {
			rel, err := r.Gate.Acquire(ctx, cfg, comp.Name, ping)
			if err != nil {
				out[comp.Name] = fmt.Errorf("no turn to restart %s: %w", comp.Name, err)
				continue
			}
			release = rel
		}
		err := r.restartOne(ctx, cfg, comp, nil, ping)
		release()
		r.note(comp.Name, api.ActionRestart, err)
		fields := logrus.Fields{"COMPONENT": comp.Name, "UNIT": comp.Unit, "MESSAGE_ID": logfields.MsgRestartDone}
		if err != nil {
			fields["MESSAGE_ID"], fields["REASON"] = logfields.MsgRestartFailed, err.Error()
			r.Log.WithFields(fields).Error("restart to load changed trust bundles failed")
		} else {
			r.Log.WithFields(fields).Info("restarted to load changed trust bundles")
		}
		out[comp.Name] = err
	}
	for n := range want {
		out[n] = fmt.Errorf("no component %q", n)
	}
	return out
}
