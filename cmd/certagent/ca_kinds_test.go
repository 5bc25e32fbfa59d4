package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/canode"
	"github.com/certagent/certagent/agent/carotate"
	cafiles "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestCARotateOtherCAsRefusals: the etcd and front-proxy CAs are read
// from their own files: without the key (external etcd) or without the
// file (a worker) the command refuses, naming that CA's files.
func TestCARotateOtherCAsRefusals(t *testing.T) {
	for _, tc := range []struct {
		ca, remove, want string
	}{
		{"etcd-ca", "etcd/ca.key", "external CA: /etc/kubernetes/pki/etcd/ca.crt has no key (/etc/kubernetes/pki/etcd/ca.key)"},
		{"etcd-ca", "etcd", "CA etcd-ca: /etc/kubernetes/pki/etcd/ca.crt does not exist on this node"},
		{"front-proxy-ca", "front-proxy-ca.key", "external CA: /etc/kubernetes/pki/front-proxy-ca.crt has no key (/etc/kubernetes/pki/front-proxy-ca.key)"},
	} {
		dir := t.TempDir()
		if _, err := (pkitest.Layout{}).Write(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, "etc/kubernetes/pki", tc.remove)); err != nil {
			t.Fatal(err)
		}
		fakeCAClient(t, "node1")
		_, msg, code := executeErr(t, "ca", "rotate", "--root", dir, "--ca", tc.ca)
		if code != ExitRefused || !strings.Contains(msg, "\n  "+tc.want) {
			t.Errorf("--ca %s without %s: exit %d\n%s", tc.ca, tc.remove, code, msg)
		}
	}
}

// TestCARotateOtherCAsPrepare: `ca rotate --ca etcd-ca|front-proxy-ca`
// stages the new CA next to that CA's own file (and nowhere else), and
// the rotation it writes names that CA as the old one, with a proof its
// key signed, which a node verifies; a supplied CA of another CA's
// subject is refused.
func TestCARotateOtherCAsPrepare(t *testing.T) {
	for _, tc := range []struct{ ca, stem string }{{"etcd-ca", "etcd/ca"}, {"front-proxy-ca", "front-proxy-ca"}} {
		dir := t.TempDir()
		n, err := (pkitest.Layout{}).Write(dir)
		if err != nil {
			t.Fatal(err)
		}
		old := map[string]*pkitest.CA{"etcd-ca": n.EtcdCA, "front-proxy-ca": n.FrontProxy}[tc.ca]
		pkiDir := filepath.Join(dir, "etc/kubernetes/pki")
		// The cluster CA's successor is no successor of this CA.
		wrong, key, err := cafiles.NewCA(n.CA.Cert, n.CA.Key, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		certF, keyF := writePair(t, wrong, key)
		_, msg, code := executeErr(t, "ca", "rotate", "--root", dir, "--ca", tc.ca, "--stage-only", "--new-ca-cert", certF, "--new-ca-key", keyF)
		if code != ExitRefused || !strings.Contains(msg, "subject") {
			t.Errorf("--ca %s with the cluster CA's successor: exit %d\n%s", tc.ca, code, msg)
		}
		fakeCAClient(t, "node1")
		cs, _ := newCAClient(nil, "")
		// node1 never reports: the command stops after prepare's wait.
		_, msg, code = executeErr(t, "ca", "rotate", "--root", dir, "--ca", tc.ca, "--timeout", "1s")
		if code != ExitRefused || !strings.Contains(msg, "node1") {
			t.Fatalf("--ca %s: exit %d\n%s", tc.ca, code, msg)
		}
		c, _, err := (carotate.Store{Client: cs}).Get(context.Background())
		if err != nil || c == nil || c.CA != tc.ca || c.Phase != carotate.Prepare {
			t.Fatalf("--ca %s: rotation %+v, %v", tc.ca, c, err)
		}
		o, next, err := canode.Verify(c)
		if err != nil || !o.Equal(old.Cert) {
			t.Fatalf("--ca %s: the rotation does not verify against that CA: %v", tc.ca, err)
		}
		root, err := pki.NewRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		staged, _, err := cafiles.Staged(root, "/etc/kubernetes/pki", tc.stem)
		if err != nil || !staged.Equal(next) {
			t.Errorf("--ca %s: %s.next.crt: %v", tc.ca, tc.stem, err)
		}
		for _, stem := range []string{"ca", "etcd/ca", "front-proxy-ca"} {
			if _, err := os.Stat(filepath.Join(pkiDir, stem+".next.key")); stem != tc.stem && !os.IsNotExist(err) {
				t.Errorf("--ca %s staged a key for %s", tc.ca, stem)
			}
		}
	}
}

// writePair writes a CA and its key as the files of --new-ca-cert and
// --new-ca-key.
func writePair(t *testing.T, cert *x509.Certificate, key crypto.Signer) (certF, keyF string) {
	t.Helper()
	files := t.TempDir()
	certF, keyF = filepath.Join(files, "new.crt"), filepath.Join(files, "new.key")
	if err := os.WriteFile(certF, pkitest.CertPEM(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyF, pkitest.KeyPEM(key), 0o600); err != nil {
		t.Fatal(err)
	}
	return certF, keyF
}
