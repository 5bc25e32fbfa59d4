package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
	"github.com/certagent/certagent/test/nspawn"
)

const e2eConfig = `apiVersion: certagent.io/v1alpha1
kind: AgentConfiguration
renewBefore: 2h
restart:
  timeout: 20s
  units:
  - unit: kubelet.service
    certificates: [/var/lib/kubelet/pki/standin-serving.crt]
    address: 127.0.0.1:10250
    healthz: http://127.0.0.1:10248/healthz
`

// e2eDeb returns the .deb that `make package` built (make test builds it).
func e2eDeb(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CERTAGENT_DEB")
	if p == "" {
		if os.Getenv("CI") == "true" || os.Getenv("CERTAGENT_REQUIRE_INTEGRATION") != "" {
			t.Fatal("CERTAGENT_DEB not set: run through make test or make e2e")
		}
		t.Skip("SKIPPED: CERTAGENT_DEB not set (make e2e builds the package)")
	}
	return p
}

func in(t *testing.T, n *nspawn.Node, args ...string) string {
	t.Helper()
	out, err := n.Exec(args...)
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return string(out)
}

func prop(n *nspawn.Node, unit, p string) string {
	out, _ := n.Exec("systemctl", "show", "-p", p, "--value", unit)
	return strings.TrimSpace(string(out))
}

func waitIn(t *testing.T, what string, within time.Duration, ok func() bool, n ...*nspawn.Node) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			var dump string
			for _, node := range n {
				st, _ := node.Exec("certagent", "status")
				jl, _ := node.Exec("journalctl", "-u", "certagent", "-n", "60", "--no-pager")
				dump += string(st) + "\n" + string(jl)
			}
			t.Fatalf("timed out waiting for %s\n%s", what, dump)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestE2EPackageOnSystemdNode installs the .deb on a real systemd node
