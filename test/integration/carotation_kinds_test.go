package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/canode"
	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/rotate"
	ca "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// kubeletClientCA is the part of kubeadm's kubelet configuration the
// rotation reads: the kubelet's client CA file.
const kubeletClientCA = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n" +
	"authentication: {x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}}\n"

// TestCARotationKubeadmLocal: on a control-plane node made by the real
// kubeadm (its PKI, kubeconfigs and static pod manifests), the node's
// convergence (trust, the signer switch and re-issue from the local CA,
// finish) of each of kubeadm's three CAs leaves no certificate from the
// old CA and the old CA in no bundle, leaves the two other CAs and their
// certificates as they were, restarts in each phase exactly the
// components that read what changed, and kubeadm still reads the result.
func TestCARotationKubeadmLocal(t *testing.T) {
	apiserver, kcm, sched := "kube-apiserver", "kube-controller-manager", "kube-scheduler"
	for _, tc := range []struct {
		ca, cert, key string
		// restarts are the components restarted in each phase, in order.
		restarts map[carotate.Phase][]string
	}{
		// ca.crt: kube-apiserver's and the controller manager's
		// --client-ca-file, the kubelet's clientCAFile, and every
		// kubeconfig; prepare's signer file restarts the controller
		// manager through its manifest (the kubelet's: confirmed, not
		// restarted by certagent), and done's edit back.
		{"ca", "/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/ca.key", map[carotate.Phase][]string{
			carotate.Trust:   {apiserver, kcm, sched, "kubelet"},
			carotate.Reissue: {apiserver, kcm, sched, "kubelet"},
			carotate.Finish:  {apiserver, kcm, sched, "kubelet"},
		}},
		// etcd/ca.crt: etcd's --trusted-ca-file and --peer-trusted-ca-file,
		// kube-apiserver's --etcd-cafile; the leaves are etcd's and
		// apiserver-etcd-client.
		{"etcd-ca", "/etc/kubernetes/pki/etcd/ca.crt", "/etc/kubernetes/pki/etcd/ca.key", map[carotate.Phase][]string{
			carotate.Trust:   {"etcd", apiserver},
			carotate.Reissue: {"etcd", apiserver},
			carotate.Finish:  {"etcd", apiserver},
		}},
		// front-proxy-ca.crt: --requestheader-client-ca-file of both
		// kube-apiserver and the controller manager (kubeadm's manifests);
		// the one leaf, front-proxy-client, is kube-apiserver's.
		{"front-proxy-ca", "/etc/kubernetes/pki/front-proxy-ca.crt", "/etc/kubernetes/pki/front-proxy-ca.key", map[carotate.Phase][]string{
			carotate.Trust:   {apiserver, kcm},
			carotate.Reissue: {apiserver},
			carotate.Finish:  {apiserver, kcm},
		}},
	} {
		t.Run(tc.ca, func(t *testing.T) {
			rotateKubeadmLocal(t, tc.ca, tc.cert, tc.key, tc.restarts)
		})
	}
}

