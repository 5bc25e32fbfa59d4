package integration

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// exporterFixture is a node tree and one scrape of enix's
// x509-certificate-exporter over it (testdata/x509-exporter/README.md says
// how it was run).
const exporterFixture = "testdata/x509-exporter"

// exporterDirs and exporterKubeconfigs are the exporter's -d and -k flags
// of that scrape, as node paths.
var (
	exporterDirs        = []string{"/etc/kubernetes/pki", "/etc/kubernetes/pki/etcd", "/srv/extra"}
	exporterKubeconfigs = []string{"/etc/kubernetes/admin.conf", "/etc/kubernetes/kubelet.conf"}
)

// Exporter series certagent does not serve, with why (README.md lists them).
var notServed = map[string]string{
	"x509_cert_collision_total":         "certagent's series never collide: each has its certificate's name",
	"x509_cert_collision_dropped_total": "certagent's series never collide: each has its certificate's name",
	"x509_scrape_duration_seconds":      "the exporter's own scrape timing; certagent_scan_duration_seconds times the scan",
	"x509_source_bundles":               "the exporter's per-source bookkeeping; certagent has one source, the node scan",
}

// certOnly are exporter labels that only its Kubernetes sources
// (secrets, configmaps, caBundles, CRLs) or its collision resolution fill:
// always empty on a node agent, so never sent.
var certOnly = []string{"secret_namespace", "secret_name", "secret_key", "configmap_namespace", "configmap_name", "configmap_key",
	"cabundle_resource_kind", "cabundle_resource_name", "cabundle_entry", "crl_number", "discriminator"}

// certagentExtra are certagent's own labels on the x509_cert_* series.
var certagentExtra = []string{"name", "renewal_path"}

// promSeries is one series: all its labels (empty ones included) and value.
type promSeries struct {
	labels map[string]string
	value  float64
}

// parseProm parses the text format with expfmt.
func parseProm(t *testing.T, r io.Reader) map[string][]promSeries {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]promSeries{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			s := promSeries{labels: map[string]string{}}
			for _, lp := range m.GetLabel() {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case m.GetGauge() != nil:
				s.value = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				s.value = m.GetCounter().GetValue()
			}
			out[name] = append(out[name], s)
		}
	}
	return out
}

// certKey identifies one certificate in one file across both scrapes.
func certKey(l map[string]string) string {
	return fmt.Sprintf("%s|%s|%s|%s", l["filepath"], l["embedded_kind"], l["embedded_key"], l["serial_number"])
}

