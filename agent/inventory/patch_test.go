package inventory

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// patchStep is one change on disk, the paths a watcher names for it, and
// whether the narrowed scan may patch the previous report.
type patchStep struct {
	what    string
	change  func()
	changed []string // relative to the root; a trailing "+" marks a listing change
	patch   bool
}

// TestPatchedScanMatchesFullScan: a narrowed scan that patches the
// previous report (leaves replaced and nothing else) reports what a cold
// full scan reports, and one that cannot (a CA replaced, a file created, a
// time a state depends on reached, a directory above the files opened to
// others) does not patch. A leaf rewritten in place with the same size and
// modification time is read again; a leaf of another CA with the same
// name is matched by signature (no issuer), and its leaves' issuer is
// found again when that CA replaces the first.
func TestPatchedScanMatchesFullScan(t *testing.T) {
	dir, c, ca := confNodeWithCorpus(t)
	must(t, os.WriteFile(filepath.Join(c, "ca.key"), pkitest.KeyPEM(ca.Key), 0o600))
	r := newPatchRun(t, dir, "paths: [/opt/c]\nrenewal: {localCAPaths: [\"/opt/c/*\"]}")
	r.steps(t, patchSteps(t, dir, ca, &r.at))
}

func patchSteps(t *testing.T, dir string, ca *pkitest.CA, at *time.Time) []patchStep {
	c := filepath.Join(dir, "opt/c")
	other := sameNamedCA(t, ca)
	write := func(name string, data []byte) { must(t, os.WriteFile(filepath.Join(c, name), data, 0o644)) }
	return []patchStep{
		{"a leaf renamed over", func() {
			write(".new.tmp", shortLeaf(t, ca, "svc-00003.example.internal", 0))
			must(t, os.Rename(filepath.Join(c, ".new.tmp"), filepath.Join(c, "cert-00003.pem")))
		}, []string{"opt/c/.new.tmp+", "opt/c/cert-00003.pem+"}, true},
		{"a leaf rewritten in place with the same size and modification time", func() {
			p := filepath.Join(c, "cert-00003.pem")
			old, err := os.ReadFile(p)
			must(t, err)
			fi, err := os.Stat(p)
			must(t, err)
			write("cert-00003.pem", shortLeaf(t, ca, "svc-00003.example.internal", len(old)))
			must(t, os.Chtimes(p, fi.ModTime(), fi.ModTime())) // touch -r
		}, []string{"opt/c/cert-00003.pem"}, true},
		{"a leaf of another CA with the same name", func() { write("cert-00002.pem", shortLeaf(t, other, "svc-00002.example.internal", 0)) },
			[]string{"opt/c/cert-00002.pem"}, true},
		{"a leaf outliving its CA", func() {
			leaf, _, err := ca.Issue(pkitest.Spec{CommonName: "svc-00004.example.internal", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(11 * 365 * 24 * time.Hour)})
			must(t, err)
			write("cert-00004.pem", pkitest.CertPEM(leaf))
		}, []string{"opt/c/cert-00004.pem"}, false},
		{"a second later, nothing changed", func() { *at = at.Add(time.Second) }, nil, true},
		{"past the start of a leaf's renewal window", func() { *at = now.Add(17 * time.Hour) }, nil, false},
		{"nothing changed after it", func() { *at = at.Add(time.Second) }, nil, true},
		{"the CA replaced by another with the same name", func() {
			write("ca.crt", pkitest.CertPEM(other.Cert))
			must(t, os.WriteFile(filepath.Join(c, "ca.key"), pkitest.KeyPEM(other.Key), 0o600))
		}, []string{"opt/c/ca.crt", "opt/c/ca.key"}, false},
		{"a leaf of the new CA", func() { write("cert-00000.pem", shortLeaf(t, other, "svc-00000.example.internal", 0)) },
			[]string{"opt/c/cert-00000.pem"}, true},
		{"a leaf of the first CA, gone from the node", func() { write("cert-00001.pem", shortLeaf(t, ca, "svc-00001.example.internal", 0)) },
			[]string{"opt/c/cert-00001.pem"}, true},
		{"a directory above opened to others, unseen by the watcher", func() {
			must(t, os.Chmod(filepath.Join(dir, "opt"), 0o777))
		}, nil, false},
		{"closed again", func() { must(t, os.Chmod(filepath.Join(dir, "opt"), 0o755)) }, nil, false},
		{"a file created", func() { write("new.pem", leafPEM(t, ca, "new.example.internal")) },
			[]string{"opt/c/new.pem+"}, false},
		{"a leaf removed", func() { must(t, os.Remove(filepath.Join(c, "cert-00002.pem"))) },
			[]string{"opt/c/cert-00002.pem+"}, false},
		{"at two leaves' notAfter", func() { *at = now.Add(48 * time.Hour) }, nil, false},
		{"a nanosecond later, expired", func() { *at = at.Add(time.Nanosecond) }, nil, false},
		{"a second later", func() { *at = at.Add(time.Second) }, nil, true},
	}
}

