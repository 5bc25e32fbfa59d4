package inventory

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

var now = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func layout(t testing.TB, l pkitest.Layout) (string, *pkitest.Node) {
	t.Helper()
	dir := t.TempDir()
	if l.Now.IsZero() {
		l.Now = now
	}
	n, err := l.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, n
}

func scan(t testing.TB, dir string, cfg *config.Config, at time.Time) *Report {
	t.Helper()
	root, err := pki.NewRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Scan(context.Background(), Options{Root: root, Config: cfg, Now: at})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func byName(rep *Report) map[string]*Certificate {
	m := map[string]*Certificate{}
	for _, c := range rep.Certificates {
		m[c.Name] = c
	}
	for _, c := range rep.Authorities {
		m[c.Name] = c
	}
	return m
}

func names(l []*Certificate) []string {
	var out []string
	for _, c := range l {
		out = append(out, c.Name)
	}
	sort.Strings(out)
	return out
}

func put(t testing.TB, dir, p string, data []byte, mode os.FileMode) {
	t.Helper()
	full := filepath.Join(dir, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, data, mode); err != nil {
		t.Fatal(err)
	}
}

func TestScanKubeadmLayout(t *testing.T) {
	dir, _ := layout(t, pkitest.Layout{})
	rep := scan(t, dir, nil, now)

	want := "admin.conf apiserver apiserver-etcd-client apiserver-kubelet-client controller-manager.conf " +
		"etcd-healthcheck-client etcd-peer etcd-server front-proxy-client kubelet-client-current kubelet.conf " +
		"kubelet.crt scheduler.conf super-admin.conf"
	if got := strings.Join(names(rep.Certificates), " "); got != want {
		t.Errorf("certificates:\n got %s\nwant %s", got, want)
	}
	if got := strings.Join(names(rep.Authorities), " "); got != "ca etcd-ca front-proxy-ca kubelet.crt#1" {
		t.Errorf("authorities: %s", got)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %+v", rep.Problems)
	}
	m := byName(rep)
	for name, ca := range map[string]string{
		"apiserver": "ca", "admin.conf": "ca", "kubelet.conf": "ca", "kubelet-client-current": "ca",
		"apiserver-etcd-client": "etcd-ca", "etcd-server": "etcd-ca", "etcd-peer": "etcd-ca",
		"etcd-healthcheck-client": "etcd-ca", "front-proxy-client": "front-proxy-ca", "kubelet.crt": "kubelet.crt#1",
	} {
		if c := m[name]; c == nil || c.CAName != ca {
			t.Errorf("%s: caName = %v, want %s", name, c, ca)
		}
	}
	for name, rp := range map[string]RenewalPath{
		"apiserver": RenewLocalCA, "kubelet.conf": RenewLocalCA, "kubelet-client-current": RenewCSR,
		"kubelet.crt": RenewNone, "ca": RenewNone,
	} {
		if m[name].RenewalPath != rp {
			t.Errorf("%s: renewal path %s, want %s", name, m[name].RenewalPath, rp)
		}
	}
	api := m["apiserver"]
	if api.Kind != KindPEM || api.Key == nil || !api.Key.Matches || api.Key.Mode != "0600" || !api.CAKeyPresent || api.ExternallyManaged {
		t.Errorf("apiserver: %+v key %+v", api, api.Key)
	}
	if len(api.DNSNames) != 5 || len(api.IPAddresses) != 2 || api.State != StateOK {
		t.Errorf("apiserver SANs/state: %v %v %s", api.DNSNames, api.IPAddresses, api.State)
	}
	kc := m["kubelet-client-current"]
	if kc.Kind != KindCombined || !strings.HasPrefix(kc.ResolvedPath, "/var/lib/kubelet/pki/kubelet-client-2") || !kc.Key.Matches {
		t.Errorf("kubelet-client-current: %+v", kc)
	}
	if k := m["kubelet.conf"]; k.Kind != KindKubeconfigEmbedded || k.User != "system:node:node1" || !k.Key.Matches {
		t.Errorf("kubelet.conf: %+v", k)
	}
	if len(rep.KeyPairs) != 1 || !rep.KeyPairs[0].Matches || rep.KeyPairs[0].Name != "sa" {
		t.Errorf("key pairs: %+v", rep.KeyPairs)
	}
	if rep.ExitCode() != ExitOK {
		t.Errorf("exit %d, want 0", rep.ExitCode())
	}
}

func TestStatesAndExitCodes(t *testing.T) {
	tests := []struct {
		name   string
		l      pkitest.Layout
		mutate func(t *testing.T, dir string)
		at     time.Time
		cfg    *config.Config
		cert   string
		state  State
		exit   int
	}{
		{name: "healthy", cert: "apiserver", state: StateOK, exit: 0},
		{name: "inside 70% window", l: pkitest.Layout{NotAfter: map[string]time.Time{"apiserver": now.Add(100 * 24 * time.Hour)}},
			cert: "apiserver", state: StateRenewalDue, exit: 1},
		{name: "renewBefore overrides", cfg: mustConfig(t, "renewBefore: 400d"), cert: "apiserver", state: StateRenewalDue, exit: 1},
		{name: "renewBefore short", l: pkitest.Layout{NotAfter: map[string]time.Time{"apiserver": now.Add(100 * 24 * time.Hour)}},
			cfg: mustConfig(t, "renewBefore: 30d"), cert: "apiserver", state: StateOK, exit: 0},
		{name: "expired", l: pkitest.Layout{NotAfter: map[string]time.Time{"admin.conf": now.Add(-time.Minute)}},
			cert: "admin.conf", state: StateExpired, exit: 2},
		{name: "not yet valid", at: now.Add(-2 * time.Hour), cert: "apiserver", state: StateNotYetValid, exit: 2},
		{name: "key mismatch", cert: "apiserver", state: StateKeyMismatch, exit: 2, mutate: func(t *testing.T, dir string) {
			k, _ := pkitest.NewKey(pkitest.ECDSA)
			put(t, dir, "etc/kubernetes/pki/apiserver.key", pkitest.KeyPEM(k), 0o600)
		}},
		{name: "key missing", cert: "etcd-peer", state: StateKeyMissing, exit: 2, mutate: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "etc/kubernetes/pki/etcd/peer.key"))
		}},
		{name: "CA expiring before leaf lifetime", l: pkitest.Layout{CALifetime: 200 * 24 * time.Hour}, cert: "ca", state: StateExpiring, exit: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := layout(t, tc.l)
			if tc.mutate != nil {
				tc.mutate(t, dir)
			}
			at := tc.at
			if at.IsZero() {
				at = now
			}
			rep := scan(t, dir, tc.cfg, at)
			c := byName(rep)[tc.cert]
			if c == nil || c.State != tc.state {
				t.Fatalf("%s: %+v, want state %s", tc.cert, c, tc.state)
			}
			if got := rep.ExitCode(); got != tc.exit {
				t.Errorf("exit %d, want %d", got, tc.exit)
			}
		})
	}
}

