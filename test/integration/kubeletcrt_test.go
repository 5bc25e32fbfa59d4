package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/util/cert"

	"github.com/certagent/certagent/rotate/pki"
)

// TestRenewKubeletCrtSelfSigned: with kubelet.servingCertificate:
// selfSigned, check reports kubelet.crt as renewed self-signed, and
// `certagent renew kubelet.crt` writes a new self-signed pair the
// kubelet's way (same names, a new CA bundled after the leaf, matching
// key) and names the kubelet restart. Without the key it is refused.
func TestRenewKubeletCrtSelfSigned(t *testing.T) {
	root := sandbox(t)
	crt := filepath.Join(root, "var/lib/kubelet/pki/kubelet.crt")
	before, _ := os.ReadFile(crt)
	if r := run(t, certagentBin, "renew", "--root", root, "kubelet.crt"); r.code == 0 || !strings.Contains(r.stdout+r.stderr, "not renewable") {
		t.Fatalf("renew without servingCertificate: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if now, _ := os.ReadFile(crt); string(now) != string(before) {
		t.Fatal("kubelet.crt changed although servingCertificate is none")
	}
	cfg := filepath.Join(root, "etc/certagent/config.yaml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nkubelet: {servingCertificate: selfSigned}\n"), 0o644)

	r := run(t, certagentBin, "check", "--root", root, "-o", "json")
	var rep struct {
		Certificates []struct{ Name, RenewalPath string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("check -o json: %v\n%s", err, r.stderr)
	}
	if i := slices.IndexFunc(rep.Certificates, func(c struct{ Name, RenewalPath string }) bool { return c.Name == "kubelet.crt" }); i < 0 || rep.Certificates[i].RenewalPath != "self-signed" {
		t.Errorf("check: kubelet.crt renewal path: %+v", rep.Certificates)
	}

	r = run(t, certagentBin, "renew", "--root", root, "kubelet.crt")
	if r.code != 0 || !strings.Contains(r.stdout, "renewed   kubelet.crt") || !strings.Contains(r.stdout, "next: kubelet must restart to load kubelet.crt") {
		t.Fatalf("renew: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	oldB, _ := pki.ParseBundle(before)
	data, _ := os.ReadFile(crt)
	b, err := pki.ParseBundle(data)
	if err != nil || len(b.Certs) != 2 {
		t.Fatalf("kubelet.crt: %v (%d certificates, want leaf and CA)", err, len(b.Certs))
	}
	leaf, ca := b.Certs[0], b.Certs[1]
	keyData, _ := os.ReadFile(filepath.Join(root, "var/lib/kubelet/pki/kubelet.key"))
	key, err := pki.ParseKeyPEM(keyData)
	if err != nil || !pki.KeyMatches(leaf, key) {
		t.Fatalf("kubelet.key does not match kubelet.crt: %v", err)
	}
	if !ca.IsCA || !pki.SignedBy(leaf, ca) || ca.Equal(oldB.Certs[1]) || leaf.Equal(oldB.Certs[0]) {
		t.Error("want a new leaf signed by a new CA bundled after it")
	}
	if !slices.Equal(leaf.DNSNames, oldB.Certs[0].DNSNames) || !strings.HasPrefix(leaf.Subject.CommonName, "node1@") {
		t.Errorf("names %v, subject %s; want %v, node1@<time>", leaf.DNSNames, leaf.Subject, oldB.Certs[0].DNSNames)
	}
	consistent(t, root)
}

// TestRenewKubeletCrtThroughCSR: with `kubelet.servingCertificate: csr`, a
// worker's self-signed kubelet.crt is replaced by a certificate from the
// real API server's kubelet-serving signer once an administrator approves
// the request, keeping its names, and the pair on disk matches.
func TestRenewKubeletCrtThroughCSR(t *testing.T) {
	c := sharedCluster(t)
	node := "worker-kcrt"
	root := makeNode(t, c, nodeOpts{name: node, age: time.Minute, life: time.Hour, config: "kubelet: {servingCertificate: csr}\n"})
	crtPEM, keyPEM, err := cert.GenerateSelfSignedCertKey(node, nil, []string{node + ".internal"})
	if err != nil {
		t.Fatal(err)
	}
	crt := filepath.Join(root, "var/lib/kubelet/pki/kubelet.crt")
	must(t, os.WriteFile(crt, crtPEM, 0o644))
	must(t, os.WriteFile(filepath.Join(root, "var/lib/kubelet/pki/kubelet.key"), keyPEM, 0o600))

	cmd := exec.Command(certagentBin, "renew", "--root", root, "--timeout", "60s", "kubelet.crt")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	must(t, cmd.Start())
	r := pendingCSR(t, c, node, "kubernetes.io/kubelet-serving")
	decide(t, c, r, true)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("renew: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "renewed   kubelet.crt") {
		t.Errorf("renew output:\n%s", stdout.String())
	}
	rep, _ := certagentCheck(t, root)
	got, ok := index(rep.Certificates)["kubelet.crt"]
	if !ok || got.CAName != "ca" || got.Key == nil || !got.Key.Matches {
		t.Fatalf("kubelet.crt after the renewal: %+v", got)
	}
	if !slices.Contains(got.DNSNames, node+".internal") {
		t.Errorf("names not kept: %v", got.DNSNames)
	}
}
