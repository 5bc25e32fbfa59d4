package canode

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

const cmManifest = `spec:
  containers:
  - command:
    - kube-controller-manager
    - --cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt
    - --cluster-signing-key-file=/etc/kubernetes/pki/ca.key
    - --root-ca-file=/etc/kubernetes/pki/ca.crt
    - --kubeconfig=/etc/kubernetes/controller-manager.conf
`

// TestSignerFile: the controller manager never reads a two-CA file as
// its signer (it exits on one): from prepare (before ca.crt holds two
// CAs) to done (after it holds one again) its flag names a file of the
// key's CA alone, switched with the key; the flag's edits fall in
// phases where the controller manager restarts for nothing else.
func TestSignerFile(t *testing.T) {
	f := newFixture(t, false)
	manifest := filepath.Join(f.dir, "etc/kubernetes/manifests/kube-controller-manager.yaml")
	if err := os.WriteFile(manifest, []byte(cmManifest), 0o600); err != nil || os.Chmod(manifest, 0o600) != nil {
		t.Fatal(err)
	}
	pkiDir := filepath.Join(f.dir, "etc/kubernetes/pki")
	certs := func(name string) []string {
		data, err := os.ReadFile(filepath.Join(pkiDir, name))
		if err != nil {
			return nil
		}
		b, err := pki.ParseBundle(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var out []string
		for _, c := range b.Certs {
			switch {
			case c.Equal(f.node.CA.Cert):
				out = append(out, "old")
			case c.Equal(f.next.Cert):
				out = append(out, "new")
			default:
				out = append(out, "other")
			}
		}
		return out
	}
	flag := func() string {
		data, _ := os.ReadFile(manifest)
		v, err := rotate.FlagValue(data, "cluster-signing-cert-file")
		if err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(manifest)
		if st.Mode().Perm() != 0o600 || !strings.Contains(string(data), "--root-ca-file=/etc/kubernetes/pki/ca.crt") {
			t.Errorf("the manifest changed beyond the flag: %04o\n%s", st.Mode().Perm(), data)
		}
		return v
	}
	steps := []struct {
		phase          carotate.Phase
		flag           string
		signer, bundle string
		confirmed      string // restarted by the kubelet for the flag, confirmed healthy
	}{
		{carotate.Prepare, "/etc/kubernetes/pki/ca.signer.crt", "old", "old", "kube-controller-manager"},
		{carotate.Trust, "/etc/kubernetes/pki/ca.signer.crt", "old", "old new", ""},
		{carotate.Reissue, "/etc/kubernetes/pki/ca.signer.crt", "new", "new old", ""},
		{carotate.Finish, "/etc/kubernetes/pki/ca.signer.crt", "new", "new", ""},
		{carotate.Done, "/etc/kubernetes/pki/ca.crt", "", "new", "kube-controller-manager"},
	}
	for _, st := range steps {
		f.cluster.Phase = st.phase
		if st.confirmed != "" {
			// The controller manager does not come back healthy: the
			// phase is not done, and stays so until it does.
			out := f.converge(t, &recorder{confirmErr: errors.New("not healthy")}, nil)
			if out.Report.Done || !strings.Contains(out.Report.Blocked, "kube-controller-manager") {
				t.Errorf("%s done with the controller manager unhealthy: %+v", st.phase, out.Report)
			}
		}
		r := &recorder{}
		out := f.converge(t, r, nil)
		if !out.Report.Done {
			t.Fatalf("%s: %+v", st.phase, out.Report)
		}
		if got := strings.Join(r.confirms, " "); got != st.confirmed {
			t.Errorf("%s: confirmed %q after the kubelet's restart, want %q", st.phase, got, st.confirmed)
		}
		if got := flag(); got != st.flag {
			t.Errorf("%s: the signer flag names %s, want %s", st.phase, got, st.flag)
		}
		if got := strings.Join(certs("ca.signer.crt"), " "); got != st.signer {
			t.Errorf("%s: ca.signer.crt holds %q, want %q", st.phase, got, st.signer)
		}
		if got := strings.Join(certs("ca.crt"), " "); got != st.bundle {
			t.Errorf("%s: ca.crt holds %q, want %q", st.phase, got, st.bundle)
		}
	}
}

// TestSignerFileLink: a link in place of the signer file (to another CA
// file) blocks prepare; the file it names is not overwritten with the
// cluster CA, and the manifest keeps its flag.
func TestSignerFileLink(t *testing.T) {
	f := newFixture(t, false)
	manifest := filepath.Join(f.dir, "etc/kubernetes/manifests/kube-controller-manager.yaml")
	if err := os.WriteFile(manifest, []byte(cmManifest), 0o600); err != nil {
		t.Fatal(err)
	}
	pkiDir := filepath.Join(f.dir, "etc/kubernetes/pki")
	before, err := os.ReadFile(filepath.Join(pkiDir, "front-proxy-ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/kubernetes/pki/front-proxy-ca.crt", filepath.Join(pkiDir, "ca.signer.crt")); err != nil {
		t.Fatal(err)
	}
	f.cluster.Phase = carotate.Prepare
	out := f.converge(t, &recorder{}, nil)
	if out.Report.Done || !strings.Contains(out.Report.Blocked+strings.Join(out.Status.Left, " "), "symbolic link") {
		t.Errorf("prepare with a link for the signer file: %+v", out.Report)
	}
	if after, _ := os.ReadFile(filepath.Join(pkiDir, "front-proxy-ca.crt")); string(after) != string(before) {
		t.Error("the file the link names was overwritten")
	}
	if m, _ := os.ReadFile(manifest); string(m) != cmManifest {
		t.Errorf("the manifest changed:\n%s", m)
	}
}

// TestJoinedAfterTheRotation: a control-plane node with no record of a
// rotation that is over (joined or rebuilt since; its files hold nothing
// of the old CA) records it done without running a phase: no signer
// file, no edit of the controller manager's manifest (whose restart the
// kubelet would make twice), nothing restarted.
func TestJoinedAfterTheRotation(t *testing.T) {
	f := newFixture(t, false)
	manifest := filepath.Join(f.dir, "etc/kubernetes/manifests/kube-controller-manager.yaml")
	if err := os.WriteFile(manifest, []byte(cmManifest), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range carotate.Phases {
		f.cluster.Phase = p
		if out := f.converge(t, &recorder{}, nil); !out.Report.Done {
			t.Fatalf("%s: %+v", p, out.Report)
		}
	}
	if err := os.Remove(filepath.Join(f.state, IntentFile)); err != nil { // the state directory wiped
		t.Fatal(err)
	}
	before, _ := os.ReadFile(manifest)
	r := &recorder{}
	out := f.converge(t, r, nil)
	after, _ := os.ReadFile(manifest)
	if !out.Report.Done || len(r.done)+len(r.confirms) > 0 || string(after) != string(before) {
		t.Errorf("done %v, restarted %v, confirmed %v, manifest changed %v", out.Report.Done, r.done, r.confirms, string(after) != string(before))
	}
	if it, err := loadIntent(f.state); err != nil || len(it.PhasesDone) != len(carotate.Phases) {
		t.Errorf("record %+v %v", it, err)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "etc/kubernetes/pki/ca.signer.crt")); err == nil {
		t.Error("a signer file was written")
	}
}
