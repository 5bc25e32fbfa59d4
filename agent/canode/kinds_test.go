package canode

import (
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestWorkerOutsideTheRotatedCA: a kubeadm worker holds neither the etcd
// CA nor the front-proxy CA (its PKI directory has ca.crt alone): in
// their rotations every phase is done on it at once, with no file
// changed and nothing restarted, and no phase asks it to renew anything.
func TestWorkerOutsideTheRotatedCA(t *testing.T) {
	for _, name := range []string{"etcd-ca", "front-proxy-ca"} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, true)
			pkiDir := filepath.Join(f.dir, "etc/kubernetes/pki")
			entries, _ := os.ReadDir(pkiDir)
			for _, e := range entries {
				if e.Name() != "ca.crt" {
					os.RemoveAll(filepath.Join(pkiDir, e.Name()))
				}
			}
			old := map[string]*pkitest.CA{"etcd-ca": f.node.EtcdCA, "front-proxy-ca": f.node.FrontProxy}[name]
			next, key, err := ca.NewCA(old.Cert, old.Key, now)
			if err != nil {
				t.Fatal(err)
			}
			f.keys = append(f.keys, key)
			f.cluster = &carotate.Cluster{CA: name, ID: carotate.Fingerprint(next), Since: now, Started: now,
				OldCA: pkitest.CertPEM(old.Cert), NewCA: pkitest.CertPEM(next), Proof: prove(t, old, next)}
			before := tree(t, f.dir)
			rec := &recorder{}
			for _, p := range carotate.Phases {
				f.cluster.Phase = p
				out := f.converge(t, rec, nil, Leaf{Leaf: ca.Leaf{Name: "kubelet-client-current", Path: "/var/lib/kubelet/pki/kubelet-client-current.pem"}, CSR: true})
				if !out.Report.Done || out.Report.HasNewKey || len(out.Renew) > 0 {
					t.Fatalf("phase %s: %+v", p, out)
				}
			}
			if len(rec.done) > 0 {
				t.Errorf("restarted %v", rec.done)
			}
			after := tree(t, f.dir)
			for p, sum := range before {
				if after[p] != sum {
					t.Errorf("%s changed", p)
				}
			}
		})
	}
}

