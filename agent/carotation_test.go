package agent

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

	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/logfields"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// fakeRotation is the ConfigMap as a Source, counting its reads.
type fakeRotation struct {
	mu    sync.Mutex
	c     *carotate.Cluster
	key   crypto.Signer // the new CA's: signs each phase read, as the command does
	reads int
}

func (f *fakeRotation) Rotation(context.Context) (*carotate.Cluster, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.c == nil {
		return nil, nil
	}
	cp := *f.c
	if err := cp.SignPhase(f.key); err != nil {
		return nil, err
	}
	return &cp, nil
}

func (f *fakeRotation) set(p carotate.Phase) {
	f.mu.Lock()
	f.c.Phase = p
	f.mu.Unlock()
}

func (f *fakeRotation) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// rotationRestarter records restarts; restarting the controller manager
// makes the cluster's signer the new CA.
type rotationRestarter struct {
	mu       sync.Mutex
	named    []string // RestartComponents, in order
	renewed  []string // Restart after renewals: certificate names
	onSigner func()
}

func (r *rotationRestarter) Restart(_ context.Context, _ *config.Config, renewed []restart.Renewed, _ func()) map[string]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rn := range renewed {
		r.renewed = append(r.renewed, rn.Cert.Name)
		if rn.Cert.Name == "controller-manager.conf" {
			r.onSigner()
		}
	}
	return nil
}

func (r *rotationRestarter) Check(context.Context, *config.Config, *inventory.Report, map[string]time.Time) []api.ComponentStatus {
	return nil
}

func (r *rotationRestarter) RestartComponents(_ context.Context, _ *config.Config, names []string, _ func()) map[string]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]error{}
	for _, n := range restart.Components(config.Default()) {
		if slices.Contains(names, n) {
			r.named = append(r.named, n)
			out[n] = nil
			if n == "kube-controller-manager" {
				r.onSigner()
			}
		}
	}
	return out
}

func (r *rotationRestarter) restarts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.named)
}

// conditions records the rotation condition.
type conditions struct {
	events
	mu      sync.Mutex
	reasons []string
}

func (c *conditions) SetCondition(typ string, _ bool, reason, _ string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if typ == carotate.ConditionType && (len(c.reasons) == 0 || c.reasons[len(c.reasons)-1] != reason) {
		c.reasons = append(c.reasons, reason)
	}
}

// signerCSR issues the kubelet's client certificate from the cluster's
// signer of the moment.
type signerCSR struct {
	mu     sync.Mutex
	signer *pkitest.CA
	old    *pkitest.CA
	asked  int
	root   *pki.Root
	now    func() time.Time
}

