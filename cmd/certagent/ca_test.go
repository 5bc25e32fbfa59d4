package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/kube"
	"github.com/certagent/certagent/agent/kube/kubefake"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/certagent/certagent/agent/carotate"
	cafiles "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// executeErr runs the CLI in-process: its output with the error's text
// (as main prints it), and the exit code.
func executeErr(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	out, code := executeCtx(t, context.Background(), args...)
	return out, out, code
}

// fakeCAClient serves a cluster with one node that answers.
func fakeCAClient(t *testing.T, nodes ...string) {
	t.Helper()
	cs := fake.NewSimpleClientset()
	for _, n := range nodes {
		d := int32(40)
		cs.Tracker().Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: carotate.HealthConditionType, Status: corev1.ConditionTrue}}}})
		cs.Tracker().Add(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: carotate.LeaseNamespace},
			Spec: coordinationv1.LeaseSpec{LeaseDurationSeconds: &d, RenewTime: &metav1.MicroTime{Time: time.Now()}}})
	}
	old := newCAClient
	newCAClient = func(*pki.Root, string) (kube.Interface, error) { return kubefake.Wrap(cs), nil }
	t.Cleanup(func() { newCAClient = old })
}

func TestCARotateUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--ca", "sa"},
		{"--new-ca-cert", "x"},
		{"--stage-only"},
		{"--until", "halfway"},
		{"--timeout", "0"},
		{"-o", "xml"},
	} {
		if _, msg, code := executeErr(t, append([]string{"ca", "rotate", "--root", t.TempDir()}, args...)...); code != ExitUsage {
			t.Errorf("%v: exit %d (%s), want %d", args, code, msg, ExitUsage)
		}
	}
}

func TestCARotateRefusals(t *testing.T) {
	dir := t.TempDir()
	if _, err := (pkitest.Layout{ExternalCA: true}).Write(dir); err != nil {
		t.Fatal(err)
	}
	fakeCAClient(t, "node1")
	_, msg, code := executeErr(t, "ca", "rotate", "--root", dir)
	if code != ExitRefused || !strings.Contains(msg, "\n  external CA: /etc/kubernetes/pki/ca.crt has no key") {
		t.Fatalf("external CA: exit %d\n%s", code, msg)
	}
	newCAClient = func(*pki.Root, string) (kube.Interface, error) { return nil, os.ErrNotExist }
	_, msg, code = executeErr(t, "ca", "rotate", "--root", dir, "--kubeconfig", "/nonexistent.conf")
	if code != ExitRefused || !strings.Contains(msg, "\n  external CA:") || !strings.Contains(msg, "\n  the admin credential /nonexistent.conf is unusable") {
		t.Fatalf("unusable credential: exit %d\n%s", code, msg)
	}
}

