package integration

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// caUse is where a CA shows on the nodes, as "<root label>:<path>" (and
// the kubeconfig entry): the certificates it signed, the bundles that
// hold it, and the kubelet store's history (pairs the kubelet keeps
// after a rotation, which no -current link points at: nothing uses them).
type caUse struct {
	leaves, bundles, history []string
}

// pkiDirs are the parts of a node root the checker walks: kubeadm's and
// the kubelet's. etc/kubernetes/tmp is left out: it holds the backups of
// kubeadm and certagent (what a rollback restores), which nothing reads.
var pkiDirs = []string{"etc/kubernetes", "var/lib/kubelet"}

var storeHistory = regexp.MustCompile(`^var/lib/kubelet/pki/kubelet-(client|server)-[0-9-]+\.pem$`)

// findCA walks node roots (label -> root directory) and lists every
// certificate that chains to ca (its signature checks with ca's key:
// the old and the new CA share their subject) and every bundle holding
// ca itself: a PEM file, a kubeconfig's certificate-authority-data.
func findCA(t *testing.T, ca *x509.Certificate, roots map[string]string) caUse {
	t.Helper()
	var u caUse
	labels := make([]string, 0, len(roots))
	for l := range roots {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	for _, label := range labels {
		root := roots[label]
		current := storeCurrent(root)
		for _, dir := range pkiDirs {
			filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return nil
				}
				rel, _ := filepath.Rel(root, p)
				if d.IsDir() {
					if rel == "etc/kubernetes/tmp" {
						return fs.SkipDir
					}
					return nil
				}
				if !d.Type().IsRegular() {
					return nil // links: their targets are walked
				}
				info, err := d.Info()
				if err != nil || info.Size() > 1<<20 {
					return nil
				}
				data, err := os.ReadFile(p)
				if err != nil {
					t.Errorf("read %s: %v", p, err)
					return nil
				}
				where := label + ":" + rel
				history := storeHistory.MatchString(rel) && !current[rel]
				u.add(ca, where, data, history)
				return nil
			})
		}
	}
	return u
}

// storeCurrent is the set of files the kubelet store's -current links of
// the root point at (root-relative).
func storeCurrent(root string) map[string]bool {
	out := map[string]bool{}
	links, _ := filepath.Glob(filepath.Join(root, "var/lib/kubelet/pki/kubelet-*-current.pem"))
	for _, l := range links {
		target, err := os.Readlink(l)
		if err != nil {
			continue
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join("/var/lib/kubelet/pki", target)
		}
		out[strings.TrimPrefix(filepath.Clean(target), "/")] = true
	}
	return out
}

// add looks for ca in one file: its PEM certificates, and, for a
// kubeconfig, its embedded CA and client certificates.
func (u *caUse) add(ca *x509.Certificate, where string, data []byte, history bool) {
	for _, c := range pemCerts(data) {
		switch {
		case bytes.Equal(c.Raw, ca.Raw):
			u.bundles = append(u.bundles, where)
		case c.CheckSignatureFrom(ca) == nil:
			if history {
				u.history = append(u.history, where)
			} else {
				u.leaves = append(u.leaves, where)
			}
		}
	}
	if !bytes.Contains(data, []byte("kind: Config")) {
		return
	}
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return
	}
	for name, cl := range cfg.Clusters {
		for _, c := range pemCerts(cl.CertificateAuthorityData) {
			if bytes.Equal(c.Raw, ca.Raw) {
				u.bundles = append(u.bundles, where+" cluster "+name)
			}
		}
	}
	for name, ai := range cfg.AuthInfos {
		for _, c := range pemCerts(ai.ClientCertificateData) {
			if !bytes.Equal(c.Raw, ca.Raw) && c.CheckSignatureFrom(ca) == nil {
				u.leaves = append(u.leaves, where+" user "+name)
			}
		}
	}
}

// pemCerts parses every CERTIFICATE block of data (others are skipped).
func pemCerts(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// firstCert is the first certificate of a PEM file.
func firstCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cs := pemCerts(data)
	if len(cs) == 0 {
		t.Fatalf("%s: no certificate", path)
	}
	return cs[0]
}
