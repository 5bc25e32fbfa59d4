package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const head = "apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\n"

func TestParse(t *testing.T) {
	tests := []struct {
		name, doc, err string
	}{
		{name: "minimal", doc: head},
		{name: "full", doc: head + "pkiDir: /srv/pki\npaths: [/opt/certs, '/opt/*.pem']\nexclude: [/opt/certs/old.crt]\nrenewBefore: 30d\nmaxFileSize: 4096\n"},
		{name: "unknown key named", doc: head + "renewBefor: 30d\n", err: `unknown field "renewBefor"`},
		{name: "unknown nested type", doc: head + "paths: /not/a/list\n", err: "paths"},
		{name: "bad duration named", doc: head + "renewBefore: soon\n", err: `renewBefore: invalid duration "soon"`},
		{name: "negative duration", doc: head + "renewBefore: -5h\n", err: "renewBefore: must be positive"},
		{name: "relative path named", doc: head + "paths: [certs/x.crt]\n", err: "paths[0]: must be an absolute path"},
		{name: "bad glob named", doc: head + "exclude: ['/a/[']\n", err: "exclude[0]: bad glob"},
		{name: "relative dir", doc: head + "kubeletPKIDir: pki\n", err: "kubeletPKIDir: must be an absolute path"},
		{name: "wrong version", doc: "apiVersion: v1\nkind: AgentConfiguration\n", err: `apiVersion: must be "certagent.io/v1alpha1"`},
		{name: "wrong kind", doc: "apiVersion: certagent.io/v1alpha1\nkind: Config\n", err: "kind: must be"},
		{name: "empty", doc: "", err: "config is empty"},
		{name: "not yaml", doc: "{{{", err: "config:"},
		{name: "duplicate key", doc: head + "pkiDir: /a\npkiDir: /b\n", err: "pkiDir"},
		{name: "negative size", doc: head + "maxFileSize: -1\n", err: "maxFileSize"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc))
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error = %v, want it to contain %q (config %+v)", err, tc.err, c)
			}
		})
	}
}

func TestDefaultsAndDurations(t *testing.T) {
	c, err := Parse([]byte(head + "kubernetesDir: /srv/k8s\nrenewBefore: 30d\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.PKIDir != "/srv/k8s/pki" || c.KubeletPKIDir != "/var/lib/kubelet/pki" || c.RenewBeforeDuration != 30*24*time.Hour {
		t.Fatalf("defaults: %+v", c)
	}
	co := c.Coordination
	if !co.On() || co.LeaseName != "certagent-restart" || co.LeaseNamespace != "kube-system" || co.LeaseDurationDuration != 30*time.Second ||
		co.RetryIntervalDuration != 2*time.Second || co.APIDownWindowDuration != 10*time.Minute || co.Kubeconfig != "/srv/k8s/controller-manager.conf" {
		t.Fatalf("coordination defaults: %+v", co)
	}
	if c, err = Parse([]byte(head + "coordination: {enabled: false, leaseName: x, leaseDuration: 1m}\n")); err != nil || c.Coordination.On() ||
		c.Coordination.LeaseName != "x" || c.Coordination.LeaseDurationDuration != time.Minute {
		t.Fatalf("coordination: %+v %v", c.Coordination, err)
	}
	if d, err := ParseDuration("36h"); err != nil || d != 36*time.Hour {
		t.Fatalf("36h = %v %v", d, err)
	}
}

func TestLoad(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.yaml")
	if c, err := Load(missing, true); err != nil || c.PKIDir != "/etc/kubernetes/pki" {
		t.Fatalf("optional missing: %v %v", c, err)
	}
	if _, err := Load(missing, false); err == nil {
		t.Fatal("a missing explicit config must be an error")
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte(head+"nope: 1\n"), 0o644)
	if _, err := Load(bad, true); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("bad config error should name file and key: %v", err)
	}
}

