package inventory

import (
	"fmt"
	"path"
	"slices"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/certagent/certagent/agent/config"
)

var stateRank = map[State]int{
	StateOK: 0, StateRenewalDue: 1, StateExpiring: 1, StateKeyMissing: 2,
	StateKeyMismatch: 3, StateNotYetValid: 4, StateExpired: 5,
}

func worse(a, b State) State {
	if stateRank[b] > stateRank[a] {
		return b
	}
	return a
}

// assemble dedupes what was found, links each certificate to its issuer
// and fills the report's lists.
func (s *scanner) assemble(rep *Report, all []*found) {
	// A file reached directly wins over the same file reached through a
	// kubeconfig, which is then listed in UsedBy.
	first := func(i, j int) bool {
		ri, rj := all[i].info.Kind == KindKubeconfigReference, all[j].info.Kind == KindKubeconfigReference
		if ri != rj {
			return rj
		}
		return all[i].order < all[j].order
	}
	if !sort.SliceIsSorted(all, first) {
		sort.SliceStable(all, first)
	}
	byID := make(map[string]*found, len(all))
	byPath := make(map[string]*found, len(all))
	var kept []*found
	for _, fd := range all {
		prev, ok := byID[fd.identity]
		if !ok || fd.identity == "" {
			// A kubeconfig naming a file that is scanned itself (kubelet.conf
			// and kubelet-client-current.pem) is the same certificate even
			// when a symlink swap between the two reads made their resolved
			// files differ.
			prev, ok = byPath[fd.info.Path], fd.info.Kind == KindKubeconfigReference && byPath[fd.info.Path] != nil
		}
		if ok {
			// The same file reached twice, typically kubelet.conf pointing
			// at kubelet-client-current.pem: one entry, both users named.
			user := fd.info.Name
			if fd.info.Kubeconfig != "" {
				user = fd.info.Kubeconfig
			}
			prev.ownInfo()
			prev.info.UsedBy = append(prev.info.UsedBy, user)
			if p, bad := foldedKeyProblem(prev, fd); bad && fd.info.Kind == KindKubeconfigReference {
				rep.Problems = append(rep.Problems, p)
			}
			continue
		}
		byID[fd.identity] = fd
		if fd.info.Kind != KindKubeconfigReference && fd.info.Kind != KindKubeconfigEmbedded {
			byPath[fd.info.Path] = fd
		}
		kept = append(kept, fd)
	}
	// The longest lifetime among the leaves each authority signed.
	longest := map[*authority]time.Duration{}
	for _, fd := range kept {
		if fd.issuer != nil && !fd.info.IsCA {
			if l := fd.info.NotAfter.Sub(fd.info.NotBefore); l > longest[fd.issuer] {
				longest[fd.issuer] = l
			}
		}
	}
	for _, fd := range kept {
		s.finish(fd, rep)
		if fd.info.IsCA {
			s.assessCA(fd.info, longest[s.authorityOf(fd.info)])
			rep.Authorities = append(rep.Authorities, fd.info)
		} else {
			rep.Certificates = append(rep.Certificates, fd.info)
		}
	}
	seen := map[string]bool{}
	for _, a := range s.authorities {
		if a.bundled && !seen[a.info.Path+a.info.Name] {
			seen[a.info.Path+a.info.Name] = true
			s.assess(a.info, false, rep)
			rep.Authorities = append(rep.Authorities, a.info)
		}
	}
	for _, info := range rep.ClusterCAs {
		s.assess(info, false, rep)
	}
	s.longest = longest
	if s.cache != nil {
		s.other = slices.Clone(rep.Problems[s.fixed:])
	}
	if rep.Certificates == nil {
		rep.Certificates = []*Certificate{}
	}
	if rep.Authorities == nil {
		rep.Authorities = []*Certificate{}
	}
	if rep.KeyPairs == nil {
		rep.KeyPairs = []*KeyPair{}
	}
	if rep.Problems == nil {
		rep.Problems = []Problem{}
	}
	sortReport(rep)
}

