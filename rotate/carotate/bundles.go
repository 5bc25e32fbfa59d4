package carotate

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"reflect"
	"sort"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Sources say where a node's trust bundles are (node paths).
type Sources struct {
	// Dirs are searched, not recursively, for PEM files (*.crt, *.pem)
	// and kubeconfigs (*.conf). A file there that is no trust bundle (a
	// leaf, a key) is not one of them and is passed over.
	Dirs []string
	// Files are PEM bundles the configuration names (the kubelet's
	// clientCAFile): one that is not a trust bundle is a problem.
	Files []string
	// Kubeconfigs are kubeconfigs the configuration names.
	Kubeconfigs []string
}

// Bundle is a trust file that holds a given CA.
type Bundle struct {
	// Path is the node path found; Resolved is where its directories'
	// links lead (the file written).
	Path, Resolved string
	// Kubeconfig: certificate-authority-data of a kubeconfig, else a PEM
	// file of CA certificates.
	Kubeconfig bool
	// Certs are the CA certificates it holds (a kubeconfig's clusters'
	// together).
	Certs []*x509.Certificate
	data  []byte
	link  error // the file is a link: not edited
}

// Holds reports whether the bundle holds c.
func (b Bundle) Holds(c *x509.Certificate) bool { return indexOf(b.Certs, c) >= 0 }

func indexOf(certs []*x509.Certificate, c *x509.Certificate) int {
	for i, x := range certs {
		if x.Equal(c) {
			return i
		}
	}
	return -1
}

// candidate is a file that may be a trust bundle.
type candidate struct {
	path       string
	kubeconfig bool
	named      bool // named by configuration: not being a bundle is a problem
}

// Find returns the trust bundles of src that hold ca, in path order, and
// one problem per file that should be a bundle and cannot be used: a link
// in place of the file, junk in it, a kubeconfig that does not load. The
// staged new CA (<stem>.next.crt) and the signer file (<stem>.signer.crt,
// one certificate by design) are no bundles.
func Find(root *pki.Root, src Sources, ca *x509.Certificate) ([]Bundle, []error) {
	var cands []candidate
	for _, d := range src.Dirs {
		cands = append(cands, listDir(root, d)...)
	}
	for _, f := range src.Files {
		cands = append(cands, candidate{path: f, named: true})
	}
	for _, k := range src.Kubeconfigs {
		cands = append(cands, candidate{path: k, kubeconfig: true, named: true})
	}
	seen := map[string]bool{}
	var out []Bundle
	var problems []error
	for i := 0; i < len(cands); i++ {
		c := cands[i]
		b, refs, err := readCandidate(root, c, ca)
		cands = append(cands, refs...)
		if errors.Is(err, errOtherCAs) {
			continue // not a bundle certagent could edit, and not of this CA
		}
		if err != nil {
			// A kubeconfig that names its CA file instead of embedding
			// it is no problem: the file it names is the bundle.
			refOnly := c.kubeconfig && len(refs) > 0 && errors.Is(err, errNotBundle)
			if !errors.Is(err, fs.ErrNotExist) && (c.named || !errors.Is(err, errNotBundle)) && !refOnly {
				problems = append(problems, fmt.Errorf("%s: %w", c.path, err))
			}
			continue
		}
		key := b.Resolved + kindOf(b)
		if b.link != nil {
			// The file it leads to is a candidate of its own, or not.
			if b.Holds(ca) {
				problems = append(problems, fmt.Errorf("%s: %w", c.path, b.link))
			}
			continue
		}
		if seen[key] || !b.Holds(ca) {
			seen[key] = true
			continue
		}
		seen[key] = true
		out = append(out, *b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, problems
}

func kindOf(b *Bundle) string {
	if b.Kubeconfig {
		return "#kubeconfig"
	}
	return ""
}

// errNotBundle: the file holds something else than CA certificates.
var errNotBundle = errors.New("not a trust bundle")

// errOtherCAs: a kubeconfig whose certificate-authority-data certagent
// could not edit (a certificate that is no CA, say, for a cluster of
// another kind) does not hold the rotated CA: no concern of the rotation.
var errOtherCAs = errors.New("certificate-authority-data without the rotated CA")

// listDir lists the candidates of one directory; a missing one has none.
func listDir(root *pki.Root, dir string) []candidate {
	entries, err := root.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []candidate
	for _, e := range entries {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, "."), strings.HasSuffix(n, ".next.crt"), strings.HasSuffix(n, ".signer.crt"), e.IsDir():
		case strings.HasSuffix(n, ".crt"), strings.HasSuffix(n, ".pem"):
			out = append(out, candidate{path: path.Join(dir, n)})
		case strings.HasSuffix(n, ".conf"):
			out = append(out, candidate{path: path.Join(dir, n), kubeconfig: true})
		}
	}
	return out
}