func (s *signerCSR) RenewCSR(_ context.Context, job renewal.CSRJob) renewal.Result {
	s.mu.Lock()
	signer := s.signer
	s.asked++
	if s.asked == 1 {
		signer = s.old // a signer not restarted yet answers from the old CA
	}
	s.mu.Unlock()
	now := s.now()
	cert, key, err := signer.Issue(pkitest.Spec{CommonName: "system:node:node1", Organization: []string{"system:nodes"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(240 * time.Hour)})
	if err != nil {
		return renewal.Failed(job.Cert, "csr", err)
	}
	store := rotate.KubeletStore{Root: s.root, Dir: job.Config.KubeletPKIDir, Prefix: "kubelet-client", BackupDir: job.Config.Renewal.BackupDir}
	if _, _, err := store.Update([]*x509.Certificate{cert}, key, nil, now); err != nil {
		return renewal.Failed(job.Cert, "csr", err)
	}
	return renewal.Result{Cert: job.Cert, Method: "csr", Started: now, Finished: now, OldSerial: job.Cert.Serial,
		NewSerial: strings.ToUpper(cert.SerialNumber.Text(16)), NotAfter: cert.NotAfter}
}

// controlPlane writes a kubeadm control-plane node with its manifests and
// kubelet config, and stages a new CA; it returns the rotation.
func controlPlane(t *testing.T, dir string) (*pkitest.Node, *pkitest.CA, *carotate.Cluster) {
	t.Helper()
	n, err := (pkitest.Layout{Now: t0, LeafLifetime: 10 * 24 * time.Hour, KubeletConfReference: true}).Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/kubernetes/manifests/etcd.yaml":                    "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
		"etc/kubernetes/manifests/kube-apiserver.yaml":          "--client-ca-file=/etc/kubernetes/pki/ca.crt --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt",
		"etc/kubernetes/manifests/kube-controller-manager.yaml": "--kubeconfig=/etc/kubernetes/controller-manager.conf --root-ca-file=/etc/kubernetes/pki/ca.crt",
		"etc/kubernetes/manifests/kube-scheduler.yaml":          "--kubeconfig=/etc/kubernetes/scheduler.conf",
		"var/lib/kubelet/config.yaml":                           "authentication:\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\n",
	}
	for p, data := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root, _ := pki.NewRoot(dir)
	next, key, err := ca.NewCA(n.CA.Cert, n.CA.Key, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Stage(root, "/etc/kubernetes/pki", "ca", next, key); err != nil {
		t.Fatal(err)
	}
	c := &carotate.Cluster{CA: "ca", ID: carotate.Fingerprint(next), Phase: carotate.Prepare, Since: t0, Started: t0,
		OldCA: pkitest.CertPEM(n.CA.Cert), NewCA: pkitest.CertPEM(next), Proof: prove(t, n.CA, next), Nodes: []string{"node1"}}
	return n, &pkitest.CA{Cert: next, Key: key}, c
}

// TestCARotationOnNode runs every phase of a rotation on a control-plane
// node through the daemon's loop: the ConfigMap read once per resync
// while there is none, the bundles, the signer switch, re-issues from the
// local CA and through a CSR retried while it comes from the old CA, the
// restarts (one per component and phase), the condition and status.
func TestCARotationOnNode(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	dir := t.TempDir()
	n, next, cluster := controlPlane(t, dir)
	root, _ := pki.NewRoot(dir)
	src := &fakeRotation{}
	csr := &signerCSR{signer: n.CA, old: n.CA, root: root, now: clk.Now}
	rs := &rotationRestarter{onSigner: func() {
		csr.mu.Lock()
		csr.signer = next
		csr.mu.Unlock()
	}}
	rep := &conditions{}
	h := newHarnessWith(t, dir, clk, "", func(o *Options) {
		o.CARotation, o.Restarter, o.CSR, o.Reporter = src, rs, csr, rep
	})
	defer h.stop()
	for i := 0; i < 5; i++ {
		h.a.Rescan("test")
	}
	h.waitFor("passes", func(s *api.Status) bool { return s.Daemon.Scans >= 2 })
	if got := src.count(); got != 1 {
		t.Fatalf("%d reads of the ConfigMap without a rotation, want 1 per resync", got)
	}
	if s := h.status(); s.CARotation != nil {
		t.Fatalf("caRotation without a rotation: %+v", s.CARotation)
	}
	// The next read comes with the resync (5m), not before.
	for src.count() < 2 {
		if clk.Since(t0) >= 12*time.Minute {
			t.Fatal("no second read of the ConfigMap in two resyncs")
		}
		if n := src.count(); n != 1 && clk.Since(t0) < 5*time.Minute {
			t.Fatalf("%d reads %s after the start, before a resync", n, clk.Since(t0))
		}
		advance(h, clk, time.Minute)
	}
	if clk.Since(t0) < 5*time.Minute {
		t.Fatalf("read again %s after the start, before a resync", clk.Since(t0))
	}
	src.mu.Lock()
	src.c, src.key = cluster, next.Key
	src.mu.Unlock()
	phase := func(p carotate.Phase) *api.Status {
		t.Helper()
		src.set(p)
		advance(h, clk, 5*time.Minute) // the resync reads it
		// Passes come with the clock (backoffs, polls) and with CSR jobs'
		// ends: step it until the phase is done.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			if s := h.status(); s.CARotation != nil && s.CARotation.NodePhase == string(p) && s.CARotation.State == api.RotationDone {
				return s
			}
			advance(h, clk, 10*time.Second)
		}
		st := h.status()
		csr.mu.Lock()
		asked := csr.asked
		csr.mu.Unlock()
		rs.mu.Lock()
		t.Fatalf("phase %s not done at %s: %+v; %d CSRs; kubelet-client-current %+v; restarts %v after %v", p, clk.Now(), st.CARotation, asked, cert(st, "kubelet-client-current").Renewal, rs.named, rs.renewed)
		return nil
	}
	phase(carotate.Prepare)
	phase(carotate.Trust)
	want := []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}
	if got := rs.restarts(); !slices.Equal(got, want) {
		t.Errorf("trust restarted %v, want %v", got, want)
	}
	bundles, _ := ca.Find(root, ca.Sources{Dirs: []string{"/etc/kubernetes/pki", "/etc/kubernetes"}}, n.CA.Cert)
	for _, b := range bundles {
		if !b.Holds(next.Cert) {
			t.Errorf("%s lacks the new CA after trust", b.Path)
		}
	}
	s := phase(carotate.Reissue)
	if csr.asked < 2 {
		t.Errorf("the kubelet's certificate was asked for %d times; the first answer came from the old CA", csr.asked)
	}
	var leaves []ca.Leaf
	for _, c := range s.Certificates {
		l := ca.Leaf{Name: c.Name, Path: c.Path}
		if c.Kind == inventory.KindKubeconfigEmbedded {
			l.User = c.User
		}
		leaves = append(leaves, l)
	}
	if old, _ := ca.IssuedBy(root, leaves, n.CA.Cert); len(old) > 0 {
		t.Errorf("still from the old CA after reissue: %v", old)
	}
	if lc, err := rotate.LoadLocalCA(root, "ca", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key"); err != nil || !lc.Cert.Equal(next.Cert) {
		t.Errorf("signer not switched: %v", err)
	}
	phase(carotate.Finish)
	if left, _ := ca.Find(root, ca.Sources{Dirs: []string{"/etc/kubernetes/pki", "/etc/kubernetes"}, Kubeconfigs: []string{"/etc/kubernetes/kubelet.conf"}}, n.CA.Cert); len(left) > 0 {
		t.Errorf("the old CA is still in %s", left[0].Path)
	}
	if _, err := os.Stat(filepath.Join(dir, "etc/kubernetes/pki/ca.next.key")); !os.IsNotExist(err) {
		t.Error("ca.next.key left after finish")
	}
	phase(carotate.Done)
	// Each of trust, reissue and finish restarts each reader once (the
	// renewals of reissue are in the intent, so a crash does not lose
	// their restarts).
	count := map[string]int{}
	for _, c := range rs.restarts() {
		count[c]++
	}
	for _, c := range want {
		w := 3
		if c == "kubelet" {
			w = 2 // reissue restarts it after its CSR job, below
		}
		if count[c] != w {
			t.Errorf("%s restarted %d times by the phases, want %d (one per phase)", c, count[c], w)
		}
	}
	rs.mu.Lock()
	kubeletJob := slices.Contains(rs.renewed, "kubelet-client-current")
	rs.mu.Unlock()
	if !kubeletJob {
		t.Error("reissue did not restart the kubelet after its CSR job")
	}
	if h.events(logfields.MsgCAPhaseDone) != 5 || h.events(logfields.MsgCAPhaseStart) != 5 {
		t.Errorf("%d phase starts, %d phase ends logged", h.events(logfields.MsgCAPhaseStart), h.events(logfields.MsgCAPhaseDone))
	}
	rep.mu.Lock()
	reasons := strings.Join(rep.reasons, " ")
	rep.mu.Unlock()
	for _, r := range []string{"PrepareDone", "TrustDone", "ReissueInProgress", "ReissueDone", "FinishDone", "DoneDone"} {
		if !strings.Contains(reasons, r) {
			t.Errorf("condition %s never reported: %s", r, reasons)
		}
	}
}

