package csrrenew

import (
	"context"
	"crypto/x509"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/kube"
	"github.com/certagent/certagent/agent/kube/kubefake"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestRenewOnceCSR: `certagent renew NAME` of a certificate the cluster
// issues runs the daemon's CSR renewal: it says which request it waits
// for, installs an approved certificate in the kubelet's store, and fails
// clearly (changing nothing) on a denial or a timeout. The approver is a
// reactor on the fake clientset that answers as soon as the request is
// created, so nothing sleeps.
func TestRenewOnceCSR(t *testing.T) {
	tests := []struct {
		name        string
		answer      string // approve, deny, or "" (never)
		wantKinds   []string
		wantMessage string
		failed      bool
	}{
		{name: "approved", answer: "approve", wantKinds: []string{"requested", "renewed"}, wantMessage: "through CSR certagent-"},
		{name: "denied", answer: "deny", wantKinds: []string{"requested", "failed"}, wantMessage: "denied: TestDenied", failed: true},
		{name: "never approved", wantKinds: []string{"requested", "failed"}, wantMessage: "not issued after 1s; approve it with: kubectl certificate approve certagent-", failed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			node, err := (pkitest.Layout{}).Write(dir)
			if err != nil {
				t.Fatal(err)
			}
			root, _ := pki.NewRoot(dir)
			client := fake.NewClientset()
			answerCSRs(client, node.CA, tc.answer, nil)
			cfg := config.Default()
			current := func() string { // through the root: the store's link is a node path
				f, err := root.ReadFile("/var/lib/kubelet/pki/kubelet-client-current.pem")
				if err != nil {
					t.Fatal(err)
				}
				return string(f.Data)
			}
			before := current()
			var waited []string
			out, err := renewal.RenewOnce(context.Background(), root, cfg, api.RenewRequest{Names: []string{"kubelet-client-current"}}, renewal.RenewOptions{
				CSRTimeout: time.Second,
				CSRWaiting: func(name, csr string) func() { waited = append(waited, name+" "+csr); return func() {} },
				CSR: Renewer{Root: root, Client: func(string, *atomic.Int64) (kube.Interface, *x509.CertPool, error) {
					return kubefake.Wrap(client), poolOf(node.CA.Cert), nil
				}},
			})
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			text := ""
			for _, l := range out.Lines {
				kinds = append(kinds, l.Kind)
				text += l.String() + "\n"
			}
			if strings.Join(kinds, ",") != strings.Join(tc.wantKinds, ",") || !strings.Contains(text, tc.wantMessage) || out.Failed != tc.failed {
				t.Fatalf("lines %v failed %v, want %v with %q:\n%s", kinds, out.Failed, tc.wantKinds, tc.wantMessage, text)
			}
			if len(waited) != 1 || !strings.HasPrefix(waited[0], "kubelet-client-current certagent-") || !strings.Contains(text, "kubectl certificate approve "+strings.Fields(waited[0])[1]) {
				t.Errorf("waiting hook %v; lines:\n%s", waited, text)
			}
			if changed := current() != before; changed == tc.failed {
				t.Errorf("kubelet-client-current.pem changed %v after %s", changed, tc.name)
			}
			if !tc.failed && (len(out.Renewed) != 1 || out.Renewed[0].Cert.Name != "kubelet-client-current") {
				t.Errorf("renewed %+v", out.Renewed)
			}
		})
	}
}

// TestPlanNamesCSR: a csr certificate asked for by name is planned for a
// CSR; under --all it is still skipped (the daemon renews it).
func TestPlanNamesCSR(t *testing.T) {
	dir := t.TempDir()
	if _, err := (pkitest.Layout{}).Write(dir); err != nil {
		t.Fatal(err)
	}
	root, _ := pki.NewRoot(dir)
	out, err := renewal.RenewOnce(context.Background(), root, config.Default(), api.RenewRequest{Names: []string{"kubelet-client-current"}, DryRun: true}, renewal.RenewOptions{})
	if err != nil || len(out.Lines) != 1 || out.Lines[0].Kind != "would-renew" || !strings.Contains(out.Lines[0].Message, "CertificateSigningRequest") {
		t.Fatalf("%v %+v", err, out)
	}
}