// whose PKI the real kubeadm made, and follows it through its life.
func TestE2EPackageOnSystemdNode(t *testing.T) {
	requireNspawn(t)
	deb := e2eDeb(t)
	dir := unpackedRootfs(t)
	requireKube(t, "kubeadm")
	if err := makeKubeadmPKI(dir, "2h", "RSA-2048"); err != nil {
		t.Fatal(err)
	}
	// The stand-in kubelet, serving a certificate of the cluster CA.
	cd, _ := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/ca.crt"))
	kd, _ := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/ca.key"))
	cb, _ := pki.ParseBundle(cd)
	ck, _ := pki.ParseKeyPEM(kd)
	ca := &pkitest.CA{Cert: cb.Certs[0], Key: ck}
	// Issued ten minutes ago for 2h05m, like kubeadm's: due under renewBefore: 2h.
	installStandin(t, dir, ca, time.Now().Add(-10*time.Minute), 125*time.Minute)
	put := rootWriter(t, dir)
	debData, _ := os.ReadFile(deb)
	put("root/certagent.deb", debData, 0o644)
	put("etc/certagent/config.yaml", []byte(e2eConfig), 0o640) // the operator's config, kept by the package
	before := map[string][]byte{}
	for _, f := range []string{"etc/kubernetes/pki/apiserver.crt", "etc/kubernetes/admin.conf", "etc/kubernetes/pki/ca.crt"} {
		before[f], _ = os.ReadFile(filepath.Join(dir, f))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := nspawn.Boot(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	standinPID := mainPID(t, n, "kubelet.service")

	// Install: enabled, running, READY reached (Type=notify is active only then).
	start := time.Now()
	in(t, n, "dpkg", "-i", "--force-confold", "/root/certagent.deb")
	waitIn(t, "certagent active", 30*time.Second, func() bool { return prop(n, "certagent.service", "ActiveState") == "active" })
	t.Logf("dpkg -i to READY: %s", time.Since(start))
	if e := strings.TrimSpace(in(t, n, "systemctl", "is-enabled", "certagent.service")); e != "enabled" {
		t.Errorf("is-enabled: %s", e)
	}

	// Renewed with no manual step, the stand-in restarted and serving the new certificate.
	var st nodeStatus
	var raw string
	defer func() {
		if t.Failed() {
			t.Logf("last status JSON: %.4000s", raw)
		}
	}()
	waitIn(t, "renewals and the restart", 60*time.Second, func() bool {
		st, raw = statusIn(t, n)
		_, _, res := st.cert("apiserver")
		kres, served := st.component("kubelet")
		return strings.HasPrefix(res, "renewed") && kres == "ok" && served == "match"
	}, n)
	if mainPID(t, n, "kubelet.service") == standinPID {
		t.Error("the stand-in kubelet was not restarted")
	}
	disk, _, _ := st.cert(standinName)
	if got := servedSerialIn(n, "127.0.0.1:10250"); got != strings.TrimLeft(disk, "0") {
		t.Errorf("stand-in serves %s, disk has %s", got, disk)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/kubernetes/pki/apiserver.crt")); string(b) == string(before["etc/kubernetes/pki/apiserver.crt"]) {
		t.Error("apiserver.crt not renewed on disk")
	}

	// Structured events in the journal.
	events := 0
	for _, line := range strings.Split(in(t, n, "journalctl", "-u", "certagent", "-o", "json", "--no-pager"), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["MESSAGE_ID"] == "5bb61177dc074362822c1a458b6a50ca" && e["CERT_NAME"] != nil {
			events++
		}
	}
	if events < 10 {
		t.Errorf("%d renewed events with MESSAGE_ID and CERT_NAME in the journal, want 10 or more", events)
	}
	// The catalog explains them (journalctl -x), with the event's fields.
	if x := in(t, n, "journalctl", "-x", "-u", "certagent", "MESSAGE_ID=5bb61177dc074362822c1a458b6a50ca", "-n", "1", "--no-pager"); !strings.Contains(x, "Defined-By: certagent") || !strings.Contains(x, "Certificate ") {
		t.Errorf("journalctl -x does not explain the renewed event:\n%s", x)
	}

	// Who may ask: root everything, the certagent group read-only, others nothing.
	in(t, n, "useradd", "--no-create-home", "-G", "certagent", "reader")
	in(t, n, "useradd", "--no-create-home", "stranger")
	// status exits 0-2 by the certificates' health (1 here: renewBefore
	// keeps them inside the window); 3 would mean it could not ask.
	if out, err := n.Exec("runuser", "-u", "reader", "--", "certagent", "status"); exitOf(err) > 2 || !strings.Contains(string(out), "apiserver") {
		t.Errorf("group member status: %v\n%s", err, out)
	}
	if out, err := n.Exec("runuser", "-u", "reader", "--", "certagent", "renew", "apiserver"); err == nil || !strings.Contains(string(out), "only root may") {
		t.Errorf("group member renew: %v\n%s", err, out)
	}
	if out, err := n.Exec("runuser", "-u", "stranger", "--", "certagent", "status"); err == nil || !strings.Contains(string(out), "permission denied") {
		t.Errorf("stranger status: %v\n%s", err, out)
	}

	// Upgrade keeps an edited config and the service running.
	in(t, n, "sh", "-c", "echo '# edited by the operator' >> /etc/certagent/config.yaml")
	// The same build packaged as a newer version (nfpm, as make package).
	// Memory of the packaged daemon under systemd, as the kernel reports
	// it (a figure for the README, not an assertion: memory is measured,
	// not tested).
	mem := in(t, n, "sh", "-c", "grep -E '^(VmRSS|VmHWM|RssAnon|RssFile)' /proc/$(systemctl show -p MainPID --value certagent.service)/status")
	t.Logf("certagent.service after its renewals: %s", strings.Join(strings.Fields(mem), " "))

	newer := filepath.Join(t.TempDir(), "newer.deb")
	pkg := exec.Command("bash", "packaging/nfpm.sh", "package", "-f", "packaging/nfpm.yaml", "-p", "deb", "-t", newer)
	pkg.Dir = "../.."
	pkg.Env = append(os.Environ(), "VERSION=99.0.0", "ARCH=amd64")
	if out, err := pkg.CombinedOutput(); err != nil {
		t.Fatalf("newer package: %v\n%s", err, out)
	}
	nd, _ := os.ReadFile(newer)
	put("root/newer.deb", nd, 0o644)
	oldPID := prop(n, "certagent.service", "MainPID")
	in(t, n, "dpkg", "-i", "/root/newer.deb")
	waitIn(t, "certagent active after the upgrade", 30*time.Second, func() bool { return prop(n, "certagent.service", "ActiveState") == "active" })
	if !strings.Contains(in(t, n, "cat", "/etc/certagent/config.yaml"), "edited by the operator") {
		t.Error("the upgrade replaced the edited config")
	}
	if prop(n, "certagent.service", "MainPID") == oldPID {
		t.Error("not restarted on upgrade")
	}
	// Idle: started again (READY: its first pass is done) with nothing due.
	mem = in(t, n, "sh", "-c", "grep -E '^(VmRSS|VmHWM|RssAnon|RssFile)' /proc/$(systemctl show -p MainPID --value certagent.service)/status")
	t.Logf("certagent.service started again, nothing due: %s", strings.Join(strings.Fields(mem), " "))
	if v := in(t, n, "dpkg-query", "-W", "-f", "${Version}", "certagent"); v != "99.0.0" {
		t.Errorf("version after upgrade: %s", v)
	}

	// The watchdog: a daemon that stops pinging is restarted by systemd.
	// The shipped binary has no test hooks: the loop is frozen (SIGSTOP),
	// as a stuck one would be, and the watchdog's SIGKILL ends it.
	in(t, n, "mkdir", "-p", "/run/systemd/system/certagent.service.d")
	in(t, n, "sh", "-c", "printf '[Service]\\nWatchdogSec=3s\\nWatchdogSignal=SIGKILL\\n' > /run/systemd/system/certagent.service.d/watchdog.conf && systemctl daemon-reload && systemctl restart certagent")
	restarts := prop(n, "certagent.service", "NRestarts")
	in(t, n, "sh", "-c", "kill -STOP $(systemctl show -p MainPID --value certagent.service)")
	waitIn(t, "a watchdog restart", 30*time.Second, func() bool { return prop(n, "certagent.service", "NRestarts") != restarts })
	in(t, n, "sh", "-c", "rm -rf /run/systemd/system/certagent.service.d && systemctl daemon-reload && systemctl restart certagent")

	// Remove stops it; purge removes the state, never the PKI or backups.
	in(t, n, "dpkg", "-r", "certagent")
	if s := prop(n, "certagent.service", "ActiveState"); s == "active" {
		t.Errorf("still %s after remove", s)
	}
	in(t, n, "dpkg", "-P", "certagent")
	if _, err := os.Stat(filepath.Join(dir, "var/lib/certagent")); err == nil {
		t.Error("purge left /var/lib/certagent")
	}
	for _, f := range []string{"etc/kubernetes/pki/ca.crt", "etc/kubernetes/pki/apiserver.crt"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("purge touched %s", f)
		}
	}
	if b, _ := filepath.Glob(filepath.Join(dir, "etc/kubernetes/tmp/certagent-backup-*")); len(b) == 0 {
		t.Error("purge removed the backups")
	}
	// Reinstall works.
	in(t, n, "dpkg", "-i", "--force-confold", "/root/certagent.deb")
	waitIn(t, "certagent active after reinstall", 30*time.Second, func() bool { return prop(n, "certagent.service", "ActiveState") == "active" })
}

func exitOf(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return 255
	}
	return 0
}

