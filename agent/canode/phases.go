package canode

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
)

// trust: every bundle that holds the old CA holds the new one after it.
func (s *step) trust(ctx context.Context) {
	if !s.toSigner(ctx) {
		return
	}
	s.editBundles(ctx, func(b ca.Bundle) (*rotate.TrustEdit, error) { return b.Add(s.old, s.next) })
}

// finish: the old CA leaves every bundle; the staged new CA files go.
func (s *step) finish(ctx context.Context) {
	cfg := s.in.Config
	p := ca.PathsOf(cfg.PKIDir, s.stem)
	// The CA's own file may lose the old CA only once the signer is the
	// new one: otherwise the key would lose its certificate.
	signer := s.hasCAKey()
	if signer && !s.signerIsNext() {
		s.problems = append(s.problems, fmt.Sprintf("%s still signs with the old CA: the reissue phase did not switch it", p.Cert))
		return
	}
	// Nothing leaves a bundle while a certificate here still needs the
	// old CA to be trusted.
	all := make([]ca.Leaf, 0, len(s.in.Leaves))
	for _, l := range s.in.Leaves {
		all = append(all, l.Leaf)
	}
	still, probs := ca.IssuedBy(s.n.Root, all, s.old)
	for _, p := range probs {
		// A certificate that cannot be read may come from the old CA:
		// blocked, not in progress, until it is readable again.
		s.problems = append(s.problems, fmt.Sprintf("cannot tell whether %v comes from the old CA; the old CA leaves the bundles only once every certificate here can be read", p))
	}
	if len(still) > 0 {
		s.problems = append(s.problems, "still issued by the old CA: "+strings.Join(still, ", ")+"; the old CA leaves the bundles only once no certificate here comes from it")
	}
	if len(s.problems) > 0 {
		return
	}
	s.editBundles(ctx, func(b ca.Bundle) (*rotate.TrustEdit, error) { return b.Remove(s.old) })
	if signer && len(s.problems) == 0 && len(s.left) == 0 {
		// The copies stay in a directory of their own, whatever pass
		// (or crash) the bundles changed in.
		keep := path.Join(cfg.Renewal.BackupDir, "ca-rotation-"+s.in.Cluster.ID[:16])
		if err := ca.Unstage(s.n.Root, cfg.PKIDir, s.stem, s.next, keep); err != nil {
			s.problems = append(s.problems, err.Error())
		}
	}
}

