// Package metrics serves certagent's Prometheus metrics: the per-certificate
// series under x509-certificate-exporter's names, and the agent's renewals,
// failures, served-certificate states, CSR waits and scan durations, which
// the loop reports through its Recorder interface.
package metrics

import (
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
)

// Metrics exposes the agent in Prometheus format. The per-certificate
// series use the names and labels of the widely used
// x509-certificate-exporter (x509_cert_not_after, ..., filepath,
// subject_CN, issuer_CN, serial_number in decimal), so its dashboards and
// alerts keep working; so do its read-error series (x509_read_errors of
// its v3 line, x509_source_errors_total of v4). They are built from the
// latest scan at every scrape, keyed by the path certagent watches (the
// kubelet's -current.pem symlink, not the file it points to), so a
// rotation never leaves a stale series behind.
type Metrics struct {
	reg *prometheus.Registry

	renewals, failures *prometheus.CounterVec
	lastRenewal        *prometheus.GaugeVec
	mismatch           *prometheus.GaugeVec
	servedState        *prometheus.GaugeVec
	sourceErrors       *prometheus.CounterVec
	csrWait            prometheus.Histogram
	scanDuration       prometheus.Histogram
	buildOnce          sync.Once

	mu     sync.Mutex // guards latest
	latest *inventory.Report
}

var (
	descProblems   = prometheus.NewDesc("certagent_problems", "Files certagent could not read or understand.", nil, nil)
	descReadErrors = prometheus.NewDesc("x509_read_errors", "Files that could not be read or parsed in the latest scan (x509-certificate-exporter v3's name).", nil, nil)
)

// servedStates are the values of certagent_served_certificate_state's
// state label.
var servedStates = []string{"match", "mismatch", "stale", "not-serving"}

// New registers certagent's metrics and Go's process metrics.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.renewals = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "certagent_renewals_total", Help: "Certificates renewed, by method."}, []string{"method"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "certagent_renewal_failures_total", Help: "Failed renewal attempts, by method."}, []string{"method"})
	m.lastRenewal = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "certagent_last_renewal_timestamp_seconds", Help: "When each certificate was last renewed successfully."}, []string{"name"})
	m.mismatch = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "certagent_served_certificate_mismatch", Help: "1 when an endpoint serves another certificate than the one on disk (2 once stale); see certagent_served_certificate_state."}, []string{"component", "address", "name"})
	m.servedState = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "certagent_served_certificate_state", Help: "1 for the state (match, mismatch, stale, not-serving) of what an endpoint serves compared with the disk, 0 for the others."}, []string{"component", "address", "name", "state"})
	m.sourceErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x509_source_errors_total", Help: "Files that could not be read or parsed, summed over scans (x509-certificate-exporter v4's name)."}, []string{"reason", "source_kind", "source_name"})
	m.sourceErrors.With(prometheus.Labels{"reason": "read_failed", "source_kind": "file", "source_name": "certagent"})
	m.csrWait = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "certagent_csr_wait_seconds", Help: "Time from creating a CSR to the certificate on disk.", Buckets: prometheus.ExponentialBuckets(0.05, 3, 10)})
	m.scanDuration = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "certagent_scan_duration_seconds", Help: "Duration of a full scan of the node.", Buckets: prometheus.ExponentialBuckets(0.001, 3, 10)})
	m.reg.MustRegister(m.renewals, m.failures, m.lastRenewal, m.mismatch, m.servedState, m.sourceErrors, m.csrWait, m.scanDuration, m,
		&certCollector{m: m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetVersion adds the build-info series; the first call wins.
func (m *Metrics) SetVersion(version string) {
	if m == nil {
		return
	}
	m.buildOnce.Do(func() { m.reg.MustRegister(buildInfo(version)...) })
}

// Describe implements prometheus.Collector for the scan's summary series.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descProblems
	ch <- descReadErrors
}

// Collect emits the number of problems of the latest scan.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	rep := m.report()
	if rep == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(descProblems, prometheus.GaugeValue, float64(len(rep.Problems)))
	ch <- prometheus.MustNewConstMetric(descReadErrors, prometheus.GaugeValue, float64(len(rep.Problems)))
}

func (m *Metrics) report() *inventory.Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.latest
}

// Scanned keeps the latest scan for the per-certificate series and times it.
func (m *Metrics) Scanned(rep *inventory.Report, took time.Duration) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.latest = rep
	m.mu.Unlock()
	m.scanDuration.Observe(took.Seconds())
	m.sourceErrors.With(prometheus.Labels{"reason": "read_failed", "source_kind": "file", "source_name": "certagent"}).Add(float64(len(rep.Problems)))
}

// Renewed counts a renewal by method and stamps the certificate's last one.
func (m *Metrics) Renewed(name, method string, at time.Time) {
	if m != nil {
		m.renewals.WithLabelValues(method).Inc()
		m.lastRenewal.WithLabelValues(name).Set(float64(at.Unix()))
	}
}

// Failed counts a failed attempt by method.
func (m *Metrics) Failed(method string) {
	if m != nil {
		m.failures.WithLabelValues(method).Inc()
	}
}

// CSRWaited observes the time from a CSR's creation to its certificate on
// disk.
func (m *Metrics) CSRWaited(d time.Duration) {
	if m != nil {
		m.csrWait.Observe(d.Seconds())
	}
}

// Served sets the served-certificate series from the latest probes.
func (m *Metrics) Served(comps []api.ComponentStatus) {
	if m == nil {
		return
	}
	m.mismatch.Reset()
	m.servedState.Reset()
	for _, c := range comps {
		for _, s := range c.Served {
			v := map[string]float64{"match": 0, "mismatch": 1, "stale": 2}[s.State]
			if s.State != "not-serving" {
				m.mismatch.WithLabelValues(c.Name, s.Address, s.Certificate).Set(v)
			}
			for _, st := range servedStates {
				v := 0.0
				if st == s.State {
					v = 1
				}
				m.servedState.WithLabelValues(c.Name, s.Address, s.Certificate, st).Set(v)
			}
		}
	}
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	// A series that cannot be made (two certificates with one label set)
	// is left out and the rest served.
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Serve listens on addr and serves /metrics until the server is
// closed.
func Serve(addr string, m *Metrics) (*http.Server, error) {
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
