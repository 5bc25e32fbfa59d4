package inventory

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// patchRun is a node scanned once with a cache, ready for narrowed scans.
type patchRun struct {
	dir     string
	root    *pki.Root
	cfg     *config.Config
	cache   *Cache
	watched map[string]bool
	at      time.Time
}

// newPatchRun scans dir once with a cache (settled: what the test wrote
// is cached) and the configuration conf at now plus a minute (no time a
// state depends on), the directories of the kubeadm layout and /opt/c
// watched.
func newPatchRun(t *testing.T, dir, conf string) *patchRun {
	t.Helper()
	return newPatchRunWith(t, dir, conf, settledCache())
}

// newPatchRunWith is newPatchRun with the cache given.
func newPatchRunWith(t *testing.T, dir, conf string, cache *Cache) *patchRun {
	t.Helper()
	root, err := pki.NewRoot(dir)
	must(t, err)
	r := &patchRun{dir: dir, root: root, cfg: mustConfig(t, conf), cache: cache, at: now.Add(time.Minute),
		watched: map[string]bool{filepath.Join(dir, "opt/c"): true, filepath.Join(dir, "etc/kubernetes"): true,
			filepath.Join(dir, "etc/kubernetes/pki"): true, filepath.Join(dir, "etc/kubernetes/pki/etcd"): true,
			filepath.Join(dir, "var/lib/kubelet/pki"): true}}
	_, err = Scan(context.Background(), Options{Root: root, Config: r.cfg, Now: r.at, Cache: r.cache})
	must(t, err)
	return r
}

// steps runs each step: a narrowed scan that patches, or not, as the step
// says, and reports what a cold full scan does.
func (r *patchRun) steps(t *testing.T, steps []patchStep) {
	t.Helper()
	for _, st := range steps {
		st.change()
		ch := &Changed{Paths: map[string]bool{}, Watched: r.watched}
		for _, p := range st.changed {
			ch.Paths[filepath.Join(r.dir, strings.TrimSuffix(p, "+"))] = strings.HasSuffix(p, "+")
		}
		before := r.cache.Stats().Patches
		rep, err := Scan(context.Background(), Options{Root: r.root, Config: r.cfg, Now: r.at, Cache: r.cache, Changed: ch})
		must(t, err)
		if patched := r.cache.Stats().Patches > before; patched != st.patch {
			t.Errorf("%s: patched %v, want %v", st.what, patched, st.patch)
		}
		full, err := Scan(context.Background(), Options{Root: r.root, Config: r.cfg, Now: r.at})
		must(t, err)
		got, _ := json.Marshal(atScanTime(rep))
		want, _ := json.Marshal(full)
		if string(got) != string(want) {
			t.Errorf("%s: the narrowed scan differs from a full one:\n%s", st.what, firstDifference(string(got), string(want)))
		}
	}
}

// issue is a PEM leaf of ca valid from notBefore for life.
func issue(t *testing.T, ca *pkitest.CA, cn string, notBefore time.Time, life time.Duration) []byte {
	t.Helper()
	c, _, err := ca.Issue(pkitest.Spec{CommonName: cn, NotBefore: notBefore, NotAfter: notBefore.Add(life)})
	must(t, err)
	return pkitest.CertPEM(c)
}

// TestPatchGuardSameFile: a leaf's symlink re-pointed to another file it
// already depended on (its key's target, holding the same certificate) is
// one entry with two users in a full scan, so the scan does not patch:
// the replacement is read from another file.
func TestPatchGuardSameFile(t *testing.T) {
	dir, c, ca := confNodeWithCorpus(t)
	leaf, key, err := ca.Issue(pkitest.Spec{CommonName: "dup.example.internal", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour)})
	must(t, err)
	must(t, os.WriteFile(filepath.Join(c, "dup.pem"), append(pkitest.CertPEM(leaf), pkitest.KeyPEM(key)...), 0o600))
	must(t, os.WriteFile(filepath.Join(c, "alias.v1"), pkitest.CertPEM(leaf), 0o644))
	must(t, os.Symlink("alias.v1", filepath.Join(c, "alias.crt")))
	must(t, os.Symlink("dup.pem", filepath.Join(c, "alias.key")))
	r := newPatchRun(t, dir, "paths: [/opt/c]")
	r.steps(t, []patchStep{
		{"the leaf's symlink re-pointed to its key's target", func() {
			must(t, os.Symlink("dup.pem", filepath.Join(c, ".tmp")))
			must(t, os.Rename(filepath.Join(c, ".tmp"), filepath.Join(c, "alias.crt")))
		}, []string{"opt/c/.tmp+", "opt/c/alias.crt+"}, false},
	})
}