func mustConfig(t testing.TB, body string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte("apiVersion: " + config.APIVersion + "\nkind: " + config.Kind + "\n" + body))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestKubeletConfReferenceIsOneEntry(t *testing.T) {
	dir, _ := layout(t, pkitest.Layout{KubeletConfReference: true})
	rep := scan(t, dir, nil, now)
	m := byName(rep)
	if _, ok := m["kubelet.conf"]; ok {
		t.Error("kubelet.conf reported separately although it points at kubelet-client-current.pem")
	}
	kc := m["kubelet-client-current"]
	if kc == nil || len(kc.UsedBy) != 1 || kc.UsedBy[0] != "/etc/kubernetes/kubelet.conf" {
		t.Fatalf("kubelet-client-current: %+v", kc)
	}
}

func TestExternalCA(t *testing.T) {
	dir, _ := layout(t, pkitest.Layout{ExternalCA: true})
	rep := scan(t, dir, nil, now)
	m := byName(rep)
	api := m["apiserver"]
	if api.RenewalPath != RenewExternal || !api.ExternallyManaged || api.CAKeyPresent || len(api.Warnings) == 0 {
		t.Errorf("apiserver under an external CA: %+v", api)
	}
	if etcd := m["etcd-server"]; etcd.RenewalPath != RenewLocalCA {
		t.Errorf("etcd-server keeps its local etcd-ca: %s", etcd.RenewalPath)
	}
	if ca := m["ca"]; ca.Key == nil || ca.Key.Present || ca.State != StateOK {
		t.Errorf("external ca: %+v %+v", ca, ca.Key)
	}
}

