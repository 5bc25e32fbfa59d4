package inventory

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// candidate is a file that may hold certificates, before it is read.
type candidate struct {
	name string // stable name; "" means the path is the name
	path string // node path
	// resolved is set when the path is known to hold no symlinks.
	resolved string
	// keyPath is the separate private key; "" with siblingKey set means
	// "<path without extension>.key if it exists".
	keyPath    string
	siblingKey bool
	expectKey  bool
	kubeconfig bool
	ca         bool // a well-known authority, read before everything else
	keyPair    bool // a bare key pair (sa.key and sa.pub)
	csr        bool // configured for renewal through a CSR
	// explicit candidates were named by the user: a missing file is a problem.
	explicit bool
	// configured: found through the configured paths (a file, a directory
	// or a glob), not in a well-known location.
	configured bool
}

// kubeadmCAs and kubeadmLeaves are the kubeadm names and file stems below
// the PKI directory; kubeadmKubeconfigs live in the Kubernetes directory.
var (
	kubeadmCAs = [][2]string{
		{"ca", "ca"}, {"etcd-ca", "etcd/ca"}, {"front-proxy-ca", "front-proxy-ca"},
	}
	kubeadmLeaves = [][2]string{
		{"apiserver", "apiserver"},
		{"apiserver-etcd-client", "apiserver-etcd-client"},
		{"apiserver-kubelet-client", "apiserver-kubelet-client"},
		{"etcd-healthcheck-client", "etcd/healthcheck-client"},
		{"etcd-peer", "etcd/peer"},
		{"etcd-server", "etcd/server"},
		{"front-proxy-client", "front-proxy-client"},
	}
	kubeadmKubeconfigs = []string{
		"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf",
		"kubelet.conf", "bootstrap-kubelet.conf",
	}
	// kubeletStoreFile matches the kubelet's timestamped and transient
	// store files; the -current.pem symlink stands for them.
	kubeletStoreFile = regexp.MustCompile(`^kubelet-(client|server)-(\d{4}(-\d{2}){5}|updated)\.pem$`)
	certExts         = []string{".crt", ".pem", ".cer", ".cert", ".der"}
)

// discover lists every candidate: the well-known layout first, then other
// certificate files in the same directories, then configured paths.
// Problems are configured paths that do not exist or cannot be listed.
func (s *scanner) discover() ([]candidate, []Problem) {
	cfg := s.cfg
	hint := s.cache.candidates() // as many as last time, most likely
	cs := make([]candidate, 0, hint)
	known := make(map[string]bool, hint)
	add := func(c candidate) {
		if known[c.path] {
			return
		}
		known[c.path] = true
		cs = append(cs, c)
	}
	for _, ca := range kubeadmCAs {
		add(candidate{name: ca[0], path: path.Join(cfg.PKIDir, ca[1]+".crt"),
			keyPath: path.Join(cfg.PKIDir, ca[1]+".key"), ca: true})
	}
	// A CA rotation's new CA, staged next to the CA until it ends.
	for _, ca := range kubeadmCAs {
		add(candidate{name: ca[0] + "-next", path: path.Join(cfg.PKIDir, ca[1]+".next.crt"),
			keyPath: path.Join(cfg.PKIDir, ca[1]+".next.key"), ca: true})
	}
	for _, l := range kubeadmLeaves {
		add(candidate{name: l[0], path: path.Join(cfg.PKIDir, l[1]+".crt"),
			keyPath: path.Join(cfg.PKIDir, l[1]+".key"), expectKey: true})
	}
	add(candidate{name: "sa", path: path.Join(cfg.PKIDir, "sa.key"), keyPair: true})
	for _, k := range kubeadmKubeconfigs {
		add(candidate{name: k, path: path.Join(cfg.KubernetesDir, k), kubeconfig: true, expectKey: true})
	}
	kp := cfg.KubeletPKIDir
	add(candidate{name: "kubelet-client-current", path: path.Join(kp, "kubelet-client-current.pem"), expectKey: true})
	add(candidate{name: "kubelet-serving", path: path.Join(kp, "kubelet-server-current.pem"), expectKey: true})
	add(candidate{name: "kubelet.crt", path: path.Join(kp, "kubelet.crt"), keyPath: path.Join(kp, "kubelet.key"), expectKey: true})

	for _, cc := range cfg.Certificates {
		add(candidate{name: cc.Name, path: cc.CertFile, keyPath: cc.KeyFile, expectKey: true, explicit: true, csr: true})
	}
	var problems []Problem
	// Other files in the well-known directories, named by path.
	for _, dir := range []string{cfg.PKIDir, path.Join(cfg.PKIDir, "etcd"), kp} {
		for _, c := range s.listDir(dir, certExts, nil) {
			if !kubeletStoreFile.MatchString(path.Base(c.path)) {
				add(c)
			}
		}
	}
	for _, c := range s.listDir(cfg.KubernetesDir, []string{".conf"}, nil) {
		c.kubeconfig = true
		add(c)
	}
	for _, p := range cfg.Paths {
		extra, prob := s.expand(p)
		for _, c := range extra {
			c.configured = true
			add(c)
		}
		problems = append(problems, prob...)
	}
	out := cs[:0]
	for _, c := range cs {
		if !s.excluded(c.path) {
			out = append(out, c)
		}
	}
	s.cache.setCandidates(len(cs))
	return out, problems
}