func TestCARotateStageOnly(t *testing.T) {
	dir := t.TempDir()
	n, err := (pkitest.Layout{}).Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, key, err := cafiles.NewCA(n.CA.Cert, n.CA.Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certF, keyF := writePair(t, c, key)
	out, msg, code := executeErr(t, "ca", "rotate", "--root", dir, "--stage-only", "--new-ca-cert", certF, "--new-ca-key", keyF)
	if code != 0 || !strings.Contains(out, "staged /etc/kubernetes/pki/ca.next.crt and /etc/kubernetes/pki/ca.next.key (id "+carotate.Fingerprint(c)+")") {
		t.Fatalf("exit %d %s\n%s", code, msg, out)
	}
	staged, err := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/ca.next.crt"))
	if err != nil || !bytes.Equal(staged, pkitest.CertPEM(c)) {
		t.Fatalf("staged: %v", err)
	}
	// A CA of another subject is refused, and nothing is staged for it.
	other, _ := pkitest.NewCA("not-kubernetes", time.Now(), time.Now().Add(time.Hour), pkitest.ECDSA)
	os.WriteFile(certF, pkitest.CertPEM(other.Cert), 0o644)
	os.WriteFile(keyF, pkitest.KeyPEM(other.Key), 0o600)
	_, msg, code = executeErr(t, "ca", "rotate", "--root", dir, "--stage-only", "--new-ca-cert", certF, "--new-ca-key", keyF)
	if code != ExitRefused || !strings.Contains(msg, "the supplied CA") || !strings.Contains(msg, "subject") {
		t.Fatalf("another subject: exit %d %s", code, msg)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/ca.next.crt")); !bytes.Equal(again, staged) {
		t.Error("a refused CA was staged")
	}
}

func TestCAStatusExitCodes(t *testing.T) {
	dir := t.TempDir()
	fakeCAClient(t, "node1")
	out, msg, code := executeErr(t, "ca", "status", "--root", dir)
	if code != 0 || !strings.Contains(out, "no CA rotation") || !strings.Contains(out, "node1") {
		t.Fatalf("exit %d %s\n%s", code, msg, out)
	}
	newCAClient = func(*pki.Root, string) (kube.Interface, error) { return nil, os.ErrNotExist }
	if _, _, code := executeErr(t, "ca", "status", "--root", dir); code != carotate.StatusNoAPI {
		t.Fatalf("no client: exit %d", code)
	}
}

// TestCARotateRerunWithSuppliedCAAfterSwitch: after this node's signer
// switch (ca.crt = [new, old], ca.key = the new key) a rerun with the
// same --new-ca-cert/--new-ca-key resumes instead of refusing, and
// --stage-only with it has nothing to stage.
func TestCARotateRerunWithSuppliedCAAfterSwitch(t *testing.T) {
	dir := t.TempDir()
	n, err := (pkitest.Layout{}).Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	next, key, err := cafiles.NewCA(n.CA.Cert, n.CA.Key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pkiDir := filepath.Join(dir, "etc/kubernetes/pki")
	os.WriteFile(filepath.Join(pkiDir, "ca.crt"), append(pkitest.CertPEM(next), pkitest.CertPEM(n.CA.Cert)...), 0o644)
	os.WriteFile(filepath.Join(pkiDir, "ca.key"), pkitest.KeyPEM(key), 0o600)
	certF, keyF := writePair(t, next, key)
	fakeCAClient(t, "node1")
	cs, _ := newCAClient(nil, "")
	now := time.Now().UTC().Truncate(time.Second)
	var times []string
	for _, p := range []carotate.Phase{carotate.Prepare, carotate.Trust, carotate.Reissue} {
		times = append(times, carotate.PhaseTime{Phase: p, Start: now, End: now}.Line())
	}
	proof, err := cafiles.Prove(n.CA.Cert, n.CA.Key, next, now)
	if err != nil {
		t.Fatal(err)
	}
	c := &carotate.Cluster{CA: "ca", ID: carotate.Fingerprint(next), Phase: carotate.Reissue, Since: now, Started: now,
		OldCA: pkitest.CertPEM(n.CA.Cert), NewCA: pkitest.CertPEM(next), Proof: proof, Nodes: []string{"node1"}, NodesDone: []string{"node1"}, PhaseTimes: times}
	if err := c.SignPhase(key); err != nil {
		t.Fatal(err)
	}
	if _, err := (carotate.Store{Client: cs}).Put(context.Background(), c, ""); err != nil {
		t.Fatal(err)
	}
	// node1 reports reissue done: a rerun waits for the reports again.
	node, err := cs.CoreV1().Nodes().Get(context.Background(), "node1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, reason, message := carotate.NodeReport{ID: c.ID, Phase: carotate.Reissue, Done: true, HasNewKey: true}.Condition()
	node.Status.Conditions = append(node.Status.Conditions, corev1.NodeCondition{Type: carotate.ConditionType,
		Status: corev1.ConditionTrue, Reason: reason, Message: message})
	if _, err := cs.CoreV1().Nodes().Update(context.Background(), node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, msg, code := executeErr(t, "ca", "rotate", "--root", dir, "--new-ca-cert", certF, "--new-ca-key", keyF, "--until", "reissue")
	if code != 0 || !strings.Contains(out, "resuming rotation "+c.ID) {
		t.Fatalf("rerun after the switch: exit %d %s\n%s", code, msg, out)
	}
	if _, err := os.Stat(filepath.Join(pkiDir, "ca.next.crt")); !os.IsNotExist(err) {
		t.Errorf("the rerun staged the CA again: %v", err)
	}
	out, msg, code = executeErr(t, "ca", "rotate", "--root", dir, "--stage-only", "--new-ca-cert", certF, "--new-ca-key", keyF)
	if code != 0 || !strings.Contains(out, "is already this node's CA") {
		t.Fatalf("--stage-only after the switch: exit %d %s\n%s", code, msg, out)
	}
}