// prove is the proof that old's key chose next, as the command makes it.
func prove(t *testing.T, old *pkitest.CA, next *x509.Certificate) []byte {
	t.Helper()
	p, err := ca.Prove(old.Cert, old.Key, next, t0)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// heldCSR writes the certificate like signerCSR, then holds the job (as
// a real job is still restarting the kubelet) until release.
type heldCSR struct {
	*signerCSR
	once     sync.Once
	written  chan struct{}
	release  chan struct{}
	finished chan struct{}
}

func (h *heldCSR) RenewCSR(ctx context.Context, job renewal.CSRJob) renewal.Result {
	r := h.signerCSR.RenewCSR(ctx, job)
	h.once.Do(func() { close(h.written) })
	<-h.release
	defer close(h.finished)
	return r
}

// TestCARotationReissueWaitsForCSRJob: a CSR job has put the new
// certificate on disk but is not over (its user is not restarted yet):
// the node does not report reissue done until the job is over.
func TestCARotationReissueWaitsForCSRJob(t *testing.T) {
	clk := testingclock.NewFakeClock(t0)
	dir := t.TempDir()
	n, next, cluster := controlPlane(t, dir)
	root, _ := pki.NewRoot(dir)
	csr := &heldCSR{signerCSR: &signerCSR{signer: next, old: n.CA, asked: 1, root: root, now: clk.Now},
		written: make(chan struct{}), release: make(chan struct{}), finished: make(chan struct{})}
	rs := &rotationRestarter{onSigner: func() {}}
	src := &fakeRotation{c: cluster, key: next.Key}
	h := newHarnessWith(t, dir, clk, "", func(o *Options) {
		o.CARotation, o.Restarter, o.CSR, o.Reporter = src, rs, csr, &conditions{}
	})
	defer h.stop()
	defer close(csr.release)
	done := func(p carotate.Phase) bool {
		s := h.status()
		return s.CARotation != nil && s.CARotation.NodePhase == string(p) && s.CARotation.State == api.RotationDone
	}
	for _, p := range []carotate.Phase{carotate.Prepare, carotate.Trust, carotate.Reissue} {
		src.set(p)
		advance(h, clk, 5*time.Minute)
		if p == carotate.Reissue {
			break
		}
		for deadline := time.Now().Add(30 * time.Second); !done(p); advance(h, clk, 10*time.Second) {
			if time.Now().After(deadline) {
				t.Fatalf("phase %s not done: %+v", p, h.status().CARotation)
			}
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; advance(h, clk, 10*time.Second) {
		select {
		case <-csr.written:
		default:
			if time.Now().After(deadline) {
				t.Fatalf("no CSR job for the kubelet's certificate: %+v", h.status().CARotation)
			}
			continue
		}
		break
	}
	// Passes while the job holds: the disk has no certificate of the old
	// CA left, but the job is not over.
	for i := 0; i < 5; i++ {
		h.a.Rescan("test")
		advance(h, clk, 10*time.Second)
		if done(carotate.Reissue) {
			t.Fatalf("reissue reported done while the kubelet's CSR job was not over: %+v", h.status().CARotation)
		}
	}
	csr.release <- struct{}{}
	<-csr.finished
	for deadline := time.Now().Add(30 * time.Second); !done(carotate.Reissue); advance(h, clk, 10*time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("reissue not done after the CSR job: %+v", h.status().CARotation)
		}
	}
}

// ConfirmRestarted: the fake confirms as it restarts.
func (r *rotationRestarter) ConfirmRestarted(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error {
	return r.RestartComponents(ctx, cfg, names, ping)
}

// ReloadTrust: the fake restarts whatever it is asked to.
func (r *rotationRestarter) ReloadTrust(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error {
	return r.RestartComponents(ctx, cfg, names, ping)
}