// finish links fd to its issuer and assesses it; a cached leaf is then
// reported as its previous Certificate when nothing but the residual
// seconds changed.
func (s *scanner) finish(fd *found, rep *Report) {
	shared := fd.shared
	if shared { // filled in on the scan's scratch copy, kept only when new
		s.scratch = *fd.info
		s.scratch.UsedBy, s.scratch.Warnings = slices.Clip(s.scratch.UsedBy), slices.Clip(s.scratch.Warnings)
		fd.info, fd.shared = &s.scratch, false
	}
	s.link(fd)
	s.assess(fd.info, fd.expectKey, rep)
	if fd.last != nil {
		fd.info = fd.last.settle(fd.info, shared)
	}
}

// ownInfo gives fd a Certificate of its own to fill in when its info is
// a cached template's: a copy whose lists are clipped, so that an append
// never writes into the template's.
func (fd *found) ownInfo() {
	if fd.shared {
		c := *fd.info
		c.UsedBy, c.Warnings = slices.Clip(c.UsedBy), slices.Clip(c.Warnings)
		fd.info, fd.shared = &c, false
	}
}

// settle returns the Certificate to report for a cached leaf assessed as
// info: the one reported last time when every field but the residual
// seconds is the same, else info, kept for next time. scratch says info
// is the scan's scratch copy, which is copied before it is kept.
func (l *lastInfo) settle(info *Certificate, scratch bool) *Certificate {
	if prev := l.p.Load(); prev != nil && SameButResidual(prev, info) {
		return prev
	}
	if scratch {
		c := *info
		info = &c
	}
	l.p.Store(info)
	return info
}

func (s *scanner) authorityOf(info *Certificate) *authority {
	for _, a := range s.authorities {
		if a.info == info {
			return a
		}
	}
	return nil
}

// link records the issuer and decides the renewal path.
func (s *scanner) link(fd *found) {
	info := fd.info
	if a := fd.issuer; a != nil {
		info.CAName, info.CAPath = a.info.Name, a.info.Path
		info.CAKeyPresent = a.keyOK || a.partner
		info.ExternallyManaged = !a.keyHere && !a.bundled
	}
	switch {
	case info.IsCA:
		info.RenewalPath = RenewNone
	case info.Name == "kubelet.crt" && s.cfg.Kubelet.ServingCertificate == config.ServingCSR:
		// Whoever signed it last (itself, or the cluster CA through an
		// earlier CSR), the configuration says where the next one comes from.
		info.RenewalPath = RenewCSR
	case info.Name == "kubelet.crt" && s.cfg.Kubelet.ServingCertificate == config.ServingSelfSigned && fd.issuer != nil && fd.issuer.bundled:
		info.RenewalPath = RenewSelfSigned
	case info.Name == "kubelet-client-current" || info.Name == "kubelet-serving" || fd.csr:
		info.RenewalPath = RenewCSR
	case fd.issuer != nil && (fd.issuer.keyHere && !fd.issuer.bundled || fd.issuer.partner):
		// A CA key that is here but unusable (mismatched, unreadable) still
		// means local renewal: it fails with the reason, not silently.
		info.RenewalPath = RenewLocalCA
		if why := s.refuseLocalCA(fd); why != "" {
			info.RenewalPath, info.LeftAlone = RenewRefused, why
			info.Warnings = append(info.Warnings, "certagent leaves it alone: "+why)
		}
	case fd.nodeClient:
		info.RenewalPath = RenewCSR
	case fd.issuer != nil && fd.issuer.bundled:
		info.RenewalPath = RenewNone
		msg := "self-signed with a bundled CA (the kubelet's own kubelet.crt?): nothing renews it"
		if info.Name == "kubelet.crt" {
			msg += " (kubelet.servingCertificate: selfSigned or csr would)"
		}
		info.Warnings = append(info.Warnings, msg)
	case fd.issuer == nil:
		info.RenewalPath = RenewExternal
		info.Warnings = append(info.Warnings, "issuer not found on this node: certagent cannot renew it")
	default:
		info.RenewalPath = RenewExternal
		info.Warnings = append(info.Warnings, s.message("CA %s has no private key here (externally managed): certagent will not renew it", info.CAName))
	}
	if a := fd.issuer; a != nil && !info.IsCA && !a.bundled {
		life := info.NotAfter.Sub(info.NotBefore)
		if a.info.NotAfter.Before(s.now.Add(life)) {
			info.Warnings = append(info.Warnings, fmt.Sprintf("CA %s expires %s, before a renewal's full %s lifetime: renewals will be cut short",
				a.info.Name, a.info.NotAfter.Format(time.RFC3339), Human(life)))
		}
	}
}