func TestIssuerFoundBySignatureNotName(t *testing.T) {
	dir, n := layout(t, pkitest.Layout{})
	// An impostor CA with the same subject as "ca" but its own key signs a
	// leaf; the leaf must not be attributed to "ca".
	impostor, err := pkitest.NewCA("kubernetes", now.Add(-time.Hour), now.Add(24*time.Hour), pkitest.ECDSA)
	if err != nil {
		t.Fatal(err)
	}
	leaf, key, _ := impostor.Issue(pkitest.Spec{CommonName: "stray", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	put(t, dir, "opt/certs/stray.crt", pkitest.CertPEM(leaf), 0o644)
	put(t, dir, "opt/certs/stray.key", pkitest.KeyPEM(key), 0o600)
	good, _, _ := n.CA.Issue(pkitest.Spec{CommonName: "good", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	put(t, dir, "opt/certs/good.crt", pkitest.CertPEM(good), 0o644)
	rep := scan(t, dir, mustConfig(t, "paths: [/opt/certs]\nrenewal: {localCAPaths: [/opt/certs/*]}"), now)
	m := byName(rep)
	if s := m["/opt/certs/stray.crt"]; s == nil || s.CAName != "" || s.RenewalPath != RenewExternal || !s.Key.Matches {
		t.Errorf("stray: %+v", s)
	}
	if g := m["/opt/certs/good.crt"]; g == nil || g.CAName != "ca" || g.RenewalPath != RenewLocalCA {
		t.Errorf("good: %+v", g)
	}
}

func TestConfiguredPaths(t *testing.T) {
	dir, n := layout(t, pkitest.Layout{})
	for _, p := range []string{"opt/a/one.crt", "opt/a/two.pem", "opt/b/three.crt", "opt/b/skip.crt", "opt/c/file.cer"} {
		c, _, _ := n.CA.Issue(pkitest.Spec{CommonName: p, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
		put(t, dir, p, pkitest.CertPEM(c), 0o644)
	}
	put(t, dir, "opt/a/notes.txt", []byte("ignored in a directory scan"), 0o644)
	cfg := mustConfig(t, `paths: [/opt/a, "/opt/b/*.crt", /opt/c/file.cer, /opt/missing.crt]
exclude: [/opt/b/skip.crt, /etc/kubernetes/super-admin.conf]`)
	rep := scan(t, dir, cfg, now)
	m := byName(rep)
	for _, p := range []string{"/opt/a/one.crt", "/opt/a/two.pem", "/opt/b/three.crt", "/opt/c/file.cer"} {
		if m[p] == nil || m[p].CAName != "ca" {
			t.Errorf("%s not found or wrong CA: %+v", p, m[p])
		}
	}
	for _, p := range []string{"/opt/b/skip.crt", "super-admin.conf", "/opt/a/notes.txt"} {
		if m[p] != nil {
			t.Errorf("%s should be left out", p)
		}
	}
	if len(rep.Problems) != 1 || rep.Problems[0].Path != "/opt/missing.crt" {
		t.Errorf("problems: %+v", rep.Problems)
	}
}

// TestBadInputs: every bad file is one clear problem and never hides the
// other certificates.
func TestBadInputs(t *testing.T) {
	dir, n := layout(t, pkitest.Layout{})
	good, goodKey, _ := n.CA.Issue(pkitest.Spec{CommonName: "good", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	gp := pkitest.CertPEM(good)
	bad := map[string]struct {
		data []byte
		want string
	}{
		"empty.crt":     {nil, "empty file"},
		"truncated.crt": {gp[:len(gp)/2], "truncated"},
		"garbage.crt":   {[]byte("\x00\x01garbage\xff"), "not a PEM, DER or kubeconfig"},
		"keyonly.pem":   {pkitest.KeyPEM(goodKey), "only a private key"},
		"csr.pem":       {[]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), "signing request"},
		"trailing.crt":  {append(append([]byte{}, gp...), "#junk"...), "trailing data"},
	}
	for name, b := range bad {
		put(t, dir, "opt/bad/"+name, b.data, 0o644)
	}
	put(t, dir, "etc/kubernetes/broken.conf", []byte("apiVersion: v1\nkind: Config\nusers: [{name: u, user: {client-certificate-data: '%%%'}}]\n"), 0o600)
	must(t, os.Symlink("loop2.crt", filepath.Join(dir, "opt/bad/loop1.crt")))
	must(t, os.Symlink("loop1.crt", filepath.Join(dir, "opt/bad/loop2.crt")))
	must(t, os.Symlink("/nowhere.crt", filepath.Join(dir, "opt/bad/dangling.crt")))
	// A directory where kubeadm's front-proxy-client.crt should be.
	fp := filepath.Join(dir, "etc/kubernetes/pki/front-proxy-client.crt")
	must(t, os.Remove(fp))
	must(t, os.Mkdir(fp, 0o755))
	big, err := os.Create(filepath.Join(dir, "opt/bad/huge.crt"))
	must(t, err)
	must(t, big.Truncate(100<<20))
	big.Close()
	must(t, syscall.Mkfifo(filepath.Join(dir, "opt/bad/fifo.crt"), 0o644))

	rep := scan(t, dir, mustConfig(t, "paths: [/opt/bad]"), now)
	probs := map[string]string{}
	for _, p := range rep.Problems {
		probs[p.Path] = p.Error
	}
	expect := map[string]string{
		"/etc/kubernetes/broken.conf":                "illegal base64",
		"/opt/bad/loop1.crt":                         "symbolic links",
		"/opt/bad/loop2.crt":                         "symbolic links",
		"/opt/bad/dangling.crt":                      "dangling symlink",
		"/etc/kubernetes/pki/front-proxy-client.crt": "is a directory",
		"/opt/bad/huge.crt":                          "over the 1048576-byte limit",
		"/opt/bad/fifo.crt":                          "not a regular file",
	}
	for name, b := range bad {
		expect["/opt/bad/"+name] = b.want
	}
	for p, want := range expect {
		if got, ok := probs[p]; !ok || !strings.Contains(got, want) {
			t.Errorf("%s: problem %q, want one containing %q", p, got, want)
		}
	}
	if len(rep.Problems) != len(expect) {
		t.Errorf("%d problems, want %d: %+v", len(rep.Problems), len(expect), rep.Problems)
	}
	// Everything else is still there: 14 certificates less the one
	// replaced by a directory, plus the readable cert with trailing junk.
	if len(rep.Certificates) != 14 {
		t.Errorf("%d certificates, want 14: %v", len(rep.Certificates), names(rep.Certificates))
	}
	if c := byName(rep)["/opt/bad/trailing.crt"]; c == nil || c.CAName != "ca" {
		t.Errorf("trailing junk should still report the certificate: %+v", c)
	}
	if rep.ExitCode() != ExitBroken {
		t.Errorf("exit %d, want 2", rep.ExitCode())
	}
}

func TestUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads mode-000 files; test/integration runs this case as an unprivileged user")
	}
	dir, _ := layout(t, pkitest.Layout{})
	must(t, os.Chmod(filepath.Join(dir, "etc/kubernetes/pki/apiserver.crt"), 0))
	rep := scan(t, dir, nil, now)
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].Error, "permission denied") {
		t.Fatalf("problems: %+v", rep.Problems)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestReferenceMergedByPathDuringASwap: kubelet.conf and the store's
// symlink read on either side of a swap resolve to different files; they
// are still one certificate.
func TestReferenceMergedByPathDuringASwap(t *testing.T) {
	s := &scanner{cfg: config.Default(), now: now}
	p := "/var/lib/kubelet/pki/kubelet-client-current.pem"
	direct := &found{info: &Certificate{Name: "kubelet-client-current", Path: p, Kind: KindCombined, NotBefore: now, NotAfter: now.Add(time.Hour)},
		identity: "/var/lib/kubelet/pki/kubelet-client-old.pem", order: 1}
	ref := &found{info: &Certificate{Name: "kubelet.conf", Path: p, Kind: KindKubeconfigReference, Kubeconfig: "/etc/kubernetes/kubelet.conf",
		NotBefore: now, NotAfter: now.Add(time.Hour)}, identity: "/var/lib/kubelet/pki/kubelet-client-new.pem", order: 0}
	rep := &Report{}
	s.assemble(rep, []*found{ref, direct})
	if len(rep.Certificates) != 1 || rep.Certificates[0].Name != "kubelet-client-current" || len(rep.Certificates[0].UsedBy) != 1 {
		t.Fatalf("certificates: %v", names(rep.Certificates))
	}
}

// TestEncryptedKeyReported: a passphrase-protected key next to a
// certificate, in a combined file or in a kubeconfig is reported as an
// encrypted key, not as an invalid one.
func TestEncryptedKeyReported(t *testing.T) {
	enc := pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: bytes.Repeat([]byte{7}, 64)})
	dir, n := layout(t, pkitest.Layout{})
	put(t, dir, "etc/kubernetes/pki/apiserver.key", enc, 0o600)
	leaf, _, _ := n.CA.Issue(pkitest.Spec{CommonName: "combined", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	put(t, dir, "opt/combined.pem", append(pkitest.CertPEM(leaf), enc...), 0o600)
	admin, _, _ := n.CA.Issue(pkitest.Spec{CommonName: "kubernetes-admin", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
	kc, err := pkitest.Kubeconfig("https://127.0.0.1:6443", n.CA.Cert, "kubernetes-admin", pkitest.CertPEM(admin), enc, "")
	if err != nil {
		t.Fatal(err)
	}
	put(t, dir, "etc/kubernetes/admin.conf", kc, 0o600)
	rep := scan(t, dir, mustConfig(t, "paths: [/opt/combined.pem]"), now)
	m := byName(rep)
	for _, name := range []string{"apiserver", "admin.conf"} {
		if c := m[name]; c == nil || c.State != StateKeyMissing || c.Key == nil || !strings.Contains(c.Key.Error, "encrypted private key") {
			t.Errorf("%s: %+v %+v, want key-missing with an encrypted-key error", name, c, c.Key)
		}
	}
	found := false
	for _, p := range rep.Problems {
		found = found || (p.Path == "/opt/combined.pem" && strings.Contains(p.Error, "encrypted private key"))
	}
	if !found {
		t.Errorf("combined file with an encrypted key: problems %+v", rep.Problems)
	}
}

// TestKubeconfigKeyMismatch: a kubeconfig whose client key is not its
// client certificate's is broken (the client cannot authenticate) and
// `check` must say so, whether the two are embedded, referenced, or mixed,
// and also when the referenced certificate is itself a scanned file (then
// reported once, with the kubeconfig in usedBy, and the kubeconfig's own
// key used to go unchecked). A matching key is not a problem.
func TestKubeconfigKeyMismatch(t *testing.T) {
	const kc = "/etc/kubernetes/extra.conf"
	refs := func(cert, key, keyData string) string {
		user := "client-certificate: " + cert
		if key != "" {
			user += ", client-key: " + key
		}
		if keyData != "" {
			user += ", client-key-data: " + keyData
		}
		return "apiVersion: v1\nkind: Config\nclusters: [{name: k, cluster: {server: \"https://127.0.0.1:6443\"}}]\n" +
			"users: [{name: u, user: {" + user + "}}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\ncurrent-context: c\n"
	}
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	tests := []struct {
		name  string
		write func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string // returns the kubeconfig
		bad   bool
	}{
		{name: "embedded, mismatched", bad: true, write: func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string {
			c, _, _ := n.CA.Issue(pkitest.Spec{CommonName: "extra", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
			data, _ := pkitest.Kubeconfig("https://127.0.0.1:6443", n.CA.Cert, "u", pkitest.CertPEM(c), stray, "")
			return string(data)
		}},
		{name: "embedded cert, key file mismatched", bad: true, write: func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string {
			c, _, _ := n.CA.Issue(pkitest.Spec{CommonName: "extra", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
			return strings.Replace(refs("x", "/etc/kubernetes/stray.key", ""), "client-certificate: x", "client-certificate-data: "+b64(pkitest.CertPEM(c)), 1)
		}},
		{name: "cert file not scanned, key file mismatched", bad: true, write: func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string {
			c, _, _ := n.CA.Issue(pkitest.Spec{CommonName: "extra", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
			put(t, dir, "etc/kubernetes/creds/extra.crt", pkitest.CertPEM(c), 0o644)
			return refs("creds/extra.crt", "/etc/kubernetes/stray.key", "")
		}},
		{name: "scanned kubelet-client-current, key file mismatched", bad: true, write: func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string {
			return refs("/var/lib/kubelet/pki/kubelet-client-current.pem", "/etc/kubernetes/stray.key", "")
		}},
		{name: "scanned kubeadm cert, another cert's key", bad: true, write: func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string {
			return refs("pki/apiserver-kubelet-client.crt", "pki/apiserver.key", "")
		}},
		{name: "scanned cert, embedded key mismatched", bad: true, write: func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string {
			return refs("pki/apiserver-kubelet-client.crt", "", b64(stray))
		}},
		{name: "cert file not scanned, embedded key mismatched", bad: true, write: func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string {
			c, _, _ := n.CA.Issue(pkitest.Spec{CommonName: "extra", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
			put(t, dir, "etc/kubernetes/creds/extra.crt", pkitest.CertPEM(c), 0o644)
			return refs("creds/extra.crt", "", b64(stray))
		}},
		{name: "cert file not scanned, embedded key matching", write: func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string {
			c, k, _ := n.CA.Issue(pkitest.Spec{CommonName: "extra", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)})
			put(t, dir, "etc/kubernetes/creds/extra.crt", pkitest.CertPEM(c), 0o644)
			return refs("creds/extra.crt", "", b64(pkitest.KeyPEM(k)))
		}},
		{name: "scanned cert, its own key file", write: func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string {
			return refs("pki/apiserver-kubelet-client.crt", "pki/apiserver-kubelet-client.key", "")
		}},
		{name: "scanned combined file, no client-key", write: func(t *testing.T, dir string, n *pkitest.Node, stray []byte) string {
			return refs("/var/lib/kubelet/pki/kubelet-client-current.pem", "", "")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, n := layout(t, pkitest.Layout{})
			k, _ := pkitest.NewKey(pkitest.ECDSA)
			stray := pkitest.KeyPEM(k)
			put(t, dir, "etc/kubernetes/stray.key", stray, 0o600)
			put(t, dir, strings.TrimPrefix(kc, "/"), []byte(tc.write(t, dir, n, stray)), 0o600)
			rep := scan(t, dir, nil, now)
			var evidence []string
			for _, c := range rep.Certificates {
				if c.Kubeconfig == kc && c.State != StateOK {
					evidence = append(evidence, fmt.Sprintf("certificate %s: %s", c.Name, c.State))
				}
			}
			for _, p := range rep.Problems {
				if p.Path == kc || p.Path == "/etc/kubernetes/stray.key" {
					evidence = append(evidence, "problem: "+p.Error)
				}
			}
			for _, c := range rep.Certificates {
				if c.Kubeconfig == kc && c.State == StateKeyMissing {
					t.Errorf("%s: key-missing, but the key is there: it is mismatched or fine", c.Name)
				}
			}
			switch {
			case tc.bad && (len(evidence) == 0 || rep.ExitCode() != ExitBroken):
				t.Fatalf("mismatch not reported (exit %d); certificates %v, problems %+v", rep.ExitCode(), names(rep.Certificates), rep.Problems)
			case !tc.bad && (len(evidence) > 0 || rep.ExitCode() != ExitOK):
				t.Fatalf("a matching key reported as a problem (exit %d): %v", rep.ExitCode(), evidence)
			}
		})
	}
}

// TestKubeletCrtRenewalPath: kubelet.servingCertificate decides how the
// kubelet's self-signed kubelet.crt is renewed, and the renewal window is
// the usual one.
func TestKubeletCrtRenewalPath(t *testing.T) {
	dir, _ := layout(t, pkitest.Layout{})
	for _, tc := range []struct {
		value   string
		want    RenewalPath
		warning bool
	}{
		{"", RenewNone, true},
		{"servingCertificate: none", RenewNone, true},
		{"servingCertificate: selfSigned", RenewSelfSigned, false},
		{"servingCertificate: csr", RenewCSR, false},
	} {
		t.Run(tc.value, func(t *testing.T) {
			cfg := mustConfig(t, "kubelet: {"+tc.value+"}\n")
			late := now.Add(300 * 24 * time.Hour) // past 70 % of a year
			c := byName(scan(t, dir, cfg, late))["kubelet.crt"]
			if c == nil {
				t.Fatal("kubelet.crt not found")
			}
			if c.RenewalPath != tc.want {
				t.Errorf("renewalPath %s, want %s", c.RenewalPath, tc.want)
			}
			if got := len(c.Warnings) > 0 && strings.Contains(c.Warnings[0], "nothing renews it"); got != tc.warning {
				t.Errorf("warnings %q", c.Warnings)
			}
			if c.State != StateRenewalDue {
				t.Errorf("state %s at 300 days of 365, want renewal-due", c.State)
			}
		})
	}
	if _, err := config.Parse([]byte("apiVersion: " + config.APIVersion + "\nkind: " + config.Kind + "\nkubelet: {servingCertificate: yes}\n")); err == nil || !strings.Contains(err.Error(), "kubelet.servingCertificate") {
		t.Errorf("a bad value must be refused: %v", err)
	}
}
