package integration

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/canode"
	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/config"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
	"github.com/certagent/certagent/test/cluster"
)

// TestCARotationNodeFollowsConfigMap: a worker's daemon, with only the
// node credential, reads the rotation from the real API server, trusts
// the new CA, and in reissue asks for its client certificate again; the
// controller manager still signs with the old CA, so the node stays
// InProgress, saying what is left, and asks again after a backoff.
func TestCARotationNodeFollowsConfigMap(t *testing.T) {
	c := sharedCluster(t)
	ctx := context.Background()
	node := "worker-carotation"
	if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	root := makeNode(t, c, nodeOpts{name: node, age: time.Minute, life: 24 * time.Hour})
	os.WriteFile(filepath.Join(root, "etc/certagent/config.yaml"), []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n"+
		"agent: {retryInitial: 1s, retryMax: 2s, resyncInterval: 2s}\nkubelet: {rotation: certagent}\n"), 0o644)
	os.WriteFile(filepath.Join(root, "var/lib/kubelet/config.yaml"), []byte("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"+
		"authentication: {x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}}\n"), 0o644)
	old := clusterCA(t, c)
	next, nextKey, err := ca.NewCA(old.Cert, old.Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cl := &carotate.Cluster{CA: "ca", ID: carotate.Fingerprint(next), Since: time.Now(), Started: time.Now(),
		OldCA: pkitest.CertPEM(old.Cert), NewCA: pkitest.CertPEM(next), Proof: proveNext(t, old, next), Nodes: []string{node}}
	publish(t, cl, nextKey, carotate.Trust)
	nodesMayRead(t, c)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: carotate.Namespace, Name: carotate.ConfigMapName}, Data: cl.Data()}
	if _, err := c.Admin.CoreV1().ConfigMaps(carotate.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Admin.CoreV1().ConfigMaps(carotate.Namespace).Delete(context.Background(), carotate.ConfigMapName, metav1.DeleteOptions{})
	})
	d := startDaemon(t, certagentBin, root, nil)
	report := func() (carotate.NodeReport, bool) {
		n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return carotate.NodeReport{}, false
		}
		for _, cd := range n.Status.Conditions {
			if string(cd.Type) == carotate.ConditionType {
				return carotate.ParseCondition(cd.Status == corev1.ConditionTrue, cd.Reason, cd.Message)
			}
		}
		return carotate.NodeReport{}, false
	}
	waitFor := func(what string, ok func(carotate.NodeReport) bool) carotate.NodeReport {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			r, found := report()
			if found && ok(r) {
				return r
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %+v\n%s", what, r, d.log())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// The daemon runs with --no-restart (the host has no kubelet unit):
	// the bundles change, and the phase is blocked on the restart, never
	// done without it.
	waitFor("trust blocked on its restarts", func(r carotate.NodeReport) bool {
		return r.ID == cl.ID && r.Phase == carotate.Trust && !r.Done &&
			strings.Contains(r.Blocked, "CA rotation restarts components (kubelet); restarts are off on this node (agent.noRestart)")
	})
	rootFS, _ := pki.NewRoot(root)
	bundles, problems := ca.Find(rootFS, ca.Sources{Dirs: []string{"/etc/kubernetes/pki", "/etc/kubernetes"}, Files: []string{"/etc/kubernetes/pki/ca.crt"}}, old.Cert)
	if len(bundles) < 2 || len(problems) > 0 {
		t.Fatalf("bundles %d, problems %v", len(bundles), problems)
	}
	for _, b := range bundles {
		if !b.Holds(next) || !b.Certs[0].Equal(old.Cert) {
			t.Errorf("%s after trust: new CA %v, old first %v", b.Path, b.Holds(next), b.Certs[0].Equal(old.Cert))
		}
	}
	// Stand in for the kubelet restart the host cannot do: the daemon's
	// record says trust is done here, as a confirmed restart would.
	d.stop(t)
	markDone(t, filepath.Join(root, "var/lib/certagent", canode.IntentFile), carotate.Prepare, carotate.Trust)
	d = startDaemon(t, certagentBin, root, nil)
	// A ConfigMap writer without the new CA's key moves the phase on
	// (trust's proof kept): the node refuses it, naming phaseProof.
	cl.Phase = carotate.Reissue
	cm.Data = cl.Data()
	if _, err := c.Admin.CoreV1().ConfigMaps(carotate.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor("a phase moved without the key refused", func(r carotate.NodeReport) bool {
		return r.Phase == carotate.Reissue && strings.Contains(r.Blocked, "phaseProof is not the new CA key's signature")
	})
	// Reissue: the controller manager signs with the old CA.
	publish(t, cl, nextKey, carotate.Reissue)
	cm.Data = cl.Data()
	if _, err := c.Admin.CoreV1().ConfigMaps(carotate.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := waitFor("reissue in progress", func(r carotate.NodeReport) bool {
		return r.Phase == carotate.Reissue && !r.Done && strings.Contains(r.Left, "kubelet-client-current")
	})
	if r.Blocked != "" {
		t.Errorf("blocked: %s", r.Blocked)
	}
	csrs := func() int {
		l, err := c.Admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			return 0
		}
		n := 0
		for _, r := range l.Items {
			if r.Spec.Username == "system:node:"+node {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for csrs() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the client certificate from the old CA was not asked for again: %d CSRs\n%s", csrs(), d.log())
		}
		time.Sleep(500 * time.Millisecond)
	}
	var s struct {
		CARotation *api.CARotationStatus `json:"caRotation"`
	}
	resp, err := unixClient(d.socket).Get("http://x/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if s.CARotation == nil || s.CARotation.NodePhase != "reissue" || s.CARotation.State != api.RotationInProgress || len(s.CARotation.Left) == 0 {
		t.Errorf("status caRotation: %+v", s.CARotation)
	}
	if r, _ := report(); r.Done {
		t.Error("reissue done while the signer is the old CA")
	}
}

// nodesMayRead lets system:nodes read the rotation ConfigMap, as
// `certagent ca rotate` does in prepare.
func nodesMayRead(t *testing.T, cl *cluster.Cluster) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: carotate.Namespace, Name: "certagent-ca-rotation-test"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{carotate.ConfigMapName}, Verbs: []string{"get", "list", "watch"}}}}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: carotate.Namespace, Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: "system:nodes"}}}
	if _, err := cl.Admin.RbacV1().Roles(carotate.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Admin.RbacV1().RoleBindings(carotate.Namespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Admin.RbacV1().RoleBindings(carotate.Namespace).Delete(context.Background(), rb.Name, metav1.DeleteOptions{})
		cl.Admin.RbacV1().Roles(carotate.Namespace).Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
}

// TestCARotateWithRealDaemon: `certagent ca rotate --until trust` and a
// real daemon on a worker agree through the API server: the command's
// RBAC lets the node read the ConfigMap, the node's condition tells the
// command it is done with prepare and trust, and the node's bundles then
// hold the CA the command made.
func TestCARotateWithRealDaemon(t *testing.T) {
	c := sharedCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, _ := caRotationSetup(t, ctx, c)
	node := "worker-carot-real"
	if _, err := c.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dur, now := int32(3600), metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: carotate.LeaseNamespace},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &node, LeaseDurationSeconds: &dur, RenewTime: &now}}
	if _, err := c.Admin.CoordinationV1().Leases(carotate.LeaseNamespace).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Admin.CoordinationV1().Leases(carotate.LeaseNamespace).Delete(context.Background(), node, metav1.DeleteOptions{})
	})
	nroot := makeNode(t, c, nodeOpts{name: node, age: time.Minute, life: 24 * time.Hour})
	os.WriteFile(filepath.Join(nroot, "etc/certagent/config.yaml"), []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n"+
		"agent: {retryInitial: 1s, retryMax: 2s, resyncInterval: 2s}\n"), 0o644)
	d := startDaemon(t, certagentBin, nroot, nil)
	// The command's precondition: the node runs certagent.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := c.Admin.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err == nil && slices.ContainsFunc(n.Status.Conditions, func(cd corev1.NodeCondition) bool { return string(cd.Type) == carotate.HealthConditionType }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no health condition\n%s", d.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	start := time.Now()
	// The daemon runs with --no-restart: trust edits the bundles and is
	// blocked on the kubelet's restart; the command names the node and why.
	r := run(t, certagentBin, "ca", "rotate", "--root", root, "--until", "trust", "--timeout", "40s")
	if r.code != 7 || !strings.Contains(r.stdout+r.stderr, "restarts are off on this node (agent.noRestart)") {
		t.Fatalf("ca rotate --until trust: exit %d (want 7, the node blocked on its restarts)\n%s\n%s\n%s", r.code, r.stdout, r.stderr, d.log())
	}
	t.Logf("prepare and trust with a real daemon: %s", time.Since(start).Round(time.Millisecond))
	cm, err := c.Admin.CoreV1().ConfigMaps(carotate.Namespace).Get(ctx, carotate.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := carotate.Parse(cm.Data)
	if err != nil || st.Phase != carotate.Trust || slices.Contains(st.NodesDone, node) {
		t.Fatalf("the real node is done with trust without its restarts: %+v %v", st, err)
	}
	_, next, err := canode.Verify(st)
	if err != nil {
		t.Fatal(err)
	}
	rfs, _ := pki.NewRoot(nroot)
	bundles, problems := ca.Find(rfs, ca.Sources{Dirs: []string{"/etc/kubernetes/pki", "/etc/kubernetes"}}, clusterCA(t, c).Cert)
	if len(bundles) < 2 || len(problems) > 0 {
		t.Fatalf("bundles %d, problems %v", len(bundles), problems)
	}
	for _, b := range bundles {
		if !b.Holds(next) {
			t.Errorf("%s lacks the command's new CA", b.Path)
		}
	}
}