// tree hashes every file (a symbolic link: its target) below dir but
// the daemon's state directory.
func tree(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Base(filepath.Dir(p)) == "certagent" {
			return err
		}
		var data []byte
		if d.Type()&fs.ModeSymlink != 0 {
			target, lerr := os.Readlink(p)
			data, err = []byte(target), lerr
		} else {
			data, err = os.ReadFile(p)
		}
		out[p] = sha256.Sum256(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// kubeadmFlags are the lines of kubeadm's static pod manifests that name
// a CA file or a kubeconfig.
var kubeadmFlags = map[string]string{
	"etcd.yaml": "- --peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt\n- --trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt\n",
	"kube-apiserver.yaml": "- --client-ca-file=/etc/kubernetes/pki/ca.crt\n- --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt\n" +
		"- --requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt\n",
	"kube-controller-manager.yaml": "- --client-ca-file=/etc/kubernetes/pki/ca.crt\n- --kubeconfig=/etc/kubernetes/controller-manager.conf\n" +
		"- --requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt\n- --root-ca-file=/etc/kubernetes/pki/ca.crt\n",
	"kube-scheduler.yaml": "- --kubeconfig=/etc/kubernetes/scheduler.conf\n",
}

// TestTrustRestartsTheCAsReaders: on a control-plane node with kubeadm's
// manifests, trust restarts, in order, exactly the components that read
// the rotated CA's file (or a kubeconfig that embeds it), and edits no
// other CA's file.
func TestTrustRestartsTheCAsReaders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		want    []string
		reloads []string // asked to reload by themselves first (ReloadTrust)
	}{
		{"ca", []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}, []string{"kube-apiserver"}},
		// kube-apiserver reads the etcd CA as --etcd-cafile: no reload.
		{"etcd-ca", []string{"etcd", "kube-apiserver"}, nil},
		{"front-proxy-ca", []string{"kube-apiserver", "kube-controller-manager"}, []string{"kube-apiserver"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, false)
			for m, flags := range kubeadmFlags {
				if err := os.WriteFile(filepath.Join(f.dir, "etc/kubernetes/manifests", m), []byte(flags), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			stem, _ := ca.Stem(tc.name)
			if tc.name != "ca" { // the fixture's rotation is of ca
				old := map[string]*pkitest.CA{"etcd-ca": f.node.EtcdCA, "front-proxy-ca": f.node.FrontProxy}[tc.name]
				next, key, err := ca.NewCA(old.Cert, old.Key, now)
				if err != nil {
					t.Fatal(err)
				}
				if err := ca.Stage(f.root, "/etc/kubernetes/pki", stem, next, key); err != nil {
					t.Fatal(err)
				}
				f.keys = append(f.keys, key)
				f.cluster = &carotate.Cluster{CA: tc.name, ID: carotate.Fingerprint(next), Phase: carotate.Trust, Since: now, Started: now,
					OldCA: pkitest.CertPEM(old.Cert), NewCA: pkitest.CertPEM(next), Proof: prove(t, old, next)}
			}
			before := tree(t, filepath.Join(f.dir, "etc/kubernetes/pki"))
			rec := &recorder{}
			if out := f.converge(t, rec, nil); !out.Report.Done {
				t.Fatalf("trust: %+v", out.Report)
			}
			if !slices.Equal(rec.done, tc.want) {
				t.Errorf("restarted %v, want %v", rec.done, tc.want)
			}
			if !slices.Equal(rec.reloads, tc.reloads) {
				t.Errorf("asked to reload %v, want %v", rec.reloads, tc.reloads)
			}
			own := filepath.Join(f.dir, "etc/kubernetes/pki", stem+".crt")
			for p, sum := range tree(t, filepath.Join(f.dir, "etc/kubernetes/pki")) {
				if was, ok := before[p]; ok && was != sum && p != own && !strings.HasSuffix(p, ".signer.crt") {
					t.Errorf("%s changed", p)
				}
			}
		})
	}
}

// TestIntentReloadOnly: a component stays reload-only while every cause
// to restart it is a file it reloads by itself; one other cause (another
// flag, a renewal) makes it a restart for good, and a confirmation
// forgets it.
func TestIntentReloadOnly(t *testing.T) {
	it := &Intent{}
	it.addPendingReload("kube-apiserver", true)
	it.addPendingReload("kube-apiserver", true)
	if !slices.Equal(it.ReloadOnly, []string{"kube-apiserver"}) {
		t.Fatalf("reload-only %v", it.ReloadOnly)
	}
	it.addPendingReload("kube-apiserver", false)
	it.addPendingReload("kube-apiserver", true)
	if len(it.ReloadOnly) != 0 {
		t.Errorf("a cause it does not reload is forgotten: %v", it.ReloadOnly)
	}
	it = &Intent{}
	it.addPendingReload("kube-apiserver", true)
	it.addPendingAt(now, "kube-apiserver")
	if len(it.ReloadOnly) != 0 {
		t.Errorf("a renewal is a reload: %v", it.ReloadOnly)
	}
	it = &Intent{}
	it.addPendingReload("kube-apiserver", true)
	it.confirmed("kube-apiserver")
	if len(it.ReloadOnly)+len(it.Pending) != 0 {
		t.Errorf("confirmed, still %v %v", it.ReloadOnly, it.Pending)
	}
}