func mustGlob(t *testing.T, pattern string) string {
	t.Helper()
	m, _ := filepath.Glob(pattern)
	if len(m) != 1 {
		t.Fatalf("%s: %v", pattern, m)
	}
	return m[0]
}

// TestRPMPackage: the .rpm's files, modes, scripts and requirements, and
// an install into a scratch root.
func TestRPMPackage(t *testing.T) {
	deb := e2eDeb(t)
	rpmFile := mustGlob(t, filepath.Join(filepath.Dir(deb), "certagent-*.rpm"))
	if _, err := exec.LookPath("rpm"); err != nil {
		t.Fatal("rpm not installed (apt-get install rpm)")
	}
	dump, err := exec.Command("rpm", "-qp", "--dump", rpmFile).Output()
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]string{}
	for _, line := range strings.Split(string(dump), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 {
			modes[f[0]] = f[4][len(f[4])-4:]
		}
	}
	for p, want := range map[string]string{"/usr/bin/certagent": "0755", "/usr/lib/systemd/system/certagent.service": "0644", "/etc/certagent/config.yaml": "0640"} {
		if modes[p] != want {
			t.Errorf("%s mode %q, want %s (dump:\n%s)", p, modes[p], want, dump)
		}
	}
	cfg, _ := exec.Command("rpm", "-qp", "--configfiles", rpmFile).Output()
	if !strings.Contains(string(cfg), "/etc/certagent/config.yaml") {
		t.Errorf("config.yaml is not a config file: %s", cfg)
	}
	scripts, _ := exec.Command("rpm", "-qp", "--scripts", rpmFile).Output()
	// %systemd_post: presets on first install, no enable --now; the group from sysusers.d.
	for _, want := range []string{"systemctl --no-reload preset certagent.service", "systemd-sysusers certagent.conf",
		"journalctl --update-catalog", "disable --now certagent.service", "try-restart certagent.service"} {
		if !strings.Contains(string(scripts), want) {
			t.Errorf("scripts lack %q:\n%s", want, scripts)
		}
	}
	for _, bad := range []string{"enable --now", "groupadd"} {
		if strings.Contains(string(scripts), bad) {
			t.Errorf("scripts still run %q:\n%s", bad, scripts)
		}
	}
	req, _ := exec.Command("rpm", "-qp", "--requires", rpmFile).Output()
	// nfpm 2.45.2 cannot qualify it as Requires(post) (see nfpm.yaml).
	if !strings.Contains(string(req), "systemd") || strings.Contains(string(req), "shadow-utils") {
		t.Errorf("requires: %s", req)
	}
	if g, _ := exec.Command("rpm", "-qp", "--qf", "%{GROUP}", rpmFile).Output(); string(g) != "(none)" {
		t.Errorf("obsolete Group: tag %q", g)
	}
	lic, _ := exec.Command("rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpmFile).Output()
	if !strings.Contains(string(lic), "/usr/share/licenses/certagent/copyright l") {
		t.Errorf("no %%license file:\n%s", lic)
	}
	for _, p := range packagedFiles {
		if _, ok := modes[p]; !ok {
			t.Errorf("the .rpm lacks %s", p)
		}
	}
	if _, ok := modes["/usr/lib/systemd/system-preset/90-certagent.preset"]; !ok {
		t.Error("the .rpm lacks the preset")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: rpm --root install needs root")
	}
	root := t.TempDir()
	if out, err := exec.Command("rpm", "--root", root, "--nodeps", "-i", rpmFile).CombinedOutput(); err != nil {
		t.Fatalf("rpm --root install: %v\n%s", err, out)
	}
	for p, want := range map[string]os.FileMode{"usr/bin/certagent": 0o755, "etc/certagent/config.yaml": 0o640, "usr/lib/systemd/system/certagent.service": 0o644} {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %v", p, fi, err, want)
		}
	}
	fmt.Fprint(os.Stderr)
}