// Residual is a certificate's residual seconds at time at: NotAfter minus
// at, in whole seconds toward zero (negative once expired).
func Residual(notAfter, at time.Time) int64 { return int64(notAfter.Sub(at) / time.Second) }

// assess sets residual time, the renewal window and the state.
func (s *scanner) assess(info *Certificate, expectKey bool, rep *Report) {
	info.ResidualSeconds = Residual(info.NotAfter, s.now)
	life := info.NotAfter.Sub(info.NotBefore)
	info.RenewalWindowStart = info.NotBefore.Add(life * 7 / 10)
	if rb := s.cfg.RenewBeforeDuration; rb > 0 {
		info.RenewalWindowStart = info.NotAfter.Add(-rb)
	}
	st := StateOK
	if !s.now.Before(info.RenewalWindowStart) {
		st = StateRenewalDue
		if info.IsCA {
			st = StateExpiring
		}
	}
	st = worse(st, keyState(info.Key, expectKey))
	if k := info.Key; k != nil {
		switch {
		case k.Error != "":
			rep.Problems = append(rep.Problems, Problem{Path: k.Path, Name: info.Name, Error: k.Error})
		case k.Present && k.Matches && k.Mode != "" && modeOpen(k.Mode):
			info.Warnings = append(info.Warnings, fmt.Sprintf("private key %s is readable by group or others (mode %s)", k.Path, k.Mode))
		}
	}
	if s.now.Before(info.NotBefore) {
		st = worse(st, StateNotYetValid)
	}
	if s.now.After(info.NotAfter) {
		st = worse(st, StateExpired)
	}
	info.State = st
}

// keyState is the state a certificate's private key, as found, gives it:
// key-missing (unreadable, unparsable, or absent where one belongs),
// key-mismatch, or ok.
func keyState(k *KeyInfo, expectKey bool) State {
	switch {
	case k != nil && k.Error != "":
		return StateKeyMissing
	case k != nil && k.Present && !k.Matches:
		return StateKeyMismatch
	case expectKey && (k == nil || !k.Present):
		return StateKeyMissing
	}
	return StateOK
}

// foldedKeyProblem checks the client key of a kubeconfig whose certificate
// is reported under another entry (kept) and listed in its usedBy: the
// entry's state says nothing about a key that is not its own, so a wrong
// one is a problem of that entry, naming the kubeconfig and user.
func foldedKeyProblem(kept, ref *found) (Problem, bool) {
	k := ref.info.Key
	st := keyState(k, ref.expectKey)
	if st == StateOK || (k != nil && kept.info.Key != nil && k.Path == kept.info.Key.Path) {
		return Problem{}, false // fine, or the entry's own key, assessed with it
	}
	key := "client key"
	if k != nil {
		key += " " + k.Path
		if k.Path == ref.info.Kubeconfig {
			key = "client-key-data"
		}
	}
	why := fmt.Sprintf("no client key for client certificate %s", ref.info.Path)
	switch {
	case k != nil && k.Error != "":
		why = fmt.Sprintf("%s: %s", key, k.Error)
	case st == StateKeyMismatch:
		why = fmt.Sprintf("%s does not match client certificate %s", key, ref.info.Path)
	case k != nil:
		why = fmt.Sprintf("%s not found (client certificate %s)", key, ref.info.Path)
	}
	return Problem{Path: ref.info.Kubeconfig, Name: kept.info.Name, Error: fmt.Sprintf("user %q: %s", ref.info.User, why)}, true
}

