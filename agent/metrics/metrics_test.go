package metrics

import (
	"fmt"
	"maps"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
)

// BenchmarkMetricsScrape10k: one /metrics scrape with 10,000 certificates.
func BenchmarkMetricsScrape10k(b *testing.B) {
	m := New()
	rep := &inventory.Report{}
	now := time.Now()
	issuer := &inventory.NameParts{CN: "kubernetes"}
	for i := 0; i < 10000; i++ {
		rep.Certificates = append(rep.Certificates, &inventory.Certificate{
			Name: fmt.Sprintf("/opt/corpus/cert-%05d.pem", i), Path: fmt.Sprintf("/opt/corpus/cert-%05d.pem", i),
			Subject: fmt.Sprintf("CN=svc-%05d.example.internal", i), Issuer: "CN=kubernetes", Serial: fmt.Sprintf("%X", i*7919),
			SubjectParts: inventory.NameParts{CN: fmt.Sprintf("svc-%05d.example.internal", i)}, IssuerParts: issuer,
			SerialDecimal: fmt.Sprint(i * 7919),
			NotBefore:     now.Add(-time.Hour), NotAfter: now.Add(time.Duration(i) * time.Hour), RenewalPath: inventory.RenewLocalCA,
		})
	}
	m.Scanned(rep, time.Millisecond)
	h := m.Handler()
	var size int
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size)/1e6, "MB/scrape")
}

// sample is one parsed series: its non-empty labels and value.
type sample struct {
	labels map[string]string
	value  float64
}

// scrapeParsed scrapes m and parses the text with expfmt.
func scrapeParsed(t *testing.T, m *Metrics) map[string][]sample {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]sample{}
	for name, f := range fams {
		for _, mt := range f.GetMetric() {
			s := sample{labels: map[string]string{}}
			for _, lp := range mt.GetLabel() {
				if lp.GetValue() != "" {
					s.labels[lp.GetName()] = lp.GetValue()
				}
			}
			switch {
			case mt.GetGauge() != nil:
				s.value = mt.GetGauge().GetValue()
			case mt.GetCounter() != nil:
				s.value = mt.GetCounter().GetValue()
			}
			out[name] = append(out[name], s)
		}
	}
	return out
}