// TestDurationsInRange: every duration setting is parsed by one parser
// that accepts Go's syntax and days, weeks and years, and rejects values
// that overflow time.Duration or exceed the setting's bound, instead of
// wrapping around (213505d once made a one-day certificate).
func TestDurationsInRange(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		name, key, val string
		want           time.Duration // when err is empty
		err            string
	}{
		{name: "hours", key: "renewBefore", val: "720h", want: 720 * time.Hour},
		{name: "days", key: "renewBefore", val: "30d", want: 30 * day},
		{name: "go combo", key: "renewBefore", val: "1h30m", want: 90 * time.Minute},
		{name: "go fraction", key: "renewBefore", val: "1.5h", want: 90 * time.Minute},
		{name: "go micro", key: "renewBefore", val: "1h500us", want: time.Hour + 500*time.Microsecond},
		{name: "days and hours", key: "renewBefore", val: "1d12h", want: 36 * time.Hour},
		{name: "weeks", key: "renewBefore", val: "2w", want: 14 * day},
		{name: "a year", key: "renewal.validity", val: "1y", want: 365 * day},
		{name: "a century", key: "renewal.validity", val: "36500d", want: 36500 * day},
		{name: "renewBefore wraps to 25 minutes", key: "renewBefore", val: "213504d", err: "renewBefore: invalid duration \"213504d\": out of range"},
		{name: "validity wraps to a day", key: "renewal.validity", val: "213505d", err: "renewal.validity: invalid duration \"213505d\": out of range"},
		{name: "validity past int64", key: "renewal.validity", val: "106752d", err: "renewal.validity: invalid duration \"106752d\": out of range"},
		{name: "validity over a century", key: "renewal.validity", val: "36501d", err: "renewal.validity: must be at most 100y"},
		{name: "validity max int64 ns", key: "renewal.validity", val: "9223372036854775807ns", err: "renewal.validity: must be at most 100y"},
		{name: "go syntax overflow", key: "renewBefore", val: "3000000h", err: "out of range"},
		{name: "huge day count", key: "renewBefore", val: "99999999999999999999d", err: "renewBefore: invalid duration"},
		{name: "resync of centuries", key: "agent.resyncInterval", val: "106751d", err: "agent.resyncInterval: must be at most 1d"},
		{name: "retryMax overflowing backoff", key: "agent.retryMax", val: "290y", err: "agent.retryMax: must be at most 1w"},
		{name: "retryInitial huge", key: "agent.retryInitial", val: "2562047h", err: "agent.retryInitial: must be at most 1d"},
		{name: "CSR wait huge", key: "kubelet.clientCSRTimeout", val: "100y", err: "kubelet.clientCSRTimeout: must be at most 1d"},
		{name: "fileCheckFrequency times 1.5 overflows", key: "restart.fileCheckFrequency", val: "200y", err: "restart.fileCheckFrequency: must be at most 1h"},
		{name: "restart timeout huge", key: "restart.timeout", val: "2562047h", err: "restart.timeout: must be at most 1h"},
		{name: "lease of a day", key: "coordination.leaseDuration", val: "1d", err: "coordination.leaseDuration: must be at most 1h"},
		{name: "lease under a second", key: "coordination.leaseDuration", val: "500ms", err: "coordination.leaseDuration: must be at least 1s"},
		{name: "API-down window of a year", key: "coordination.apiDownWindow", val: "1y", err: "coordination.apiDownWindow: must be at most 1d"},
		{name: "negative", key: "renewBefore", val: "-5h", err: "renewBefore: must be positive"},
		{name: "negative days", key: "renewBefore", val: "-30d", err: "renewBefore: must be positive"},
		{name: "zero", key: "renewBefore", val: "0", err: "renewBefore: must be positive"},
		{name: "unit order", key: "renewBefore", val: "12h1d", err: "renewBefore: invalid duration"},
		{name: "no unit", key: "renewBefore", val: "30", err: "renewBefore: invalid duration"},
		{name: "fraction of a day", key: "renewBefore", val: "1.5d", err: "renewBefore: invalid duration"},
		{name: "validity under an hour", key: "renewal.validity", val: "59m", err: "renewal.validity: must be at least 1h"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			doc := head + tc.key + ": " + tc.val + "\n"
			if parent, leaf, ok := strings.Cut(tc.key, "."); ok {
				doc = head + parent + ":\n  " + leaf + ": " + tc.val + "\n"
			}
			c, err := Parse([]byte(doc))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error = %v, want it to contain %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]time.Duration{"renewBefore": c.RenewBeforeDuration, "renewal.validity": c.Renewal.ValidityDuration}[tc.key]
			if got != tc.want {
				t.Fatalf("%s %s = %v, want %v", tc.key, tc.val, got, tc.want)
			}
		})
	}
}

