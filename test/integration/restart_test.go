package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
	"github.com/certagent/certagent/test/nspawn"
)

const kubeletUnit = `[Unit]
Description=stand-in kubelet for certagent's tests
[Service]
ExecStartPre=/usr/local/bin/standin-kubelet -check
ExecStart=/usr/local/bin/standin-kubelet
[Install]
WantedBy=multi-user.target
`

const nodeConfig = `apiVersion: certagent.io/v1alpha1
kind: AgentConfiguration
agent: {retryInitial: 1h}
restart:
  timeout: 8s
  units:
  - unit: kubelet.service
    certificates: [/var/lib/kubelet/pki/standin-serving.crt]
    address: 127.0.0.1:10250
    healthz: http://127.0.0.1:10248/healthz
`

func requireNspawn(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the systemd node tests need root")
		}
		t.Skip("SKIPPED: the systemd node tests need root (systemd-nspawn)")
	}
}

// unpackedRootfs unpacks the cached node rootfs (made on first use) into
// a directory of the test.
func unpackedRootfs(t *testing.T) string {
	t.Helper()
	tarball, err := nspawn.Rootfs("../nspawn")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := nspawn.Unpack(tarball, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// systemdNode boots a Debian node with a real systemd, a kubeadm-like PKI
// whose CA key is local, the stand-in kubelet serving a certificate that is
// due, and certagent. fault goes to /etc/standin/fault.
func systemdNode(t *testing.T, fault string) *nspawn.Node {
	t.Helper()
	requireNspawn(t)
	dir := unpackedRootfs(t)
	n, err := (pkitest.Layout{}).Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	put := rootWriter(t, dir)
	installStandin(t, dir, n.CA, time.Now().Add(-55*time.Minute), time.Hour)
	put("etc/certagent/config.yaml", []byte(nodeConfig), 0o644)
	if fault != "" {
		put("etc/standin/fault", []byte(fault), 0o644)
	}
	bin, _ := os.ReadFile(certagentBin)
	put("usr/local/bin/certagent", bin, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node, err := nspawn.Boot(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Stop)
	return node
}

func mainPID(t *testing.T, n *nspawn.Node, unit string) string {
	out, _ := n.Exec("systemctl", "show", "-p", "MainPID", "--value", unit)
	return strings.TrimSpace(string(out))
}

// servedSerialIn reads the serial the endpoint presents, with the host's
// openssl inside the node's network namespace.
func servedSerialIn(n *nspawn.Node, addr string) string {
	out, _ := n.ExecNet("sh", "-c", "openssl s_client -connect "+addr+" </dev/null 2>/dev/null | openssl x509 -noout -serial")
	// openssl pads the hex to whole bytes; certagent prints it unpadded.
	return strings.TrimLeft(strings.ToUpper(strings.TrimPrefix(strings.TrimSpace(string(out)), "serial=")), "0")
}

type nodeStatus struct {
	Certificates []struct {
		Name    string `json:"name"`
		Serial  string `json:"serial"`
		Renewal struct {
			State, LastResult, LastError string
		} `json:"renewal"`
	} `json:"certificates"`
	Daemon struct {
		Components []struct {
			Name       string `json:"name"`
			LastResult string `json:"lastResult"`
			Served     []struct {
				State, DiskSerial, ServedSerial string
			} `json:"served"`
		} `json:"components"`
	} `json:"daemon"`
}

func statusIn(t *testing.T, n *nspawn.Node) (nodeStatus, string) {
	out, _ := n.Exec("certagent", "status", "-o", "json")
	var s nodeStatus
	json.Unmarshal(out, &s)
	return s, string(out)
}

const standinName = "/var/lib/kubelet/pki/standin-serving.crt"

func (s nodeStatus) cert(name string) (serial, state, result string) {
	for _, c := range s.Certificates {
		if c.Name == name {
			return c.Serial, c.Renewal.State, c.Renewal.LastResult + " " + c.Renewal.LastError
		}
	}
	return "", "", ""
}

func (s nodeStatus) component(name string) (result, served string) {
	for _, c := range s.Daemon.Components {
		if c.Name == name {
			for _, sv := range c.Served {
				served = sv.State
			}
			return c.LastResult, served
		}
	}
	return "", ""
}

// runAgentIn starts certagent as a transient unit in the node and waits
// until done says the renewal and restart went their way.
func runAgentIn(t *testing.T, n *nspawn.Node, done func(nodeStatus) bool) nodeStatus {
	t.Helper()
	if out, err := n.Exec("systemd-run", "--unit=certagent", "/usr/local/bin/certagent", "run"); err != nil {
		t.Fatalf("systemd-run: %v %s", err, out)
	}
	deadline := time.Now().Add(90 * time.Second)
	var raw string
	for time.Now().Before(deadline) {
		var s nodeStatus
		s, raw = statusIn(t, n)
		if done(s) {
			return s
		}
		time.Sleep(300 * time.Millisecond)
	}
	jl, _ := n.Exec("journalctl", "--no-pager", "-n", "80")
	t.Fatalf("timed out; status:\n%s\njournal:\n%s", raw, jl)
	return nodeStatus{}
}

// TestRestartKubeletOnSystemd: certagent renews the stand-in kubelet's
// serving certificate, restarts kubelet.service over D-Bus, and proves the
// new certificate is served.
func TestRestartKubeletOnSystemd(t *testing.T) {
	n := systemdNode(t, "")
	before := mainPID(t, n, "kubelet.service")
	oldServed := servedSerialIn(n, "127.0.0.1:10250")
	if before == "" || before == "0" || oldServed == "" {
		t.Fatalf("stand-in not running: pid %q serial %q\n%s", before, oldServed, n.Log())
	}
	start := time.Now()
	s := runAgentIn(t, n, func(s nodeStatus) bool {
		res, served := s.component("kubelet")
		return res == "ok" && served == "match"
	})
	t.Logf("renewed on disk to verified as served: %s (including the agent's start)", time.Since(start))
	disk, _, _ := s.cert(standinName)
	if after := mainPID(t, n, "kubelet.service"); after == before || after == "0" {
		t.Errorf("MainPID %s -> %s: not restarted", before, after)
	}
	if got := servedSerialIn(n, "127.0.0.1:10250"); got != disk || got == oldServed {
		t.Errorf("served %s, disk %s, before %s", got, disk, oldServed)
	}
	jl, _ := n.Exec("journalctl", "-u", "kubelet", "--no-pager")
	if strings.Count(string(jl), "serving certificate") < 2 {
		t.Errorf("kubelet journal does not show a restart:\n%s", jl)
	}
}

// TestRestartRollsBack: a kubelet that will not start with the new
// certificate, and one that starts but never gets healthy: certagent puts
// the old certificate back, restarts again, the old one is served, and the
// certificate is marked failed (no retry for an hour: no hot loop).
func TestRestartRollsBack(t *testing.T) {
	for _, mode := range []string{"fail", "unhealthy"} {
		t.Run(mode, func(t *testing.T) {
			n := systemdNode(t, fmt.Sprintf("%s %s", mode, time.Now().UTC().Format(time.RFC3339)))
			oldServed := servedSerialIn(n, "127.0.0.1:10250")
			s := runAgentIn(t, n, func(s nodeStatus) bool {
				_, state, _ := s.cert(standinName)
				res, _ := s.component("kubelet")
				return state == "failed" && res != ""
			})
			disk, _, result := s.cert(standinName)
			if !strings.Contains(result, "rolled back") {
				t.Errorf("result %q", result)
			}
			if disk != oldServed {
				t.Errorf("disk serial %s, want the old %s back", disk, oldServed)
			}
			deadline := time.Now().Add(20 * time.Second)
			for servedSerialIn(n, "127.0.0.1:10250") != oldServed && time.Now().Before(deadline) {
				time.Sleep(200 * time.Millisecond)
			}
			if got := servedSerialIn(n, "127.0.0.1:10250"); got != oldServed {
				t.Errorf("served %s after rollback, want %s", got, oldServed)
			}
		})
	}
}

// rootWriter writes files below a rootfs, creating directories.
func rootWriter(t testing.TB, dir string) func(p string, data []byte, mode os.FileMode) {
	return func(p string, data []byte, mode os.FileMode) {
		t.Helper()
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, p), data, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// installStandin puts the stand-in kubelet into a rootfs: its binary, an
// enabled kubelet.service, and a serving certificate of ca issued at nb.
func installStandin(t testing.TB, dir string, ca *pkitest.CA, nb time.Time, life time.Duration) {
	t.Helper()
	put := rootWriter(t, dir)
	c, k, err := ca.Issue(pkitest.Spec{CommonName: "standin", DNSNames: []string{"localhost"}, NotBefore: nb, NotAfter: nb.Add(life)})
	if err != nil {
		t.Fatal(err)
	}
	put("var/lib/kubelet/pki/standin-serving.crt", pkitest.CertPEM(c), 0o644)
	put("var/lib/kubelet/pki/standin-serving.key", pkitest.KeyPEM(k), 0o600)
	put("etc/systemd/system/kubelet.service", []byte(kubeletUnit), 0o644)
	os.MkdirAll(filepath.Join(dir, "etc/systemd/system/multi-user.target.wants"), 0o755)
	os.Symlink("/etc/systemd/system/kubelet.service", filepath.Join(dir, "etc/systemd/system/multi-user.target.wants/kubelet.service"))
	standin := filepath.Join(t.TempDir(), "standin-kubelet")
	if out, err := exec.Command("go", "build", "-o", standin, "github.com/certagent/certagent/test/nspawn/standin-kubelet").CombinedOutput(); err != nil {
		t.Fatalf("build stand-in: %v %s", err, out)
	}
	sb, _ := os.ReadFile(standin)
	put("usr/local/bin/standin-kubelet", sb, 0o755)
}