// editBundles finds the bundles that hold the old CA, edits them in one
// transaction under the renewal lock (the intent, with the components
// that read them, saved first), and returns the transaction's backup
// directory ("" when nothing changed).
func (s *step) editBundles(ctx context.Context, edit func(ca.Bundle) (*rotate.TrustEdit, error)) string {
	cfg := s.in.Config
	bundles, problems := ca.Find(s.n.Root, s.sources(), s.old)
	for _, p := range problems {
		s.problems = append(s.problems, p.Error())
	}
	var edits []rotate.TrustEdit
	var readers []string
	reloads := map[string]bool{} // reader -> it reloads every changed file it reads
	for _, b := range bundles {
		e, err := edit(b)
		if err != nil {
			s.problems = append(s.problems, err.Error())
			continue
		}
		if e != nil {
			edits = append(edits, *e)
			for _, r := range s.readers(b.Path, b.Resolved) {
				ok, seen := reloads[r]
				reloads[r] = (ok || !seen) && r == "kube-apiserver" && s.apiserverReloads(b.Path, b.Resolved)
				readers = append(readers, r)
			}
		}
	}
	if len(edits) == 0 {
		return ""
	}
	for _, r := range readers {
		s.it.addPendingReload(r, reloads[r])
	}
	if err := s.it.save(s.n.StateDir); err != nil {
		s.problems = append(s.problems, err.Error())
		return ""
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	lock, err := rotate.Acquire(lctx, s.n.Root, cfg.Renewal.BackupDir)
	cancel()
	if err != nil {
		s.left = append(s.left, fmt.Sprintf("%d trust bundles to edit (%v)", len(edits), err))
		return ""
	}
	defer lock.Unlock()
	results, _ := rotate.RewriteTrust(ctx, s.opts(), edits)
	backup := ""
	for i, r := range results {
		if r.Err != nil {
			s.problems = append(s.problems, fmt.Sprintf("%s: %v", edits[i].Path, r.Err))
		} else {
			backup = r.Backup
		}
	}
	return backup
}

func (s *step) opts() rotate.Options {
	cfg := s.in.Config
	return rotate.Options{Root: s.n.Root, BackupDir: cfg.Renewal.BackupDir, KeepBackups: cfg.Renewal.KeepBackups, Now: s.in.Now, Hooks: s.n.Hooks}
}

// reissue: the bundles trusted, then on a node with the CA key, the signer switch (the controller
// manager restarted so that its signer is the new CA); then every
// certificate the old CA issued is renewed: from the local CA first,
// through the cluster once those are done.
func (s *step) reissue(ctx context.Context) {
	// Trust first, should this node have missed the phase (a no-op once
	// every bundle holds the new CA).
	s.trust(ctx)
	if s.hasCAKey() && !ca.IsSwitched(s.n.Root, s.in.Config.PKIDir, s.stem, s.next) && !s.switchSigner(ctx) {
		return
	}
	local, probs := ca.IssuedBy(s.n.Root, s.leaves(false), s.old)
	csr, probs2 := ca.IssuedBy(s.n.Root, s.leaves(true), s.old)
	for _, p := range append(probs, probs2...) {
		s.problems = append(s.problems, fmt.Sprintf("cannot tell whether %v comes from the old CA", p))
	}
	s.fixed()
	if len(local) > 0 {
		// Their users' restarts are recorded before the renewals: a
		// daemon killed after a renewal and before its restart restarts
		// them when it starts again.
		s.it.addPendingAt(s.in.Now, restart.Users(s.in.Config, local)...)
		if err := s.it.save(s.n.StateDir); err != nil {
			s.problems = append(s.problems, err.Error())
			return
		}
		s.out.Renew = local
		s.left = append(s.left, "from the old CA, to re-issue from the local CA: "+strings.Join(local, ", "))
		return
	}
	// Restart the signer (and readers of bundles edited) before the
	// node's requests.
	if len(s.it.Pending) > 0 {
		s.restart(ctx)
	}
	switch {
	case len(csr) > 0 && len(s.it.Pending) == 0:
		s.out.Renew = csr
		s.left = append(s.left, "from the old CA, requested again from the cluster until its signer is the new CA: "+strings.Join(csr, ", "))
	case len(csr) > 0:
		s.left = append(s.left, "from the old CA, to request again once restarted: "+strings.Join(csr, ", "))
	}
}

// switchSigner switches this node's signer to the new CA, the intent
// (with the controller manager to restart) saved first; false when it
// could not.
func (s *step) switchSigner(ctx context.Context) bool {
	cfg := s.in.Config
	p := ca.PathsOf(cfg.PKIDir, s.stem)
	if lc, err := rotate.LoadLocalCA(s.n.Root, s.stem, p.Cert, p.Key); err != nil || !lc.Cert.Equal(s.old) && !lc.Cert.Equal(s.next) {
		why := "not the rotation's old CA"
		if err != nil {
			why = err.Error()
		}
		s.problems = append(s.problems, fmt.Sprintf("%s: %s; certagent switches only the CA being rotated", p.Cert, why))
		return false
	}
	signed, _ := ca.IssuedBy(s.n.Root, s.leaves(false), s.old)
	// The controller manager signs with this CA (kubeadm's "ca"); its
	// kubeconfig's renewal restarts it anyway.
	if s.stem == "ca" && !slices.Contains(signed, "controller-manager.conf") {
		s.it.addPending("kube-controller-manager")
	}
	if err := s.it.save(s.n.StateDir); err != nil {
		s.problems = append(s.problems, err.Error())
		return false
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	lock, err := rotate.Acquire(lctx, s.n.Root, cfg.Renewal.BackupDir)
	cancel()
	if err != nil {
		s.left = append(s.left, "switch the signer ("+err.Error()+")")
		return false
	}
	_, err = ca.Switch(s.opts(), cfg.PKIDir, s.stem, s.next)
	lock.Unlock()
	if err != nil {
		s.problems = append(s.problems, err.Error())
		return false
	}
	return true
}

// leaves lists the scan's certificates certagent renews here: through
// the cluster (csr) or from the local CA.
func (s *step) leaves(csr bool) []ca.Leaf {
	var out []ca.Leaf
	for _, l := range s.in.Leaves {
		if l.CSR == csr && !l.Fixed {
			out = append(out, l.Leaf)
		}
	}
	return out
}

// fixed blocks the phase on a certificate of the old CA that certagent
// does not renew here: the rotation cannot end while it is in use.
func (s *step) fixed() {
	for _, l := range s.in.Leaves {
		if !l.Fixed {
			continue
		}
		if still, _ := ca.IssuedBy(s.n.Root, []ca.Leaf{l.Leaf}, s.old); len(still) > 0 {
			s.problems = append(s.problems, fmt.Sprintf("%s (%s) is from the old CA and certagent does not renew it here (%s): re-issue it from the new CA or remove it", l.Name, l.Path, l.Why))
		}
	}
}

// hasCAKey: this node holds the CA's key (a control-plane node).
func (s *step) hasCAKey() bool {
	_, err := s.n.Root.ReadFile(ca.PathsOf(s.in.Config.PKIDir, s.stem).Key)
	return err == nil
}

// sources are where the node's trust bundles are: the PKI directories,
// the kubeconfigs, the kubelet's client CA file and credential.
func (s *step) sources() ca.Sources {
	cfg := s.in.Config
	src := ca.Sources{Dirs: []string{cfg.PKIDir, path.Join(cfg.PKIDir, "etcd"), cfg.KubernetesDir}, Kubeconfigs: []string{cfg.Kubelet.Kubeconfig}}
	if f := s.clientCAFile(); f != "" {
		src.Files = append(src.Files, f)
	}
	return src
}

// clientCAFile is the kubelet's authentication.x509.clientCAFile ("" when
// none or unreadable).
func (s *step) clientCAFile() string {
	f, err := s.n.Root.ReadFile(s.in.Config.Kubelet.ConfigFile)
	if err != nil {
		return ""
	}
	var kc struct {
		Authentication struct {
			X509 struct {
				ClientCAFile string `json:"clientCAFile"`
			} `json:"x509"`
		} `json:"authentication"`
	}
	if yaml.Unmarshal(f.Data, &kc) != nil {
		return ""
	}
	p := kc.Authentication.X509.ClientCAFile
	if p != "" && !path.IsAbs(p) {
		p = path.Join(path.Dir(s.in.Config.Kubelet.ConfigFile), p)
	}
	return p
}

// staticPods are the control-plane components and their manifests.
var staticPods = [][2]string{{"etcd", "etcd.yaml"}, {"kube-apiserver", "kube-apiserver.yaml"},
	{"kube-controller-manager", "kube-controller-manager.yaml"}, {"kube-scheduler", "kube-scheduler.yaml"}}

// apiserverReloads says whether kube-apiserver's manifest names the trust
// file only in flags whose files it reloads by itself when they change
// (its client CA bundles): then it need not restart for it (see
// restart.Restarter.ReloadTrust). Any other flag, or none, says no.
func (s *step) apiserverReloads(paths ...string) bool {
	f, err := s.n.Root.ReadFile(path.Join(s.in.Config.Restart.ManifestsDir, "kube-apiserver.yaml"))
	if err != nil {
		return false
	}
	// Files these flags name may name the bundle in turn (a webhook's
	// kubeconfig, an authentication config), read once at start: their
	// readers need the restart.
	for _, flag := range configFileFlags {
		if strings.Contains(string(f.Data), "--"+flag+"=") {
			return false
		}
	}
	// Every mention of the file is the value of one of those flags.
	mentions, named := 0, 0
	for _, p := range slices.Compact(slices.Sorted(slices.Values(paths))) {
		if p != "" {
			mentions += strings.Count(string(f.Data), p)
		}
	}
	for _, flag := range restart.APIServerClientCAFlags {
		if v, err := rotate.FlagValue(f.Data, flag); err == nil && slices.Contains(paths, path.Clean(v)) {
			named++
		}
	}
	return named > 0 && named == mentions
}

// configFileFlags are kube-apiserver's flags naming a configuration file
// that can hold a CA file's path.
var configFileFlags = []string{"authorization-webhook-config-file", "authentication-token-webhook-config-file",
	"egress-selector-config-file", "admission-control-config-file", "authentication-config", "authorization-config",
	"tracing-config-file", "audit-webhook-config-file"}

// readers are the components that read a trust file: a static pod whose
// manifest names it, the kubelet for its client CA file, its credential,
// or a file its configuration names.
func (s *step) readers(paths ...string) []string {
	cfg := s.in.Config
	var out []string
	mentions := func(data []byte) bool {
		for _, p := range paths {
			if p != "" && strings.Contains(string(data), p) {
				return true
			}
		}
		return false
	}
	for _, sp := range staticPods {
		if f, err := s.n.Root.ReadFile(path.Join(cfg.Restart.ManifestsDir, sp[1])); err == nil && mentions(f.Data) {
			out = append(out, sp[0])
		}
	}
	kubelet := slices.Contains(paths, cfg.Kubelet.Kubeconfig) || slices.Contains(paths, s.clientCAFile())
	if f, err := s.n.Root.ReadFile(cfg.Kubelet.ConfigFile); err == nil && mentions(f.Data) {
		kubelet = true
	}
	if kubelet {
		out = append(out, "kubelet")
	}
	return out
}
