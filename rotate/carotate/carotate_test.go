package carotate

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

const pkiDir = "/etc/kubernetes/pki"

var now = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// layout writes a kubeadm node and stages a new "ca" for it.
func layout(t *testing.T) (*pki.Root, *pkitest.Node, *x509.Certificate) {
	t.Helper()
	dir := t.TempDir()
	n, err := pkitest.Layout{Now: now}.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	next, key, err := NewCA(n.CA.Cert, n.CA.Key, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := Stage(root, pkiDir, "ca", next, key); err != nil {
		t.Fatal(err)
	}
	return root, n, next
}

func sources() Sources {
	return Sources{Dirs: []string{pkiDir, pkiDir + "/etcd", "/etc/kubernetes"}, Kubeconfigs: []string{"/etc/kubernetes/kubelet.conf"}}
}

func opts(root *pki.Root, hooks rotate.Hooks) rotate.Options {
	return rotate.Options{Root: root, Now: now, Hooks: hooks}
}

// apply finds the bundles holding old and writes edit's changes; it
// returns how many files changed.
func apply(t *testing.T, root *pki.Root, old *x509.Certificate, edit func(Bundle) (*rotate.TrustEdit, error)) int {
	t.Helper()
	bundles, problems := Find(root, sources(), old)
	if len(problems) > 0 {
		t.Fatalf("problems: %v", problems)
	}
	var edits []rotate.TrustEdit
	for _, b := range bundles {
		e, err := edit(b)
		if err != nil {
			t.Fatal(err)
		}
		if e != nil {
			edits = append(edits, *e)
		}
	}
	if len(edits) == 0 {
		return 0
	}
	res, err := rotate.RewriteTrust(context.Background(), opts(root, nil), edits)
	if err != nil {
		t.Fatalf("rewrite: %v %+v", err, res)
	}
	return len(edits)
}

func TestNewCAAndStage(t *testing.T) {
	root, n, next := layout(t)
	if err := CheckSuccessor(n.CA.Cert, next); err != nil {
		t.Fatal(err)
	}
	if next.Subject.String() != n.CA.Cert.Subject.String() || next.SerialNumber.Cmp(n.CA.Cert.SerialNumber) == 0 {
		t.Errorf("new CA %s serial %x", next.Subject, next.SerialNumber)
	}
	if got, want := next.NotAfter.Sub(next.NotBefore), n.CA.Cert.NotAfter.Sub(n.CA.Cert.NotBefore); got != want {
		t.Errorf("lifetime %s, want %s", got, want)
	}
	cert, key, err := Staged(root, pkiDir, "ca")
	if err != nil || !cert.Equal(next) || !pki.KeyMatches(cert, key) {
		t.Fatalf("staged: %v", err)
	}
	fi, err := os.Stat(root.HostPath(pkiDir + "/ca.next.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ca.next.key: %v %v", fi.Mode(), err)
	}
	if err := Stage(root, pkiDir, "ca", cert, key); err != nil {
		t.Errorf("staging the same CA again: %v", err)
	}
	other, okey, _ := NewCA(n.CA.Cert, n.CA.Key, now)
	if err := Stage(root, pkiDir, "ca", other, okey); err == nil {
		t.Error("a second new CA replaced the staged one")
	}
	if err := Stage(root, pkiDir, "ca", other, key); err == nil {
		t.Error("a key that is not the certificate's was staged")
	}
	if err := Stage(root, pkiDir, "front-proxy-ca", next, key); err == nil || !strings.Contains(err.Error(), "subject") {
		t.Errorf("a CA of another subject: %v", err)
	}
	if _, _, err := NewCA(n.CA.Cert, n.EtcdCA.Key, now); err == nil {
		t.Error("NewCA with another CA's key")
	}
	if !HasKey(root, pkiDir, "ca", next) || HasKey(root, pkiDir, "ca", other) {
		t.Error("HasKey")
	}
}

// TestTrustSwitchFinish runs a node's file side of a rotation, each
// step twice: the second time changes nothing.
func TestTrustSwitchFinish(t *testing.T) {
	root, n, next := layout(t)
	old := n.CA.Cert
	add := func(b Bundle) (*rotate.TrustEdit, error) { return b.Add(old, next) }
	changed := apply(t, root, old, add)
	// ca.crt and the five kubeconfigs' certificate-authority-data.
	if changed < 5 {
		t.Fatalf("%d bundles changed", changed)
	}
	if again := apply(t, root, old, add); again != 0 {
		t.Fatalf("trust again changed %d files", again)
	}
	bundles, _ := Find(root, sources(), old)
	for _, b := range bundles {
		if !b.Holds(next) || !b.Certs[0].Equal(old) {
			t.Errorf("%s: %d certs, new %v, old first %v", b.Path, len(b.Certs), b.Holds(next), b.Certs[0].Equal(old))
		}
	}
	if caOf(t, root).Cert.Equal(next) {
		t.Fatal("trust switched the signer")
	}
	fp, _, _ := NewCA(n.FrontProxy.Cert, n.FrontProxy.Key, now)
	if _, err := Switch(opts(root, nil), pkiDir, "front-proxy-ca", fp); !errors.Is(err, ErrNoNewKey) {
		t.Errorf("switch without a staged key: %v", err)
	}
	for i := 0; i < 2; i++ {
		changed, err := Switch(opts(root, nil), pkiDir, "ca", next)
		if err != nil || changed != (i == 0) {
			t.Fatalf("switch %d: changed %v, %v", i, changed, err)
		}
	}
	lc := caOf(t, root)
	if len(lc.Previous) != 0 {
		t.Fatal("a CA bundled in the file re-signs without a rotation's word")
	}
	if !lc.Retire(old) || !lc.Cert.Equal(next) || len(lc.Previous) != 1 || !lc.Previous[0].Equal(old) {
		t.Fatalf("after the switch the signer is %x, previous %d", lc.Cert.SerialNumber, len(lc.Previous))
	}
	leaf, _, _ := n.CA.Issue(pkitest.Spec{CommonName: "x", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	if !lc.Issued(leaf) {
		t.Error("the switched CA does not re-sign what the old one issued")
	}
	remove := func(b Bundle) (*rotate.TrustEdit, error) { return b.Remove(old) }
	if apply(t, root, old, remove) == 0 || apply(t, root, old, remove) != 0 {
		t.Fatal("finish is not idempotent")
	}
	if err := Unstage(root, pkiDir, "ca", next, ""); err != nil {
		t.Fatal(err)
	}
	if left, _ := Find(root, sources(), old); len(left) != 0 {
		t.Errorf("the old CA is still in %s", left[0].Path)
	}
	lc = caOf(t, root)
	if !lc.Cert.Equal(next) || len(lc.Previous) != 0 {
		t.Error("ca.crt is not [new] after finish")
	}
	if _, err := os.Stat(root.HostPath(pkiDir + "/ca.next.key")); !os.IsNotExist(err) {
		t.Error("ca.next.key left behind")
	}
}

func caOf(t *testing.T, root *pki.Root) *rotate.LocalCA {
	t.Helper()
	lc, err := rotate.LoadLocalCA(root, "ca", pkiDir+"/ca.crt", pkiDir+"/ca.key")
	if err != nil {
		t.Fatal(err)
	}
	return lc
}

// panicAt stops a transaction at a step, leaving the disk as a crash does.
type panicAt string

func (p panicAt) Step(name string) {
	if string(p) == name {
		panic("crash at " + name)
	}
}

// TestSwitchCrash: a crash at any step of the signer switch leaves a
// pair that matches once Repair ran, and the switch then completes.
func TestSwitchCrash(t *testing.T) {
	for _, stop := range []string{"staged", "backed-up", "committing", "renamed-one", "renamed", "synced", "verified"} {
		t.Run(stop, func(t *testing.T) {
			root, _, next := layout(t)
			func() {
				defer func() { recover() }()
				Switch(opts(root, panicAt(stop)), pkiDir, "ca", next)
			}()
			for _, r := range rotate.Repair(root, rotate.DefaultBackupDir) {
				if r.Err != nil {
					t.Fatalf("repair: %v", r.Err)
				}
			}
			caOf(t, root) // fails on a mismatched pair
			if _, err := Switch(opts(root, nil), pkiDir, "ca", next); err != nil {
				t.Fatalf("switch after %s: %v", stop, err)
			}
			if lc := caOf(t, root); !lc.Cert.Equal(next) {
				t.Error("not switched")
			}
		})
	}
}

// TestTrustCrash: a crash while bundles are rewritten leaves each bundle
// whole (old or new) after Repair.
func TestTrustCrash(t *testing.T) {
	for _, stop := range []string{"staged", "committing", "renamed-one", "synced"} {
		t.Run(stop, func(t *testing.T) {
			root, n, next := layout(t)
			bundles, _ := Find(root, sources(), n.CA.Cert)
			var edits []rotate.TrustEdit
			for _, b := range bundles {
				e, _ := b.Add(n.CA.Cert, next)
				edits = append(edits, *e)
			}
			func() {
				defer func() { recover() }()
				rotate.RewriteTrust(context.Background(), opts(root, panicAt(stop)), edits)
			}()
			if len(rotate.Interrupted(root, rotate.DefaultBackupDir)) != 1 {
				t.Fatal("no interrupted transaction")
			}
			rotate.Repair(root, rotate.DefaultBackupDir)
			after, problems := Find(root, sources(), n.CA.Cert)
			if len(problems) > 0 || len(after) != len(bundles) {
				t.Fatalf("after repair: %d bundles, %v", len(after), problems)
			}
			for _, b := range after {
				if stop == "synced" && !b.Holds(next) {
					t.Errorf("%s not rolled forward", b.Path)
				}
			}
		})
	}
}

// TestHostileBundles: junk, links and kubeconfigs pointing anywhere are
// each a problem of their own; the other bundles are still found.
func TestHostileBundles(t *testing.T) {
	root, n, next := layout(t)
	host := func(p string) string { return root.HostPath(p) }
	old := pkitest.CertPEM(n.CA.Cert)
	write := func(p string, data []byte) {
		os.MkdirAll(filepath.Dir(host(p)), 0o755)
		if err := os.WriteFile(host(p), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("/etc/kubelet-ca/junk.crt", append(append([]byte{}, old...), "garbage after"...))
	write("/etc/kubernetes/pki/real-bundle.pem", old)
	if err := os.Symlink("/etc/kubernetes/pki/real-bundle.pem", host("/etc/kubernetes/pki/linked.crt")); err != nil {
		t.Fatal(err)
	}
	write("/etc/kubernetes/escape.conf", []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://x", certificate-authority: ../../../../../../etc/kubernetes/pki/real-bundle.pem}
- name: d
  cluster: {server: "https://y", certificate-authority: /nowhere/ca.crt}
`))
	// The old CA with garbage after it: the data cannot be edited safely.
	write("/etc/kubernetes/bad.conf", []byte("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: x, certificate-authority-data: "+
		base64.StdEncoding.EncodeToString(append(append([]byte{}, old...), "garbage after"...))+"}\n"))
	src := sources()
	src.Files = []string{"/etc/kubelet-ca/junk.crt", "/etc/kubernetes/pki/ca.key"}
	bundles, problems := Find(root, src, n.CA.Cert)
	joined := ""
	for _, p := range problems {
		joined += p.Error() + "\n"
	}
	for _, want := range []string{"junk.crt", "linked.crt: a symbolic link", "bad.conf", "ca.key"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no problem for %s in:\n%s", want, joined)
		}
	}
	found := map[string]bool{}
	for _, b := range bundles {
		found[b.Path] = true
		if strings.HasPrefix(b.Resolved, "/etc/kubernetes/pki/real") && b.Path != "/etc/kubernetes/pki/real-bundle.pem" {
			t.Errorf("a link was taken as a bundle: %s", b.Path)
		}
	}
	for _, want := range []string{"/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/real-bundle.pem", "/etc/kubernetes/admin.conf"} {
		if !found[want] {
			t.Errorf("%s not found among %v", want, found)
		}
	}
	// The escaping reference stayed inside the root: it is real-bundle.pem.
	for _, b := range bundles {
		if _, err := b.Add(n.CA.Cert, next); err != nil {
			t.Errorf("%s: %v", b.Path, err)
		}
	}
	if _, err := rotate.RewriteTrust(context.Background(), opts(root, nil), []rotate.TrustEdit{{Name: "x", Path: "/etc/kubernetes/pki/ca.crt", Data: []byte("junk")}}); err == nil {
		t.Error("junk written as a bundle")
	}
	leaf, _, _ := n.CA.Issue(pkitest.Spec{CommonName: "leaf", NotBefore: now, NotAfter: now.Add(time.Hour)})
	if _, err := rotate.RewriteTrust(context.Background(), opts(root, nil), []rotate.TrustEdit{{Name: "x", Path: "/etc/kubernetes/pki/ca.crt", Data: pkitest.CertPEM(leaf)}}); err == nil {
		t.Error("a leaf written as a bundle")
	}
}

func TestIssuedBy(t *testing.T) {
	root, n, _ := layout(t)
	leaves := []Leaf{{Name: "apiserver", Path: pkiDir + "/apiserver.crt"}, {Name: "etcd-server", Path: pkiDir + "/etcd/server.crt"},
		{Name: "admin.conf", Path: "/etc/kubernetes/admin.conf", User: "kubernetes-admin"}, {Name: "gone", Path: "/nope.crt"}}
	got, problems := IssuedBy(root, leaves, n.CA.Cert)
	if strings.Join(got, ",") != "apiserver,admin.conf" || len(problems) != 1 {
		t.Errorf("issued by the CA: %v, problems %v", got, problems)
	}
}

// TestStageNeverOverwritesAnInvalidPair: a staged pair that cannot be
// used (its key readable by others, its key not its certificate's, its
// certificate without a key, junk) is refused, "remove it first", and
// left as it was; only a key left without its certificate by a crash of
// Stage itself is replaced.
func TestStageNeverOverwritesAnInvalidPair(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, root *pki.Root)
		want  string
	}{
		{"key mode 0644", func(t *testing.T, root *pki.Root) {
			if err := os.Chmod(root.HostPath(pkiDir+"/ca.next.key"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "chmod 600"},
		{"key of another CA", func(t *testing.T, root *pki.Root) {
			other, _ := pkitest.NewCA("kubernetes", now, now.Add(time.Hour), pkitest.ECDSA)
			writeHost(t, root, pkiDir+"/ca.next.key", pkitest.KeyPEM(other.Key), 0o600)
		}, "is not the key of"},
		{"certificate without its key", func(t *testing.T, root *pki.Root) {
			if err := os.Remove(root.HostPath(pkiDir + "/ca.next.key")); err != nil {
				t.Fatal(err)
			}
		}, "the new CA key"},
		{"junk certificate", func(t *testing.T, root *pki.Root) {
			writeHost(t, root, pkiDir+"/ca.next.crt", []byte("junk\n"), 0o644)
		}, "ca.next.crt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, n, _ := layout(t)
			tc.spoil(t, root)
			beforeCrt, _ := os.ReadFile(root.HostPath(pkiDir + "/ca.next.crt"))
			beforeKey, _ := os.ReadFile(root.HostPath(pkiDir + "/ca.next.key"))
			supplied, skey, err := NewCA(n.CA.Cert, n.CA.Key, now)
			if err != nil {
				t.Fatal(err)
			}
			err = Stage(root, pkiDir, "ca", supplied, skey)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "remove") || !strings.Contains(err.Error(), "first") {
				t.Fatalf("got %v, want a refusal naming %q and saying to remove it first", err, tc.want)
			}
			afterCrt, _ := os.ReadFile(root.HostPath(pkiDir + "/ca.next.crt"))
			afterKey, _ := os.ReadFile(root.HostPath(pkiDir + "/ca.next.key"))
			if string(afterCrt) != string(beforeCrt) || string(afterKey) != string(beforeKey) {
				t.Error("the staged pair was overwritten")
			}
		})
	}
	// A key alone (Stage killed between its two writes) is replaced.
	root, n, _ := layout(t)
	if err := os.Remove(root.HostPath(pkiDir + "/ca.next.crt")); err != nil {
		t.Fatal(err)
	}
	supplied, skey, _ := NewCA(n.CA.Cert, n.CA.Key, now)
	if err := Stage(root, pkiDir, "ca", supplied, skey); err != nil {
		t.Fatalf("a key left alone by a crash: %v", err)
	}
	if cert, _, err := Staged(root, pkiDir, "ca"); err != nil || !cert.Equal(supplied) {
		t.Fatalf("staged after a crash: %v", err)
	}
}

// writeHost writes a file below root as the test's user.
func writeHost(t *testing.T, root *pki.Root, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(root.HostPath(p), data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root.HostPath(p), mode); err != nil {
		t.Fatal(err)
	}
}

// TestKubeconfigNamingItsCAFile: a kubelet.conf that names its CA file
// (certificate-authority, as on a worker whose kubelet.conf points at
// /etc/kubernetes/pki/ca.crt) is no problem: the file it names is the
// bundle, and is found.
func TestKubeconfigNamingItsCAFile(t *testing.T) {
	root, n, _ := layout(t)
	conf := `apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster: {server: "https://127.0.0.1:6443", certificate-authority: /etc/kubernetes/pki/ca.crt}
contexts:
- name: system:node@kubernetes
  context: {cluster: kubernetes, user: system:node}
current-context: system:node@kubernetes
users:
- name: system:node
  user: {client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem, client-key: /var/lib/kubelet/pki/kubelet-client-current.pem}
`
	if err := os.WriteFile(root.HostPath("/etc/kubernetes/kubelet.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	bundles, problems := Find(root, Sources{Kubeconfigs: []string{"/etc/kubernetes/kubelet.conf"}}, n.CA.Cert)
	if len(problems) > 0 {
		t.Errorf("problems: %v", problems)
	}
	if len(bundles) != 1 || bundles[0].Path != "/etc/kubernetes/pki/ca.crt" || bundles[0].Kubeconfig {
		t.Errorf("bundles %+v, want /etc/kubernetes/pki/ca.crt (PEM)", bundles)
	}
}

// TestKubeconfigOfAnotherCluster: a kubeconfig in the Kubernetes
// directory whose cluster certificate-authority-data holds a certificate
// that is no CA (another kind of cluster, a pinned serving certificate)
// does not hold the rotated CA: no problem, not a bundle. With the
// rotated CA beside such a certificate it is a problem (it cannot be
// edited safely), named.
func TestKubeconfigOfAnotherCluster(t *testing.T) {
	root, n, _ := layout(t)
	pinned, _, err := n.CA.Issue(pkitest.Spec{CommonName: "webhook.example", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	write := func(certs ...*x509.Certificate) {
		conf := "apiVersion: v1\nkind: Config\nclusters:\n- name: webhook\n  cluster: {server: \"https://10.0.0.9\", certificate-authority-data: " +
			base64.StdEncoding.EncodeToString(pkitest.CertPEM(certs...)) + "}\n"
		if err := os.WriteFile(root.HostPath("/etc/kubernetes/webhook.conf"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(pinned)
	bundles, problems := Find(root, sources(), n.CA.Cert)
	if len(problems) > 0 {
		t.Errorf("another cluster's kubeconfig is a problem: %v", problems)
	}
	for _, b := range bundles {
		if b.Path == "/etc/kubernetes/webhook.conf" {
			t.Errorf("another cluster's kubeconfig is a bundle to edit: %+v", b)
		}
	}
	write(n.CA.Cert, pinned)
	if _, problems := Find(root, sources(), n.CA.Cert); len(problems) != 1 || !strings.Contains(problems[0].Error(), "webhook.conf") {
		t.Errorf("the rotated CA beside a certificate that is no CA: problems %v", problems)
	}
}