// readCandidate reads one candidate: the bundle (with an error of a
// kubeconfig that has no CA data), and for a kubeconfig the CA files it
// names. A link is read where it leads (inside the root), to tell
// whether it is a bundle at all, and marked.
func readCandidate(root *pki.Root, c candidate, rotated *x509.Certificate) (*Bundle, []candidate, error) {
	resolved, link, err := resolveFile(root, c.path)
	if err != nil {
		return nil, nil, err
	}
	f, err := root.ReadFile(resolved)
	if err != nil {
		return nil, nil, err
	}
	if link != nil {
		resolved = f.Resolved
	}
	b := &Bundle{Path: c.path, Resolved: resolved, Kubeconfig: c.kubeconfig, data: f.Data, link: link}
	if !c.kubeconfig {
		if b.Certs, err = rotate.TrustCerts(f.Data, false); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", errNotBundle, err)
		}
		return b, nil, nil
	}
	kc, err := clientcmd.Load(f.Data)
	if err != nil || len(kc.Clusters) == 0 {
		return nil, nil, fmt.Errorf("%w: not a kubeconfig with clusters (%v)", errNotBundle, err)
	}
	var refs []candidate
	hasData := false
	for _, name := range sortedClusters(kc) {
		cl := kc.Clusters[name]
		if cl.CertificateAuthority != "" {
			p := cl.CertificateAuthority
			if !path.IsAbs(p) {
				p = path.Join(path.Dir(c.path), p)
			}
			refs = append(refs, candidate{path: path.Clean(p), named: true})
		}
		hasData = hasData || len(cl.CertificateAuthorityData) > 0
	}
	if !hasData {
		return nil, refs, fmt.Errorf("%w: no certificate-authority-data", errNotBundle)
	}
	if b.Certs, err = rotate.TrustCerts(f.Data, true); err != nil {
		if !embeds(kc, rotated) {
			return nil, refs, fmt.Errorf("%w: %v", errOtherCAs, err)
		}
		return nil, refs, err
	}
	return b, refs, nil
}

// embeds: a cluster of kc has the certificate ca in its
// certificate-authority-data (whatever else is there).
func embeds(kc *clientcmdapi.Config, ca *x509.Certificate) bool {
	for _, cl := range kc.Clusters {
		rest := cl.CertificateAuthorityData
		for len(rest) > 0 {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil && c.Equal(ca) {
				return true
			}
		}
	}
	return false
}

// resolveFile resolves the directories of p inside the root and refuses
// a link in place of the file itself: a trust file is edited only where
// it is, never through a link that may point at a file others share.
func resolveFile(root *pki.Root, p string) (resolved string, link, err error) {
	d, name, err := root.OpenParent(p)
	if err != nil {
		return "", nil, err
	}
	defer d.Close()
	fi, err := d.Lstat(name)
	if err != nil {
		return "", nil, err
	}
	resolved = path.Join(d.Path, name)
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := d.ReadLink(name)
		return resolved, fmt.Errorf("a symbolic link (to %q), not a file: certagent edits no trust bundle through a link; put the file in its place", target), nil
	}
	if !fi.Mode().IsRegular() {
		return "", nil, fmt.Errorf("%s, not a file", pki.FileType(fi.Mode()))
	}
	return resolved, nil, nil
}