// TestAPIServerReloadsOnlyItsClientCAs: kube-apiserver is asked to reload
// a bundle only when its manifest names it in its client CA flags alone,
// and no flag names a configuration file that could name it too.
func TestAPIServerReloadsOnlyItsClientCAs(t *testing.T) {
	for _, tc := range []struct {
		name, flags string
		want        bool
	}{
		{"client CA", "- --client-ca-file=/etc/kubernetes/pki/ca.crt\n", true},
		{"request header CA", "- --requestheader-client-ca-file=/etc/kubernetes/pki/ca.crt\n", true},
		{"also the kubelet's CA", "- --client-ca-file=/etc/kubernetes/pki/ca.crt\n- --kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt\n", false},
		{"a webhook kubeconfig", "- --client-ca-file=/etc/kubernetes/pki/ca.crt\n- --authorization-webhook-config-file=/etc/kubernetes/webhook.conf\n", false},
		{"not named", "- --client-ca-file=/etc/kubernetes/pki/other.crt\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, false)
			if err := os.WriteFile(filepath.Join(f.dir, "etc/kubernetes/manifests/kube-apiserver.yaml"), []byte(tc.flags), 0o644); err != nil {
				t.Fatal(err)
			}
			s := &step{n: &Node{Root: f.root}, in: Input{Config: f.cfg}}
			if got := s.apiserverReloads("/etc/kubernetes/pki/ca.crt"); got != tc.want {
				t.Errorf("reloads: %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRetireReadsTheDaemonsStateDir: the local CA learns the CA it
// replaces from the intent where the daemon keeps it: agent.stateDir
// below the root, or the operator's `run --state-dir` host path (before,
// the latter was never read, and reissue re-signed nothing).
func TestRetireReadsTheDaemonsStateDir(t *testing.T) {
	for _, host := range []bool{false, true} {
		f := newFixture(t, false)
		pkiDir := filepath.Join(f.dir, "etc/kubernetes/pki")
		if err := os.WriteFile(filepath.Join(pkiDir, "ca.crt"), pkitest.CertPEM(f.next.Cert, f.node.CA.Cert), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pkiDir, "ca.key"), pkitest.KeyPEM(f.next.Key), 0o600); err != nil {
			t.Fatal(err)
		}
		agent := config.Agent{StateDir: "/var/lib/certagent"}
		dir := filepath.Join(f.dir, "var/lib/certagent")
		if host {
			dir = t.TempDir()
			agent.StateHostDir = dir
		}
		os.MkdirAll(dir, 0o700)
		it := &Intent{ID: carotate.Fingerprint(f.next.Cert), CA: "ca", OldCA: pkitest.CertPEM(f.node.CA.Cert)}
		if err := it.save(dir); err != nil {
			t.Fatal(err)
		}
		lc, err := rotate.LoadLocalCA(f.root, "ca", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key")
		if err != nil {
			t.Fatal(err)
		}
		Retire(f.root, agent, lc)
		if len(lc.Previous) != 1 || !lc.Previous[0].Equal(f.node.CA.Cert) {
			t.Errorf("state dir on the host %v: the CA replaced is %v, want the old one", host, lc.Previous)
		}
	}
}

// TestSignerFlagElsewhere: a controller manager whose signer flag names a
// ca.crt outside the PKI directory is not given certagent's signer file
// (it would name a file never written, and crash): its manifest is left
// as it is through the rotation.
func TestSignerFlagElsewhere(t *testing.T) {
	f := newFixture(t, false)
	m := filepath.Join(f.dir, "etc/kubernetes/manifests/kube-controller-manager.yaml")
	flags := "- --kubeconfig=/etc/kubernetes/controller-manager.conf\n- --cluster-signing-cert-file=/opt/signer/ca.crt\n"
	if err := os.WriteFile(m, []byte(flags), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &step{n: &Node{Root: f.root}, in: Input{Config: f.cfg}, stem: "ca"}
	if got := s.signerManifest(); got != "" {
		t.Errorf("signer manifest %q, want none", got)
	}
	f.cluster.Phase = carotate.Prepare
	f.converge(t, &recorder{}, nil)
	if b, _ := os.ReadFile(m); string(b) != flags {
		t.Errorf("the manifest changed:\n%s", b)
	}
}