// expand turns one configured path, directory or glob into candidates.
func (s *scanner) expand(p string) ([]candidate, []Problem) {
	if strings.ContainsAny(p, "*?[") {
		matches, err := filepath.Glob(s.root.HostPath(p))
		if err != nil {
			return nil, []Problem{{Path: p, Error: "bad glob: " + err.Error()}}
		}
		sort.Strings(matches)
		var cs []candidate
		for _, m := range matches {
			np, ok := s.root.NodePath(m)
			if !ok {
				continue
			}
			if fi, err := os.Stat(m); err == nil && fi.IsDir() {
				continue
			}
			cs = append(cs, candidate{path: np, siblingKey: true, explicit: true})
		}
		return cs, nil
	}
	resolved, err := s.root.Resolve(p)
	if err != nil {
		return nil, []Problem{{Path: p, Error: "configured path: " + err.Error()}}
	}
	fi, err := os.Stat(s.root.HostPath(resolved))
	if err != nil {
		return nil, []Problem{{Path: p, Error: "configured path: " + err.Error()}}
	}
	if !fi.IsDir() {
		return []candidate{{path: p, siblingKey: true, explicit: true}}, nil
	}
	var prob []Problem
	cs := s.listDir(p, append(certExts, ".conf", ".kubeconfig"), func(err error) {
		prob = append(prob, Problem{Path: p, Error: "list directory: " + err.Error()})
	})
	return cs, prob
}

// listDir returns the files in a node directory whose names end in one of
// exts. A directory that does not exist yields nothing; other listing
// errors go to onErr when it is set.
func (s *scanner) listDir(dir string, exts []string, onErr func(error)) []candidate {
	if cs, ok := s.cachedListing(dir, exts); ok {
		return cs
	}
	resolved, err := s.root.Resolve(dir)
	if err != nil {
		if onErr != nil && !errors.Is(err, fs.ErrNotExist) {
			onErr(err)
		}
		return nil
	}
	entries, err := os.ReadDir(s.root.HostPath(resolved))
	if err != nil {
		if onErr != nil {
			onErr(err)
		}
		return nil
	}
	names := make(map[string]bool, len(entries))
	for _, e := range entries {
		names[e.Name()] = true
	}
	var cs []candidate
	for _, e := range entries {
		// The listing already says whether "<stem>.key" exists: no need
		// to look for it file by file.
		if c, ok := listed(dir, resolved, e.Name(), e.Type(), names[sibling(e.Name())], exts); ok {
			cs = append(cs, c)
		}
	}
	s.keepListing(dir, resolved, exts, cs)
	return cs
}

// listed is the candidate for an entry of a listed directory, if it is one.
func listed(dir, resolved, name string, typ fs.FileMode, keyHere bool, exts []string) (candidate, bool) {
	if typ.IsDir() || !hasExt(name, exts) || strings.HasPrefix(name, ".") {
		return candidate{}, false
	}
	c := candidate{path: path.Join(dir, name)}
	if keyHere {
		c.keyPath = path.Join(dir, sibling(name))
	}
	if typ.IsRegular() {
		c.resolved = c.path // one string for both when no link is on the way
		if resolved != path.Clean(dir) {
			c.resolved = path.Join(resolved, name)
		}
	}
	if hasExt(name, []string{".conf", ".kubeconfig"}) {
		c.kubeconfig = true
	}
	return c, true
}

func hasExt(name string, exts []string) bool {
	ext := path.Ext(name)
	for _, e := range exts {
		if strings.EqualFold(ext, e) {
			return true
		}
	}
	return false
}

func (s *scanner) excluded(p string) bool {
	for _, pat := range s.cfg.Exclude {
		if ok, _ := path.Match(pat, p); ok || pat == p {
			return true
		}
	}
	return false
}

// sibling returns "<p without extension>.key".
func sibling(p string) string {
	return strings.TrimSuffix(p, path.Ext(p)) + ".key"
}