// publish moves cl to phase p as the command does: signed with the new
// CA's key (phaseProof).
func publish(t *testing.T, cl *carotate.Cluster, newKey crypto.Signer, p carotate.Phase) {
	t.Helper()
	cl.Phase = p
	if err := cl.SignPhase(newKey); err != nil {
		t.Fatal(err)
	}
}

// proveNext is the proof that old's key chose next, as the command makes it.
func proveNext(t *testing.T, old *pkitest.CA, next *x509.Certificate) []byte {
	t.Helper()
	p, err := ca.Prove(old.Cert, old.Key, next, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// markDone records phases done in a stopped daemon's CA rotation intent.
func markDone(t *testing.T, file string, phases ...carotate.Phase) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var it canode.Intent
	if err := json.Unmarshal(data, &it); err != nil {
		t.Fatal(err)
	}
	it.Pending, it.Done, it.PhasesDone = nil, true, phases
	if data, err = json.Marshal(&it); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// recordRestarts stands in for systemd and the kubelet in an in-process
// node: every restart is confirmed.
// recordRestarts records the restarts asked for (names) and the
// components confirmed after the kubelet restarted them (confirmed).
type recordRestarts struct{ names, confirmed []string }

func (r *recordRestarts) RestartComponents(_ context.Context, _ *config.Config, names []string, _ func()) map[string]error {
	out := map[string]error{}
	for _, n := range names {
		r.names = append(r.names, n)
		out[n] = nil
	}
	return out
}

// stop ends the daemon (SIGTERM) and waits for it.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
}

// ConfirmRestarted: every component is confirmed; none is restarted.
func (r *recordRestarts) ConfirmRestarted(_ context.Context, _ *config.Config, names []string, _ func()) map[string]error {
	out := map[string]error{}
	for _, n := range names {
		r.confirmed = append(r.confirmed, n)
		out[n] = nil
	}
	return out
}

// ReloadTrust: every restart is confirmed, as restarted.
func (r *recordRestarts) ReloadTrust(ctx context.Context, cfg *config.Config, names []string, ping func()) map[string]error {
	return r.RestartComponents(ctx, cfg, names, ping)
}
