package csrrenew

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestAnswerFromRotatedCADiscarded: during a CA rotation's reissue, a
// CSR answered by the CA being rotated out (the cluster's signer not
// switched yet) is not installed (nothing for the kubelet to restart
// for); its key is dropped so that the next attempt asks anew.
func TestAnswerFromRotatedCADiscarded(t *testing.T) {
	root, n, rep := node(t, pkitest.Layout{Now: time.Now(), ExternalCA: true})
	c := certOf(t, rep, "kubelet.conf")
	client := fake.NewClientset()
	answerCSRs(client, n.CA, "approve", nil)
	calls := 0
	pending := t.TempDir()
	r := Renewer{Root: root, Client: fakeClient(client, n.CA.Cert, &calls)}
	res := r.RenewCSR(context.Background(), renewal.CSRJob{Config: config.Default(), Cert: c, Report: rep, Timeout: 5 * time.Second,
		PendingDir: pending, ReusePending: true, NotFrom: n.CA.Cert})
	if !errors.Is(res.Err, ErrFromRotatedCA) || res.Rollback != nil || res.Backup != "" {
		t.Fatalf("an answer from the old CA: %+v", res)
	}
	if now, err := currentCert(root, c); err != nil || strings.ToUpper(now.SerialNumber.Text(16)) != c.Serial {
		t.Errorf("kubelet.conf changed: %v %v", now, err)
	}
	if keys, _ := filepath.Glob(filepath.Join(pending, "pending-*.key")); len(keys) != 0 {
		t.Errorf("the discarded request's key is kept: %v", keys)
	}
}