// packagedFiles are installed by both packages, besides the binary, the
// unit and the config.
var packagedFiles = []string{
	"/usr/lib/sysusers.d/certagent.conf",
	"/usr/lib/systemd/catalog/certagent.catalog",
	"/usr/share/bash-completion/completions/certagent",
	"/usr/share/zsh/vendor-completions/_certagent",
	"/usr/share/fish/vendor_completions.d/certagent.fish",
	"/usr/share/man/man8/certagent.8.gz",
	"/usr/share/man/man8/certagent-renew.8.gz",
}

// TestDebPackage: lintian --pedantic is clean but for the documented
// overrides, and the .deb holds the sysusers.d file, the journal catalog
// (one entry per MESSAGE_ID), completions and man pages.
func TestDebPackage(t *testing.T) {
	deb := e2eDeb(t)
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatal("lintian not installed (apt-get install lintian)")
	}
	out, err := exec.Command("lintian", "--pedantic", deb).CombinedOutput()
	var findings []string
	for _, l := range strings.Split(string(out), "\n") {
		if len(l) > 2 && l[1] == ':' && strings.Contains("EWIPX", l[:1]) {
			findings = append(findings, l)
		}
	}
	if err != nil || len(findings) > 0 {
		t.Errorf("lintian --pedantic: %v\n%s", err, strings.Join(findings, "\n"))
	}
	list, err := exec.Command("dpkg-deb", "--contents", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range packagedFiles {
		if !strings.Contains(string(list), "."+p+"\n") {
			t.Errorf("the .deb lacks %s", p)
		}
	}
	if strings.Contains(string(list), "system-preset") {
		t.Error("the .deb carries an RPM preset (Debian enables in postinst)")
	}
	ctl := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "--control", deb, ctl).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	post, _ := os.ReadFile(filepath.Join(ctl, "postinst"))
	for _, want := range []string{"systemd-sysusers", "certagent.conf", "journalctl --update-catalog"} {
		if !strings.Contains(string(post), want) {
			t.Errorf("postinst lacks %q", want)
		}
	}
	if strings.Contains(string(post), "addgroup") {
		t.Error("postinst still runs addgroup")
	}
	// The catalog: every MESSAGE_ID of agent/logfields/logfields.go, and journalctl reads it.
	ids := regexp.MustCompile(`Msg[A-Za-z]+ += "([0-9a-f]{32})"`).FindAllStringSubmatch(string(mustRead(t, "../../agent/logfields/logfields.go")), -1)
	if len(ids) < 12 {
		t.Fatalf("%d MESSAGE_IDs in agent/logfields/logfields.go", len(ids))
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/lib/systemd/catalog"), 0o755)
	os.MkdirAll(filepath.Join(root, "var/lib/systemd"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/lib/systemd/catalog/certagent.catalog"), mustRead(t, "../../packaging/certagent.catalog"), 0o644)
	if out, err := exec.Command("journalctl", "--root", root, "--update-catalog").CombinedOutput(); err != nil {
		t.Fatalf("journalctl --update-catalog: %v\n%s", err, out)
	}
	for _, id := range ids {
		out, err := exec.Command("journalctl", "--root", root, "--dump-catalog", id[1]).Output()
		if err != nil || !strings.Contains(string(out), "Defined-By: certagent") || !strings.Contains(string(out), "Documentation: ") {
			t.Errorf("catalog entry %s: %v\n%s", id[1], err, out)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
