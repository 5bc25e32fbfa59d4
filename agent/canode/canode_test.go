package canode

import (
	"context"
	"crypto"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

var now = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// recorder restarts by recording; dieAfter > 0 kills the "daemon" (a
// panic) once that many components restarted.
type recorder struct {
	mu       sync.Mutex
	done     []string
	reloads  []string // of done, those asked through ReloadTrust
	confirms []string // restarted by the kubelet, confirmed (not in done)
	// confirmErr: ConfirmRestarted fails with it (the component stays
	// unhealthy).
	confirmErr error
	dieAfter   int
}

func (r *recorder) RestartComponents(_ context.Context, _ *config.Config, names []string, _ func()) map[string]error {
	out := map[string]error{}
	for _, n := range names {
		r.mu.Lock()
		if r.dieAfter > 0 && len(r.done) == r.dieAfter {
			r.mu.Unlock()
			panic("killed while restarting " + n)
		}
		r.done = append(r.done, n)
		r.mu.Unlock()
		out[n] = nil
	}
	return out
}

type fixture struct {
	root    *pki.Root
	dir     string
	state   string
	node    *pkitest.Node
	next    *pkitest.CA
	cluster *carotate.Cluster
	cfg     *config.Config
	// keys are the new CAs' keys the "command" holds: converge signs
	// the cluster's phase with the one of its newCA (none: as it is).
	keys []crypto.Signer
}

// newFixture writes a kubeadm node (a worker: no CA keys, no manifests,
// when worker is set) with a kubelet that reads ca.crt as its client CA.
func newFixture(t *testing.T, worker bool) *fixture {
	t.Helper()
	dir := t.TempDir()
	n, err := (pkitest.Layout{Now: now, KubeletConfReference: true}).Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	put := func(p, data string) {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("var/lib/kubelet/config.yaml", "authentication: {x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}}\n")
	if worker {
		for _, f := range []string{"ca.key", "etcd/ca.key", "front-proxy-ca.key"} {
			os.Remove(filepath.Join(dir, "etc/kubernetes/pki", f))
		}
	} else {
		put("etc/kubernetes/manifests/kube-apiserver.yaml", "- --client-ca-file=/etc/kubernetes/pki/ca.crt\n")
		put("etc/kubernetes/manifests/kube-controller-manager.yaml", "- --kubeconfig=/etc/kubernetes/controller-manager.conf\n")
		put("etc/kubernetes/manifests/etcd.yaml", "- --peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt\n")
	}
	root, _ := pki.NewRoot(dir)
	next, key, err := ca.NewCA(n.CA.Cert, n.CA.Key, now)
	if err != nil {
		t.Fatal(err)
	}
	if !worker {
		if err := ca.Stage(root, "/etc/kubernetes/pki", "ca", next, key); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "var/lib/certagent")
	os.MkdirAll(state, 0o700)
	return &fixture{root: root, dir: dir, state: state, node: n, next: &pkitest.CA{Cert: next, Key: key}, cfg: config.Default(), keys: []crypto.Signer{key},
		cluster: &carotate.Cluster{CA: "ca", ID: carotate.Fingerprint(next), Phase: carotate.Trust, Since: now, Started: now,
			OldCA: pkitest.CertPEM(n.CA.Cert), NewCA: pkitest.CertPEM(next), Proof: prove(t, n.CA, next)}}
}

func (f *fixture) converge(t *testing.T, r Restarter, hooks rotate.Hooks, leaves ...Leaf) Outcome {
	f.sign(t)
	log, _ := test.NewNullLogger()
	n := &Node{Root: f.root, StateDir: f.state, Log: log, Restarter: r, Hooks: hooks}
	return n.Converge(context.Background(), Input{Cluster: f.cluster, Config: f.cfg, Leaves: leaves, Now: now})
}

// survive runs a converge that the daemon's death interrupts.
func (f *fixture) survive(t *testing.T, r Restarter, hooks rotate.Hooks) {
	defer func() {
		if recover() == nil {
			t.Fatal("the daemon was not killed")
		}
	}()
	f.converge(t, r, hooks)
}

// TestTrustResumesAfterKill: a daemon killed in the middle of the
// restarts restarts, when it starts again, only those still pending; one
// killed in the middle of the bundle transaction redoes the edits.
func TestTrustResumesAfterKill(t *testing.T) {
	want := []string{"kube-apiserver", "kube-controller-manager", "kubelet"}
	t.Run("restarts", func(t *testing.T) {
		f := newFixture(t, false)
		r := &recorder{dieAfter: 1}
		f.survive(t, r, nil)
		r.dieAfter = 0
		out := f.converge(t, r, nil)
		if !out.Report.Done || !slices.Equal(r.done, want) {
			t.Fatalf("done %v, restarts %v, report %+v", out.Report.Done, r.done, out.Report)
		}
		if again := f.converge(t, r, nil); !again.Report.Done || len(r.done) != len(want) {
			t.Errorf("a done phase restarted again: %v", r.done)
		}
	})
	for _, stop := range []string{"staged", "renamed-one", "synced"} {
		t.Run(stop, func(t *testing.T) {
			f := newFixture(t, false)
			r := &recorder{}
			f.survive(t, r, panicAt(stop))
			rotate.Repair(f.root, rotate.DefaultBackupDir) // the daemon's start
			out := f.converge(t, r, nil)
			if !out.Report.Done || !slices.Equal(r.done, want) {
				t.Fatalf("after a kill at %s: done %v, restarts %v, %+v", stop, out.Report.Done, r.done, out.Report)
			}
			bundles, _ := ca.Find(f.root, ca.Sources{Dirs: []string{"/etc/kubernetes/pki", "/etc/kubernetes"}}, f.node.CA.Cert)
			for _, b := range bundles {
				if !b.Holds(f.next.Cert) {
					t.Errorf("%s lacks the new CA", b.Path)
				}
			}
		})
	}
}

type panicAt string

func (p panicAt) Step(name string) {
	if string(p) == name {
		panic("killed at " + name)
	}
}

// TestBlocked: what stops a node is said, not guessed around.
func TestBlocked(t *testing.T) {
	f := newFixture(t, false)
	os.Remove(filepath.Join(f.dir, "etc/kubernetes/pki/ca.next.key"))
	f.cluster.Phase = carotate.Reissue
	out := f.converge(t, &recorder{}, nil)
	if !strings.Contains(out.Report.Blocked, "the new CA key is not on this node: /etc/kubernetes/pki/ca.next.key is missing") || out.Status.State != "blocked" {
		t.Errorf("no new key: %+v", out.Report)
	}
	f.cluster.ID = strings.Repeat("0", 64)
	if out := f.converge(t, &recorder{}, nil); !strings.Contains(out.Report.Blocked, "fingerprint") {
		t.Errorf("wrong id: %+v", out.Report)
	}
	f.cluster.NewCA, f.cluster.ID = pkitest.CertPEM(f.node.FrontProxy.Cert), carotate.Fingerprint(f.node.FrontProxy.Cert)
	if out := f.converge(t, &recorder{}, nil); !strings.Contains(out.Report.Blocked, "subject") {
		t.Errorf("another subject: %+v", out.Report)
	}
	// A rotation of another CA of the same name never switches this one.
	h := newFixture(t, false)
	other, _ := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(time.Hour), pkitest.ECDSA)
	onext, _, _ := ca.NewCA(other.Cert, other.Key, now)
	h.cluster.Phase, h.cluster.OldCA, h.cluster.NewCA, h.cluster.ID = carotate.Reissue, pkitest.CertPEM(other.Cert), pkitest.CertPEM(onext), carotate.Fingerprint(onext)
	h.cluster.Proof = prove(t, other, onext)
	if out := h.converge(t, &recorder{}, nil); !strings.Contains(out.Report.Blocked, "is not the CA in /etc/kubernetes/pki/ca.crt") {
		t.Errorf("another CA's rotation: %+v", out.Report)
	}
	g := newFixture(t, false)
	if err := os.WriteFile(filepath.Join(g.dir, "etc/kubernetes/pki/ca.crt"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := g.converge(t, &recorder{}, nil); out.Report.Blocked == "" || out.Report.Done {
		t.Errorf("a junk ca.crt: %+v", out.Report)
	}
}

// TestWorkerReissue: a node without the CA key switches nothing and asks
// the cluster again for what the old CA issued.
func TestWorkerReissue(t *testing.T) {
	f := newFixture(t, true)
	f.cluster.Phase = carotate.Reissue
	leaves := []Leaf{{Leaf: ca.Leaf{Name: "kubelet-client-current", Path: "/var/lib/kubelet/pki/kubelet-client-current.pem"}, CSR: true},
		{Leaf: ca.Leaf{Name: "kubelet.crt", Path: "/var/lib/kubelet/pki/kubelet.crt"}}}
	out := f.converge(t, &recorder{}, nil, leaves...)
	if out.Report.Done || !slices.Equal(out.Renew, []string{"kubelet-client-current"}) || out.Report.HasNewKey {
		t.Fatalf("worker reissue: %+v", out)
	}
	if !strings.Contains(out.Report.Left, "kubelet-client-current") {
		t.Errorf("left: %q", out.Report.Left)
	}
	// A certificate of the old CA that nothing here renews blocks the
	// phase, named; the others are still renewed.
	wc, wk, _ := f.node.CA.Issue(pkitest.Spec{CommonName: "webhook", NotBefore: now, NotAfter: now.Add(time.Hour)})
	os.WriteFile(filepath.Join(f.dir, "etc/webhook.crt"), append(pkitest.CertPEM(wc), pkitest.KeyPEM(wk)...), 0o600)
	leaves = append(leaves, Leaf{Leaf: ca.Leaf{Name: "webhook", Path: "/etc/webhook.crt"}, Fixed: true, Why: "renewal path external"})
	out = f.converge(t, &recorder{}, nil, leaves...)
	if !strings.Contains(out.Report.Blocked, "webhook (/etc/webhook.crt) is from the old CA") || !slices.Equal(out.Renew, []string{"kubelet-client-current"}) {
		t.Errorf("a certificate nothing renews: %+v", out)
	}
}

// sign signs the cluster's phase as the command does (phaseProof), with
// the key of its newCA among f.keys; without it the proof is left as it
// is.
func (f *fixture) sign(t *testing.T) {
	t.Helper()
	next, err := onePEM(f.cluster.NewCA)
	if err != nil {
		return
	}
	for _, k := range f.keys {
		if pki.KeyMatches(next, k) {
			if err := f.cluster.SignPhase(k); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
}

// prove is the proof that old's key chose next, as the command makes it.
func prove(t *testing.T, old *pkitest.CA, next *x509.Certificate) []byte {
	t.Helper()
	p, err := ca.Prove(old.Cert, old.Key, next, now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ConfirmRestarted: the recorder records the ask; nothing is restarted.
func (r *recorder) ConfirmRestarted(_ context.Context, _ *config.Config, names []string, _ func()) map[string]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]error{}
	for _, n := range names {
		out[n] = r.confirmErr
		if r.confirmErr == nil {
			r.confirms = append(r.confirms, n)
		}
	}
	return out
}

// ReloadTrust: the recorder records the ask, then restarts as asked.
func (r *recorder) ReloadTrust(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error {
	r.mu.Lock()
	r.reloads = append(r.reloads, names...)
	r.mu.Unlock()
	return r.RestartComponents(ctx, cfg, names, ping)
}