// TestExporterCompat runs `certagent run` over the exporter fixture's tree
// and compares its /metrics with the exporter's scrape, certificate by
// certificate: series names, label names and values, x509_cert_not_after.
func TestExporterCompat(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	if err := os.CopyFS(root, os.DirFS(filepath.Join(exporterFixture, "root"))); err != nil {
		t.Fatal(err)
	}
	// A file the exporter was not pointed at, that certagent finds on its
	// own (the kubelet's self-signed serving certificate): compared on the
	// intersection, reported beyond it.
	self, err := os.ReadFile(filepath.Join(root, "srv/extra/selfsigned.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var/lib/kubelet/pki"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "var/lib/kubelet/pki/kubelet.crt"), self, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := "apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\npaths: [/srv/extra]\n"
	if err := os.MkdirAll(filepath.Join(root, "etc/certagent"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/certagent/config.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	startDaemon(t, certagentBin, root, nil, "--metrics-address", addr)
	got := scrapeCertagent(t, addr)

	f, err := os.Open(filepath.Join(exporterFixture, "metrics.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := parseProm(t, f)
	if len(want["x509_cert_not_after"]) != 18 {
		t.Fatalf("the fixture has %d x509_cert_not_after series, want 18", len(want["x509_cert_not_after"]))
	}

	// Series names: every exporter family is served, or listed with a reason.
	for name := range want {
		if _, ok := got[name]; !ok && notServed[name] == "" {
			t.Errorf("exporter series %s not served", name)
		}
	}
	// The v3 line's error series, and what the v4 one counted.
	errs := 0.0
	for _, s := range want["x509_source_errors_total"] {
		errs += s.value
	}
	if r := got["x509_read_errors"]; len(r) != 1 || r[0].value != errs {
		t.Errorf("x509_read_errors %v, want one series = %v (the exporter's x509_source_errors_total)", r, errs)
	}
	if r := got["x509_source_errors_total"]; len(r) != 1 || r[0].value < errs {
		t.Errorf("x509_source_errors_total %v, want one series >= %v", r, errs)
	}
	// Label names of the other shared families.
	for _, name := range []string{"x509_source_errors_total", "x509_source_up", "x509_exporter_build_info"} {
		if w, g := labelNames(want[name]), labelNames(got[name]); !slices.Equal(w, g) {
			t.Errorf("%s labels %v, want %v", name, g, w)
		}
	}
	for _, fam := range []string{"x509_cert_not_after", "x509_cert_expired"} {
		compareCerts(t, fam, want[fam], got[fam])
	}
}

// compareCerts compares one x509_cert_* family certificate by certificate.
func compareCerts(t *testing.T, fam string, want, got []promSeries) {
	t.Helper()
	byKey := map[string]promSeries{}
	for _, s := range got {
		k := certKey(s.labels)
		if _, dup := byKey[k]; dup {
			t.Errorf("%s: two certagent series for %s", fam, k)
		}
		byKey[k] = s
		for name := range s.labels {
			if !slices.Contains(certagentExtra, name) && !hasLabel(want, name) {
				t.Errorf("%s: certagent label %s is neither the exporter's nor certagent's own", fam, name)
			}
		}
	}
	matched, beyond := map[string]bool{}, 0
	for _, w := range want {
		k := certKey(w.labels)
		g, ok := byKey[k]
		if !ok {
			t.Errorf("%s: certagent has no series for the exporter's %s (subject_CN %q)", fam, k, w.labels["subject_CN"])
			continue
		}
		matched[k] = true
		for name, v := range w.labels {
			if slices.Contains(certOnly, name) {
				if v != "" {
					t.Errorf("%s %s: exporter label %s=%q, expected empty on a node", fam, k, name, v)
				}
				continue
			}
			if g.labels[name] != v {
				t.Errorf("%s %s: %s=%q, exporter has %q", fam, k, name, g.labels[name], v)
			}
		}
		if fam == "x509_cert_not_after" && g.value != w.value {
			t.Errorf("%s %s = %v, exporter has %v", fam, k, g.value, w.value)
		}
	}
	// What certagent reports beyond the exporter's flags must lie outside
	// the directories and kubeconfigs it was given.
	for k, s := range byKey {
		if matched[k] {
			continue
		}
		p := s.labels["filepath"]
		if slices.Contains(exporterDirs, filepath.Dir(p)) || slices.Contains(exporterKubeconfigs, p) {
			t.Errorf("%s: certagent reports %s (%s) that the exporter did not", fam, k, s.labels["name"])
		} else {
			beyond++
			t.Logf("%s: beyond the exporter's flags: %s", fam, k)
		}
	}
	if len(matched) == 0 || len(matched) != len(want) {
		t.Errorf("%s: %d of the exporter's %d series matched", fam, len(matched), len(want))
	}
	if beyond != 1 {
		t.Errorf("%s: %d series beyond the exporter's flags, want 1 (/var/lib/kubelet/pki/kubelet.crt)", fam, beyond)
	}
}

func hasLabel(l []promSeries, name string) bool {
	return len(l) > 0 && func() bool { _, ok := l[0].labels[name]; return ok }()
}

func labelNames(l []promSeries) []string {
	var names []string
	if len(l) > 0 {
		for n := range maps.Keys(l[0].labels) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scrapeCertagent scrapes /metrics once the first scan is in it.
func scrapeCertagent(t *testing.T, addr string) map[string][]promSeries {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(body), "x509_cert_not_after{") {
				return parseProm(t, strings.NewReader(string(body)))
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate series at %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