// TestPatchGuardLifetimes: the times at which an issuer comes to expire
// within a leaf's lifetime bound the record (a leaf warned 10 s after the
// scan while its CA already is), and replacing the leaf that alone was its
// CA's longest-lived by a shorter one, or a shorter leaf by one longer
// than the longest, changes the CA's warning: no patch.
func TestPatchGuardLifetimes(t *testing.T) {
	dir, c, ca := confNodeWithCorpus(t)
	at := now.Add(time.Minute)
	from := now.Add(-time.Hour)
	caEnd := ca.Cert.NotAfter
	must(t, os.WriteFile(filepath.Join(c, "long.pem"), issue(t, ca, "long.example.internal", from, caEnd.Sub(from)+24*time.Hour), 0o644))
	must(t, os.WriteFile(filepath.Join(c, "late.pem"), issue(t, ca, "late.example.internal", from, caEnd.Sub(at.Add(10*time.Second))), 0o644))
	r := newPatchRun(t, dir, "paths: [/opt/c]")
	r.steps(t, []patchStep{
		{"a leaf's CA expiring within its lifetime 10 s later, 20 s later", func() { r.at = r.at.Add(20 * time.Second) }, nil, false},
		{"the longest-lived leaf replaced by a shorter one", func() {
			must(t, os.WriteFile(filepath.Join(c, "long.pem"), shortLeaf(t, ca, "long.example.internal", 0), 0o644))
		}, []string{"opt/c/long.pem"}, false},
		{"a short leaf replaced by one longer than the longest", func() {
			must(t, os.WriteFile(filepath.Join(c, "long.pem"), issue(t, ca, "long.example.internal", from, caEnd.Sub(from)+time.Hour), 0o644))
		}, []string{"opt/c/long.pem"}, false},
	})
}

// TestPatchGuardFallbacks: a narrowed scan does not patch when a
// directory of the files it read is not watched (a leaf there changed
// unseen), when a directory itself changed (replaced by one with another
// leaf), or when the clock went back (a due leaf not yet due).
func TestPatchGuardFallbacks(t *testing.T) {
	dir, c, ca := confNodeWithCorpus(t)
	r := newPatchRun(t, dir, "paths: [/opt/c]")
	r.steps(t, []patchStep{
		{"a leaf changed in a directory not watched", func() {
			delete(r.watched, c)
			must(t, os.WriteFile(filepath.Join(c, "cert-00003.pem"), shortLeaf(t, ca, "svc-00003.example.internal", 0), 0o644))
		}, nil, false},
		{"watched again, nothing changed", func() { r.watched[c] = true }, nil, true},
		{"the directory replaced by one with another leaf", func() {
			must(t, os.Rename(c, c+".old"))
			must(t, os.WriteFile(filepath.Join(c+".old", "cert-00002.pem"), shortLeaf(t, ca, "svc-00002.example.internal", 0), 0o644))
			must(t, os.Rename(c+".old", c))
		}, []string{"opt/c+"}, false},
		{"past a leaf's renewal window", func() { r.at = now.Add(17 * time.Hour) }, nil, false},
		{"the clock back an hour", func() { r.at = r.at.Add(-time.Hour) }, nil, false},
	})
}

// TestPatchGuardCAWithinLifetime: a CA coming to expire within the
// lifetime of its longest-lived leaf 10 s after the scan is warned by the
// scan 20 s later.
func TestPatchGuardCAWithinLifetime(t *testing.T) {
	dir, c, ca := confNodeWithCorpus(t)
	from := now.Add(-time.Hour)
	must(t, os.WriteFile(filepath.Join(c, "late.pem"), issue(t, ca, "late.example.internal", from,
		ca.Cert.NotAfter.Sub(now.Add(time.Minute+10*time.Second))), 0o644))
	r := newPatchRun(t, dir, "paths: [/opt/c]")
	r.steps(t, []patchStep{
		{"20 s later", func() { r.at = r.at.Add(20 * time.Second) }, nil, false},
	})
}

// TestPatchGuardUncached: a file read but not cached (changed within the
// racy window of its reading) is in no index of the files readings depend
// on, so every narrowed scan reads it again: a leaf rewritten is seen (by
// a scan that indexes it, not a patch).
func TestPatchGuardUncached(t *testing.T) {
	dir, c, ca := confNodeWithCorpus(t)
	r := newPatchRun(t, dir, "paths: [/opt/c]")
	p := filepath.Join(c, "cert-00003.pem")
	settled := ctime(t, filepath.Join(c, "ca.crt"))
	rewrite := func() { must(t, os.WriteFile(p, shortLeaf(t, ca, "svc-00003.example.internal", 0), 0o644)) }
	r.steps(t, []patchStep{
		{"a leaf rewritten just before a scan past another's renewal window", func() {
			for rewrite(); !ctime(t, p).After(settled); rewrite() { // past the file system's time granularity
			}
			// The scan reads in the racy window of this leaf only.
			at := ctime(t, p).Add(racyWindow - time.Nanosecond)
			r.cache.now = func() time.Time { return at }
			r.at = now.Add(17 * time.Hour)
		}, []string{"opt/c/cert-00003.pem"}, false},
		{"the leaf rewritten again", rewrite, []string{"opt/c/cert-00003.pem"}, false},
	})
}

// ctime is the time a file last changed.
func ctime(t *testing.T, p string) time.Time {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Stat(p, &st))
	return time.Unix(st.Ctim.Unix())
}