// TestMetricsExporterLabels: the x509_cert_* labels come from the parsed
// names (commas kept), the serial is decimal, kubeconfig certificates carry
// embedded_kind/embedded_key, a file name that is not UTF-8 does not break
// the scrape, and the read-error and state series are there.
func TestMetricsExporterLabels(t *testing.T) {
	m := New()
	m.SetVersion("1.2.3")
	now := time.Now()
	kube := &inventory.NameParts{CN: "kubernetes"}
	rich := inventory.NameParts{C: "JP", ST: "Tokyo", L: "Chiyoda", O: "Acme, Inc.", OU: "Platform", CN: "web, east"}
	rep := &inventory.Report{
		Certificates: []*inventory.Certificate{
			{Name: "/srv/extra/web.crt", Path: "/srv/extra/web.crt", SerialDecimal: "1234567890123456789", Serial: "112210F47DE98115",
				SubjectParts: rich, IssuerParts: kube, NotAfter: now.Add(time.Hour), RenewalPath: inventory.RenewExternal},
			{Name: "admin.conf", Path: "/etc/kubernetes/admin.conf", Kind: inventory.KindKubeconfigEmbedded, User: "kubernetes-admin",
				SerialDecimal: "5", SubjectParts: inventory.NameParts{CN: "kubernetes-admin", O: "kubeadm:cluster-admins"}, IssuerParts: kube,
				NotAfter: now.Add(-time.Hour), RenewalPath: inventory.RenewLocalCA},
			{Name: "/srv/extra/bad\xffname.crt", Path: "/srv/extra/bad\xffname.crt", SerialDecimal: "6", NotAfter: now},
		},
		ClusterCAs: []*inventory.Certificate{{Name: "admin.conf#cluster/kubernetes", Path: "/etc/kubernetes/admin.conf",
			Kind: inventory.KindKubeconfigEmbedded, Kubeconfig: "/etc/kubernetes/admin.conf", Cluster: "kubernetes",
			SerialDecimal: "7", SubjectParts: *kube, IssuerParts: kube, NotAfter: now.Add(time.Hour), RenewalPath: inventory.RenewNone}},
		Problems: []inventory.Problem{{Path: "/srv/extra/broken.crt", Error: "truncated"}},
	}
	m.Scanned(rep, time.Millisecond)
	m.Scanned(rep, time.Millisecond)
	m.Served([]api.ComponentStatus{{Name: "kube-apiserver", Served: []api.ServedStatus{{Address: "127.0.0.1:6443", Certificate: "apiserver", State: "stale"}}}})
	got := scrapeParsed(t, m)

	find := func(fam, name string) map[string]string {
		for _, s := range got[fam] {
			if s.labels["name"] == name {
				return s.labels
			}
		}
		t.Fatalf("no %s series for %q", fam, name)
		return nil
	}
	wantLabels := map[string]map[string]string{
		"/srv/extra/web.crt": {"name": "/srv/extra/web.crt", "filepath": "/srv/extra/web.crt", "filename": "web.crt",
			"serial_number": "1234567890123456789", "issuer_CN": "kubernetes", "renewal_path": "external",
			"subject_C": "JP", "subject_ST": "Tokyo", "subject_L": "Chiyoda", "subject_O": "Acme, Inc.", "subject_OU": "Platform", "subject_CN": "web, east"},
		"admin.conf": {"name": "admin.conf", "filepath": "/etc/kubernetes/admin.conf", "filename": "admin.conf", "embedded_kind": "user",
			"embedded_key": "kubernetes-admin", "serial_number": "5", "issuer_CN": "kubernetes", "subject_CN": "kubernetes-admin",
			"subject_O": "kubeadm:cluster-admins", "renewal_path": "local-ca"},
		"admin.conf#cluster/kubernetes": {"name": "admin.conf#cluster/kubernetes", "filepath": "/etc/kubernetes/admin.conf", "filename": "admin.conf",
			"embedded_kind": "cluster", "embedded_key": "kubernetes", "serial_number": "7", "issuer_CN": "kubernetes", "subject_CN": "kubernetes",
			"renewal_path": "none"},
		"/srv/extra/bad\uFFFDname.crt": {"name": "/srv/extra/bad\uFFFDname.crt", "filepath": "/srv/extra/bad\uFFFDname.crt",
			"filename": "bad\uFFFDname.crt", "serial_number": "6"},
	}
	for name, want := range wantLabels {
		for _, fam := range []string{"x509_cert_not_after", "x509_cert_not_before", "x509_cert_expired"} {
			if l := find(fam, name); !maps.Equal(l, want) {
				t.Errorf("%s %s labels:\n got %v\nwant %v", fam, name, l, want)
			}
		}
	}
	one := func(fam string, labels map[string]string, want float64) {
		t.Helper()
		for _, s := range got[fam] {
			if maps.Equal(s.labels, labels) {
				if s.value != want {
					t.Errorf("%s%v = %v, want %v", fam, labels, s.value, want)
				}
				return
			}
		}
		t.Errorf("no %s%v in %v", fam, labels, got[fam])
	}
	src := map[string]string{"source_kind": "file", "source_name": "certagent"}
	one("x509_read_errors", map[string]string{}, 1)
	one("x509_source_errors_total", map[string]string{"reason": "read_failed", "source_kind": "file", "source_name": "certagent"}, 2)
	one("x509_source_up", src, 1)
	one("x509_exporter_build_info", map[string]string{"version": "1.2.3", "git_commit": got["x509_exporter_build_info"][0].labels["git_commit"],
		"built": got["x509_exporter_build_info"][0].labels["built"], "go_runtime": runtime.Version(), "go_os": runtime.GOOS, "go_arch": runtime.GOARCH}, 1)
	if len(got["certagent_build_info"]) != 1 || got["certagent_build_info"][0].labels["version"] != "1.2.3" {
		t.Errorf("certagent_build_info: %v", got["certagent_build_info"])
	}
	ep := map[string]string{"component": "kube-apiserver", "address": "127.0.0.1:6443", "name": "apiserver"}
	one("certagent_served_certificate_mismatch", ep, 2)
	for _, st := range []string{"match", "mismatch", "stale", "not-serving"} {
		l := maps.Clone(ep)
		l["state"] = st
		want := 0.0
		if st == "stale" {
			want = 1
		}
		one("certagent_served_certificate_state", l, want)
	}
}

// TestMetricsBeforeFirstScan: no certificate series, the source not up.
func TestMetricsBeforeFirstScan(t *testing.T) {
	got := scrapeParsed(t, New())
	if len(got["x509_cert_not_after"]) != 0 || len(got["x509_source_up"]) != 1 || got["x509_source_up"][0].value != 0 {
		t.Errorf("before the first scan: %v %v", got["x509_cert_not_after"], got["x509_source_up"])
	}
}