// assessCA flags an authority that expires before the longest-lived leaf
// it signed could be renewed for a full lifetime. CAs are never renewed.
func (s *scanner) assessCA(info *Certificate, longestLeaf time.Duration) {
	if longestLeaf > 0 && info.NotAfter.Before(s.now.Add(longestLeaf)) {
		info.State = worse(info.State, StateExpiring)
		info.Warnings = append(info.Warnings, fmt.Sprintf("expires within one lifetime (%s) of the certificates it signs; certagent never renews CAs", Human(longestLeaf)))
	}
}

// message formats a warning once per scan and argument: thousands of
// certificates of one CA share one string. assemble runs on one goroutine.
func (s *scanner) message(format, arg string) string {
	k := [2]string{format, arg}
	if m, ok := s.messages[k]; ok {
		return m
	}
	if s.messages == nil {
		s.messages = map[[2]string]string{}
	}
	m := fmt.Sprintf(format, arg)
	s.messages[k] = m
	return m
}

func modeOpen(m string) bool {
	var v uint32
	_, err := fmt.Sscanf(m, "%o", &v)
	return err == nil && v&0o077 != 0
}

// Human prints a duration the way kubectl and kubeadm do ("364d", "9y"),
// with a minus sign for the past.
func Human(d time.Duration) string {
	if d < 0 {
		return "-" + duration.HumanDuration(-d)
	}
	return duration.HumanDuration(d)
}

// privilegedGroups are groups whose members may do anything in a cluster.
// A certificate naming one is re-signed only where kubeadm keeps it.
var privilegedGroups = map[string]bool{"system:masters": true, "kubeadm:cluster-admins": true}

// privilegedFiles are kubeadm's certificates that hold a privileged
// identity, with the directory each lives in: the kubeconfigs admin.conf
// and super-admin.conf, and apiserver-kubelet-client, which kubeadm puts in
// kubeadm:cluster-admins.
func (s *scanner) privilegedFile(info *Certificate) bool {
	switch info.Name {
	case "admin.conf", "super-admin.conf":
		// The kubeconfig itself, or the files it refers to (which must
		// pass the writers check like every other file).
		kc := path.Join(s.cfg.KubernetesDir, info.Name)
		return info.Path == kc || info.Kubeconfig == kc
	case "apiserver-kubelet-client":
		return info.Path == path.Join(s.cfg.PKIDir, "apiserver-kubelet-client.crt")
	}
	return false
}

// refuseLocalCA says why certagent must not re-sign a certificate from a
// local CA key, or "" when it may. certagent runs as root and holds the CA
// keys, so a file it re-signs must not be one that somebody else could have
// placed or chosen: re-signing would mint that somebody an identity.
func (s *scanner) refuseLocalCA(fd *found) string {
	info := fd.info
	for _, g := range fd.groups {
		if privilegedGroups[g] && !s.privilegedFile(info) {
			return fmt.Sprintf("its subject is in the privileged group %s, which certagent renews only in kubeadm's own files "+
				"(admin.conf, super-admin.conf, apiserver-kubelet-client)", g)
		}
	}
	if fd.extra && !matchAny(s.cfg.Renewal.LocalCAPaths, info.Path) {
		return "a configured path: re-signing it from a local CA needs renewal.localCAPaths to name it"
	}
	files := []string{info.Path}
	if info.Key != nil && info.Key.Present && info.Key.Path != info.Path {
		files = append(files, info.Key.Path)
	}
	why := s.writersOf(files)
	fd.writers = &writersCheck{cand: fd.order, files: files, why: why}
	if why != "" {
		return why + ": someone who is not root could have chosen what certagent would sign"
	}
	return ""
}

// writersOf says who other than root could have written one of files
// (pki.Root.Writers), or "".
func (s *scanner) writersOf(files []string) string {
	s.writersMu.Lock()
	defer s.writersMu.Unlock()
	for _, f := range files {
		if why := s.root.Writers(f, s.writers); why != "" {
			return why
		}
	}
	return ""
}

// matchAny reports whether p matches one of the globs.
func matchAny(globs []string, p string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, p); ok || g == p {
			return true
		}
	}
	return false
}