// TestZeroDurationsStay: restart.settle and restart.reloadWait allow 0
// ("no settling", "always restart"); a 0 given stays 0, one not given
// takes the default.
func TestZeroDurationsStay(t *testing.T) {
	c, err := Parse([]byte(head + "restart: {settle: 0s, reloadWait: \"0\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Restart.SettleDuration != 0 || c.Restart.ReloadWaitDuration != 0 {
		t.Errorf("settle %v, reloadWait %v: want 0, 0", c.Restart.SettleDuration, c.Restart.ReloadWaitDuration)
	}
	c, err = Parse([]byte(head))
	if err != nil {
		t.Fatal(err)
	}
	if c.Restart.SettleDuration != 10*time.Second || c.Restart.ReloadWaitDuration != 70*time.Second {
		t.Errorf("defaults: settle %v, reloadWait %v", c.Restart.SettleDuration, c.Restart.ReloadWaitDuration)
	}
}

func TestCertificateTimeoutInRange(t *testing.T) {
	for _, tc := range []struct{ val, err string }{
		{"15m", ""}, {"1d", ""}, {"213504d", "out of range"}, {"100y", "must be at most 1d"}, {"-1s", "must be positive"},
	} {
		doc := head + "certificates:\n- {certFile: /a.crt, keyFile: /a.key, signerName: example.com/x, timeout: " + tc.val + "}\n"
		_, err := Parse([]byte(doc))
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), "certificates[0].timeout: ") || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("timeout %s: error = %v, want %q", tc.val, err, tc.err)
		}
	}
}

// TestLoadRefusesNonRegularFiles: a FIFO as the config once blocked the
// read forever (and SIGTERM with it); a device or a huge file is no
// config either. Each must fail at once with an error naming the file.
func TestLoadRefusesNonRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(head+"# "+strings.Repeat("x", 2<<20)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
		optional         bool
		names            string // the file the error names (where a link leads)
	}{
		{name: "fifo", path: fifo, want: "not a regular file"},
		{name: "fifo at the optional default", path: fifo, want: "not a regular file", optional: true},
		{name: "symlink to a fifo", path: link, want: "not a regular file", names: fifo},
		{name: "character device", path: "/dev/zero", want: "not a regular file"},
		{name: "directory", path: dir, want: "is a directory"},
		{name: "over the size limit", path: big, want: "file too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				_, err := Load(tc.path, tc.optional)
				done <- err
			}()
			select {
			case err := <-done:
				names := tc.path
				if tc.names != "" {
					names = tc.names
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), names) {
					t.Fatalf("Load(%s) = %v, want an error naming %s and %q", tc.path, err, names, tc.want)
				}
			case <-time.After(10 * time.Second):
				// Never reached after the fix; before it, the read blocks.
				t.Fatalf("Load(%s) still blocked after 10s", tc.path)
			}
		})
	}
	// A relative path is read as the working directory sees it.
	t.Chdir(dir)
	if err := os.WriteFile("rel.yaml", []byte(head), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load("rel.yaml", false); err != nil {
		t.Fatalf("relative path: %v", err)
	}
}