// TestPatchedScanFollowsItsFiles: after a leaf's key became a symlink to
// another file, changes to that file are seen (the patch index learns the
// files a reading now depends on, or the scan does not patch); a
// well-known leaf created where none was (absent, it is read again by
// every narrowed scan), or made a symlink, and a leaf replaced by one due
// seconds later (patched in, its times bound the next patch), each report
// what a full scan does.
func TestPatchedScanFollowsItsFiles(t *testing.T) {
	dir, c, ca := confNodeWithCorpus(t)
	pk := filepath.Join(dir, "etc/kubernetes/pki")
	leaf, key, err := ca.Issue(pkitest.Spec{CommonName: "svc.example.internal", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour)})
	must(t, err)
	must(t, os.WriteFile(filepath.Join(c, "svc.pem"), pkitest.CertPEM(leaf), 0o644))
	must(t, os.WriteFile(filepath.Join(c, "svc.key"), pkitest.KeyPEM(key), 0o600))
	must(t, os.Rename(filepath.Join(pk, "front-proxy-client.crt"), filepath.Join(dir, "fpc.crt")))
	must(t, os.Rename(filepath.Join(pk, "front-proxy-client.key"), filepath.Join(dir, "fpc.key")))
	other, _ := pkitest.NewKey(pkitest.ECDSA)
	r := newPatchRun(t, dir, "paths: [/opt/c]")
	life := 10 * time.Hour
	from := r.at.Add(10*time.Second - life*7/10) // its renewal window opens 10 s after the scan
	soon, _, err := ca.Issue(pkitest.Spec{CommonName: "svc-00001.example.internal", NotBefore: from, NotAfter: from.Add(life)})
	must(t, err)
	r.steps(t, []patchStep{
		{what: "the key made a symlink to svc-v2.key", change: func() {
			must(t, os.WriteFile(filepath.Join(c, "svc-v2.key"), pkitest.KeyPEM(key), 0o600))
			must(t, os.Symlink("svc-v2.key", filepath.Join(c, ".tmp")))
			must(t, os.Rename(filepath.Join(c, ".tmp"), filepath.Join(c, "svc.key")))
		}, changed: []string{"opt/c/svc-v2.key+", "opt/c/.tmp+", "opt/c/svc.key+"}},
		{what: "its target opened to others", change: func() { must(t, os.Chmod(filepath.Join(c, "svc-v2.key"), 0o644)) },
			changed: []string{"opt/c/svc-v2.key"}, patch: true},
		{what: "its target replaced by another key", change: func() {
			must(t, os.WriteFile(filepath.Join(c, "svc-v2.key"), pkitest.KeyPEM(other), 0o644))
		}, changed: []string{"opt/c/svc-v2.key"}, patch: true},
		{what: "a well-known leaf created", change: func() {
			must(t, os.Rename(filepath.Join(dir, "fpc.crt"), filepath.Join(pk, "front-proxy-client.crt")))
			must(t, os.Rename(filepath.Join(dir, "fpc.key"), filepath.Join(pk, "front-proxy-client.key")))
		}, changed: []string{"etc/kubernetes/pki/front-proxy-client.crt+", "etc/kubernetes/pki/front-proxy-client.key+"}},
		{what: "a well-known leaf made a symlink to another", change: func() {
			p := filepath.Join(pk, "apiserver-etcd-client.crt")
			must(t, os.Remove(p))
			must(t, os.Symlink("front-proxy-client.crt", p))
		}, changed: []string{"etc/kubernetes/pki/apiserver-etcd-client.crt+"}},
		{what: "a leaf due in 10 s", change: func() { must(t, os.WriteFile(filepath.Join(c, "cert-00001.pem"), pkitest.CertPEM(soon), 0o644)) },
			changed: []string{"opt/c/cert-00001.pem"}, patch: true},
		{what: "20 s later", change: func() { r.at = r.at.Add(20 * time.Second) }},
	})
}

// firstDifference shows where two documents part.
func firstDifference(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(i-300, 0)
	return " got …" + got[from:min(i+200, len(got))] + "\nwant …" + want[from:min(i+200, len(want))]
}

// shortLeaf is a leaf of ca valid two days, shorter than the longest-lived
// of the corpus (a longer one changes its CA's state: no patch), of size
// bytes when size is not 0.
func shortLeaf(t *testing.T, ca *pkitest.CA, cn string, size int) []byte {
	t.Helper()
	for range 200 {
		c, _, err := ca.Issue(pkitest.Spec{CommonName: cn, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour)})
		must(t, err)
		if b := pkitest.CertPEM(c); size == 0 || len(b) == size {
			return b
		}
	}
	t.Fatalf("no leaf of %d bytes", size)
	return nil
}