func sortedClusters(kc *clientcmdapi.Config) []string {
	var names []string
	for n, cl := range kc.Clusters {
		if cl != nil {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Add returns the edit that puts next after the certificates of the
// bundle (the old CA stays first), in every kubeconfig cluster whose CA
// data holds old; nil when nothing is to change.
func (b Bundle) Add(old, next *x509.Certificate) (*rotate.TrustEdit, error) {
	return b.edit(old, func(certs []*x509.Certificate) []*x509.Certificate { return withCA(certs, next) })
}

// withCA is certs with c after them, unless they hold it.
func withCA(certs []*x509.Certificate, c *x509.Certificate) []*x509.Certificate {
	if indexOf(certs, c) >= 0 {
		return certs
	}
	return append(certs[:len(certs):len(certs)], c)
}

// Remove returns the edit that takes old out of the bundle; nil when it
// is not there. A bundle left with no certificate is an error.
func (b Bundle) Remove(old *x509.Certificate) (*rotate.TrustEdit, error) {
	return b.edit(old, func(certs []*x509.Certificate) []*x509.Certificate { return withoutCA(certs, old) })
}

// withoutCA is certs without c.
func withoutCA(certs []*x509.Certificate, c *x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, x := range certs {
		if !x.Equal(c) {
			out = append(out, x)
		}
	}
	return out
}

// edit applies change to the certificates of the bundle (of each
// kubeconfig cluster whose CA data holds old).
func (b Bundle) edit(old *x509.Certificate, change func([]*x509.Certificate) []*x509.Certificate) (*rotate.TrustEdit, error) {
	e := &rotate.TrustEdit{Name: "trust " + b.Path, Path: b.Resolved, Kubeconfig: b.Kubeconfig}
	if !b.Kubeconfig {
		certs := change(b.Certs)
		if len(certs) == 0 {
			return nil, fmt.Errorf("%s: it would hold no certificate", b.Path)
		}
		if sameCerts(certs, b.Certs) {
			return nil, nil
		}
		e.Data = pki.EncodeCertPEM(certs...)
		return e, nil
	}
	data, changed, err := editKubeconfig(b.data, old, change)
	if err != nil || !changed {
		return nil, err
	}
	e.Data = data
	return e, nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// editCAData is the new CA data of one cluster, nil when it has none,
// does not hold old, or does not change.
func editCAData(cur []byte, old *x509.Certificate, change func([]*x509.Certificate) []*x509.Certificate) ([]byte, error) {
	if len(cur) == 0 {
		return nil, nil
	}
	certs, err := rotate.TrustCerts(cur, false)
	if err != nil {
		return nil, err
	}
	if indexOf(certs, old) < 0 {
		return nil, nil
	}
	next := change(certs)
	if len(next) == 0 {
		return nil, errors.New("it would hold no certificate")
	}
	if sameCerts(next, certs) {
		return nil, nil
	}
	return pki.EncodeCertPEM(next...), nil
}

// editKubeconfig changes the CA data of every cluster that holds old. It
// replaces the base64 values in the text, so that the rest of the file
// stays byte for byte; when a value is not found exactly once it writes
// the whole file again with clientcmd. Either way the result must load
// and differ from the old file in those clusters' CA data only.
func editKubeconfig(data []byte, old *x509.Certificate, change func([]*x509.Certificate) []*x509.Certificate) ([]byte, bool, error) {
	kc, err := clientcmd.Load(data)
	if err != nil {
		return nil, false, err
	}
	want := kc.DeepCopy()
	out := data
	text, changed := true, false
	for _, name := range sortedClusters(kc) {
		cur := kc.Clusters[name].CertificateAuthorityData
		pem, err := editCAData(cur, old, change)
		if err != nil {
			return nil, false, fmt.Errorf("cluster %q: %w", name, err)
		}
		if pem == nil {
			continue
		}
		changed = true
		want.Clusters[name].CertificateAuthorityData = pem
		was := []byte(base64.StdEncoding.EncodeToString(cur))
		if bytes.Count(out, was) == 1 {
			out = bytes.Replace(out, was, []byte(base64.StdEncoding.EncodeToString(pem)), 1)
		} else {
			text = false
		}
	}
	if !changed {
		return nil, false, nil
	}
	if !text {
		if out, err = clientcmd.Write(*want); err != nil {
			return nil, false, err
		}
	}
	got, err := clientcmd.Load(out)
	if err != nil {
		return nil, false, fmt.Errorf("rewritten kubeconfig does not load: %w", err)
	}
	if !reflect.DeepEqual(got, want) {
		return nil, false, errors.New("rewritten kubeconfig differs in more than its clusters' CA data")
	}
	return out, true, nil
}

// KubeconfigTrust edits a kubeconfig that is not a node file (the
// cluster's cluster-info): every cluster whose CA data holds old trusts
// next too (keep: old stays first, next after it), or next instead of old
// (!keep). The rest of the text stays byte for byte where it can (see
// editKubeconfig). changed is false when no cluster holds old, or every
// one is already so.
func KubeconfigTrust(data []byte, old, next *x509.Certificate, keep bool) (out []byte, changed bool, err error) {
	return editKubeconfig(data, old, func(certs []*x509.Certificate) []*x509.Certificate {
		certs = withCA(certs, next)
		if !keep {
			certs = withoutCA(certs, old)
		}
		return certs
	})
}