// rotateKubeadmLocal runs one CA's rotation on a fresh kubeadm node and
// checks its end.
func rotateKubeadmLocal(t *testing.T, name, certPath, keyPath string, restarts map[carotate.Phase][]string) {
	root := kubeadmPKI(t, "8760h")
	kubeadmStaticPods(t, root)
	if err := os.MkdirAll(filepath.Join(root, "var/lib/kubelet"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/kubelet/config.yaml"), []byte(kubeletClientCA), 0o644); err != nil {
		t.Fatal(err)
	}
	before, code := certagentCheck(t, root)
	if code != 0 || len(before.Problems) > 0 {
		t.Fatalf("check before the rotation: exit %d, %+v", code, before.Problems)
	}
	rfs, _ := pki.NewRoot(root)
	cfg := config.Default()
	stem, _ := ca.Stem(name)
	lc, err := rotate.LoadLocalCA(rfs, name, certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	next, key, err := ca.NewCA(lc.Cert, lc.Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Stage(rfs, cfg.PKIDir, stem, next, key); err != nil {
		t.Fatal(err)
	}
	cl := &carotate.Cluster{CA: name, ID: carotate.Fingerprint(next), Since: time.Now(), Started: time.Now(),
		OldCA: pkitest.CertPEM(lc.Cert), NewCA: pkitest.CertPEM(next), Proof: proveNext(t, &pkitest.CA{Cert: lc.Cert, Key: lc.Key}, next)}
	log, _ := test.NewNullLogger()
	// The daemon's state directory, where renewals read which CA this
	// node's rotation retires.
	stateDir, err := rfs.HostDir(cfg.Agent.StateDir, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordRestarts{}
	n := &canode.Node{Root: rfs, StateDir: stateDir, Log: log, Restarter: rec}
	ctx := context.Background()
	for _, p := range carotate.Phases {
		publish(t, cl, key, p)
		rec.names, rec.confirmed = nil, nil
		convergePhase(t, ctx, n, rfs, cfg, cl)
		if !slices.Equal(rec.names, restarts[p]) {
			t.Errorf("phase %s restarted %v, want %v", p, rec.names, restarts[p])
		}
		var confirmed []string // the signer flag's edits (the ca rotation's)
		if name == "ca" && (p == carotate.Prepare || p == carotate.Done) {
			confirmed = []string{"kube-controller-manager"}
		}
		if !slices.Equal(rec.confirmed, confirmed) {
			t.Errorf("phase %s confirmed after the kubelet's restart %v, want %v", p, rec.confirmed, confirmed)
		}
	}
	sources := ca.Sources{Dirs: []string{"/etc/kubernetes/pki", "/etc/kubernetes/pki/etcd", "/etc/kubernetes"},
		Files: []string{"/etc/kubernetes/pki/ca.crt"}, Kubeconfigs: []string{cfg.Kubelet.Kubeconfig}}
	if bundles, _ := ca.Find(rfs, sources, lc.Cert); len(bundles) > 0 {
		t.Errorf("the old CA is still in %s", bundles[0].Path)
	}
	after, code := certagentCheck(t, root)
	if code != 0 || len(after.Problems) > 0 {
		t.Errorf("check after the rotation: exit %d, %+v", code, after.Problems)
	}
	for _, c := range after.Certificates {
		if c.CAName == name && c.RenewalPath != "local-ca" {
			t.Errorf("%s: renewal path %s", c.Name, c.RenewalPath)
		}
	}
	sameOthers(t, name, before, after)
	scan, err := inventory.Scan(ctx, inventory.Options{Root: rfs, Config: cfg, Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var leaves []ca.Leaf
	for _, l := range canode.LeavesOf(scan) {
		leaves = append(leaves, l.Leaf)
	}
	if still, problems := ca.IssuedBy(rfs, leaves, lc.Cert); len(still) > 0 || len(problems) > 0 {
		t.Errorf("from the old CA after the rotation: %v (%v)", still, problems)
	}
	ke := kubeadmCheck(t, root)
	for _, c := range ke.Certificates {
		if c.Missing {
			t.Errorf("kubeadm misses %s", c.Name)
		}
	}
	for _, c := range ke.CertificateAuthorities {
		if c.Missing {
			t.Errorf("kubeadm misses the CA %s", c.Name)
		}
	}
}

// convergePhase converges the node to the cluster's phase, renewing what
// it asks for as the daemon's pass does (from the local CA), until the
// phase is done here.
func convergePhase(t *testing.T, ctx context.Context, n *canode.Node, rfs *pki.Root, cfg *config.Config, cl *carotate.Cluster) {
	t.Helper()
	start := time.Now()
	for i := 0; ; i++ {
		rep, err := inventory.Scan(ctx, inventory.Options{Root: rfs, Config: cfg, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		out := n.Converge(ctx, canode.Input{Cluster: cl, Config: cfg, Leaves: canode.LeavesOf(rep), Now: time.Now()})
		if out.Report.Done {
			t.Logf("phase %s: %d passes, %s", cl.Phase, i+1, time.Since(start).Round(time.Millisecond))
			return
		}
		if out.Report.Blocked != "" || i > 3 || len(out.Renew) == 0 {
			t.Fatalf("phase %s: %+v", cl.Phase, out)
		}
		res, err := renewal.RenewOnce(ctx, rfs, cfg, api.RenewRequest{Names: out.Renew}, renewal.RenewOptions{})
		if err != nil || res.Failed {
			t.Fatalf("renew %v: %v %+v", out.Renew, err, res)
		}
	}
}

// sameOthers: every CA but the one rotated, and every certificate none
// of its CAs issued, has the serial it had before; the rotated CA and its
// leaves all have new ones.
func sameOthers(t *testing.T, rotated string, before, after certagentReport) {
	t.Helper()
	serials := func(r certagentReport) map[string]reportCert {
		m := map[string]reportCert{}
		for _, c := range append(slices.Clone(r.Authorities), r.Certificates...) {
			m[c.Name] = c
		}
		return m
	}
	was, is := serials(before), serials(after)
	for name, c := range was {
		now, ok := is[name]
		switch {
		case !ok:
			t.Errorf("%s is gone", name)
		case strings.Split(c.CAName, "#")[0] != rotated && now.Serial != c.Serial:
			t.Errorf("%s (of %s) changed: serial %s, was %s", name, c.CAName, now.Serial, c.Serial)
		case strings.Split(c.CAName, "#")[0] == rotated && now.Serial == c.Serial:
			t.Errorf("%s (of %s) was not re-issued: serial %s", name, c.CAName, c.Serial)
		}
	}
	for name, c := range is {
		if _, ok := was[name]; !ok {
			t.Errorf("%s (of %s) is new after the rotation", name, c.CAName)
		}
	}
}
