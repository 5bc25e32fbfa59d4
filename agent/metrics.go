package agent

import (
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/certagent/certagent/agent/inventory"
)

// Metrics exposes the agent in Prometheus format. The per-certificate
// series use the names and labels of the widely used
// x509-certificate-exporter (x509_cert_not_after, ..., filepath,
// subject_CN, issuer_CN), so its dashboards and alerts keep working. They
// are built from the latest scan at every scrape, keyed by the path
// certagent watches (the kubelet's -current.pem symlink, not the file it
// points to), so a rotation never leaves a stale series behind.
type Metrics struct {
	reg *prometheus.Registry

	renewals, failures *prometheus.CounterVec
	lastRenewal        *prometheus.GaugeVec
	mismatch           *prometheus.GaugeVec
	csrWait            prometheus.Histogram
	scanDuration       prometheus.Histogram

	mu     sync.Mutex // guards latest
	latest *inventory.Report
}

var certLabels = []string{"name", "filepath", "filename", "subject_CN", "subject_O", "issuer_CN", "serial_number", "renewal_path"}

var (
	descNotAfter  = prometheus.NewDesc("x509_cert_not_after", "Expiration of the certificate, seconds since the epoch.", certLabels, nil)
	descNotBefore = prometheus.NewDesc("x509_cert_not_before", "Start of the certificate's validity, seconds since the epoch.", certLabels, nil)
	descExpired   = prometheus.NewDesc("x509_cert_expired", "1 if the certificate has expired.", certLabels, nil)
	descProblems  = prometheus.NewDesc("certagent_problems", "Files certagent could not read or understand.", nil, nil)
)

// NewMetrics registers certagent's metrics and Go's process metrics.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.renewals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "certagent_renewals_total", Help: "Certificates renewed, by method."}, []string{"method"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "certagent_renewal_failures_total", Help: "Failed renewal attempts, by method."}, []string{"method"})
	m.lastRenewal = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "certagent_last_renewal_timestamp_seconds", Help: "When each certificate was last renewed successfully."}, []string{"name"})
	m.mismatch = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "certagent_served_certificate_mismatch", Help: "1 when an endpoint serves another certificate than the one on disk (2 once stale)."}, []string{"component", "address", "name"})
	m.csrWait = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "certagent_csr_wait_seconds", Help: "Time from creating a CSR to the certificate on disk.", Buckets: prometheus.ExponentialBuckets(0.05, 3, 10)})
	m.scanDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "certagent_scan_duration_seconds", Help: "Duration of a full scan of the node.", Buckets: prometheus.ExponentialBuckets(0.001, 3, 10)})
	m.reg.MustRegister(m.renewals, m.failures, m.lastRenewal, m.mismatch, m.csrWait, m.scanDuration, m,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Describe implements prometheus.Collector for the per-certificate series.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descNotAfter
	ch <- descNotBefore
	ch <- descExpired
	ch <- descProblems
}

// Collect emits one series per certificate of the latest scan.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	rep := m.latest
	m.mu.Unlock()
	if rep == nil {
		return
	}
	now := time.Now()
	for _, list := range [][]*inventory.Certificate{rep.Certificates, rep.Authorities} {
		for _, c := range list {
			lv := []string{c.Name, c.Path, path.Base(c.Path), rdn(c.Subject, "CN"), rdn(c.Subject, "O"), rdn(c.Issuer, "CN"), c.Serial, string(c.RenewalPath)}
			ch <- prometheus.MustNewConstMetric(descNotAfter, prometheus.GaugeValue, float64(c.NotAfter.Unix()), lv...)
			ch <- prometheus.MustNewConstMetric(descNotBefore, prometheus.GaugeValue, float64(c.NotBefore.Unix()), lv...)
			expired := 0.0
			if now.After(c.NotAfter) {
				expired = 1
			}
			ch <- prometheus.MustNewConstMetric(descExpired, prometheus.GaugeValue, expired, lv...)
		}
	}
	ch <- prometheus.MustNewConstMetric(descProblems, prometheus.GaugeValue, float64(len(rep.Problems)))
}

// rdn picks one attribute out of a distinguished name as Go prints it.
func rdn(dn, attr string) string {
	for _, part := range strings.Split(dn, ",") {
		if v, ok := strings.CutPrefix(part, attr+"="); ok {
			return v
		}
	}
	return ""
}

func (m *Metrics) scanned(rep *inventory.Report, took time.Duration) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.latest = rep
	m.mu.Unlock()
	m.scanDuration.Observe(took.Seconds())
}

func (m *Metrics) renewed(name, method string, at time.Time) {
	if m != nil {
		m.renewals.WithLabelValues(method).Inc()
		m.lastRenewal.WithLabelValues(name).Set(float64(at.Unix()))
	}
}

func (m *Metrics) failed(method string) {
	if m != nil {
		m.failures.WithLabelValues(method).Inc()
	}
}

func (m *Metrics) served(comps []ComponentStatus) {
	if m == nil {
		return
	}
	m.mismatch.Reset()
	for _, c := range comps {
		for _, s := range c.Served {
			v := map[string]float64{"match": 0, "mismatch": 1, "stale": 2}[s.State]
			if s.State != "not-serving" {
				m.mismatch.WithLabelValues(c.Name, s.Address, s.Certificate).Set(v)
			}
		}
	}
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ServeMetrics listens on addr and serves /metrics until the server is
// closed.
func ServeMetrics(addr string, m *Metrics) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 30 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}
