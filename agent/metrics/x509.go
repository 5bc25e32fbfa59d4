package metrics

import (
	"path"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/certagent/certagent/agent/inventory"
)

// certLabelNames are the labels of the x509_cert_* series: those of
// x509-certificate-exporter that a node has values for, plus certagent's
// name and renewal_path. A label whose value is empty is left out of the
// series, which Prometheus treats exactly like an empty value.
var certLabelNames = [...]string{"name", "filepath", "filename", "embedded_kind", "embedded_key", "serial_number",
	"issuer_C", "issuer_ST", "issuer_L", "issuer_O", "issuer_OU", "issuer_CN",
	"subject_C", "subject_ST", "subject_L", "subject_O", "subject_OU", "subject_CN", "renewal_path"}

const nCertLabels = len(certLabelNames)

// The three per-certificate families.
const (
	famNotAfter = iota
	famNotBefore
	famExpired
	nFams
)

var famNames = [nFams][2]string{
	{"x509_cert_not_after", "Expiration of the certificate, seconds since the epoch."},
	{"x509_cert_not_before", "Start of the certificate's validity, seconds since the epoch."},
	{"x509_cert_expired", "1 if the certificate has expired."},
}

// sourceLabels name certagent's one source in the exporter's v4 series.
var sourceLabels = prometheus.Labels{"source_kind": "file", "source_name": "certagent"}

var descSourceUp = prometheus.NewDesc("x509_source_up", "1 once the first scan of the node is done.", nil, sourceLabels)

// certCollector emits the x509_cert_* series of the latest scan. It is an
// unchecked collector (Describe sends nothing) because each series carries
// only its non-empty labels; descs are made once per label set.
type certCollector struct {
	m *Metrics

	mu    sync.Mutex // guards descs
	descs map[uint32]*[nFams]*prometheus.Desc
}

// Describe sends nothing: the collector is unchecked.
func (c *certCollector) Describe(chan<- *prometheus.Desc) {}

// Collect emits three series per certificate, authority and cluster CA.
func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	rep := c.m.report()
	if rep == nil {
		ch <- prometheus.MustNewConstMetric(descSourceUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descSourceUp, prometheus.GaugeValue, 1)
	now := time.Now()
	vals := make([]string, 0, nCertLabels)
	for _, list := range [][]*inventory.Certificate{rep.Certificates, rep.Authorities, rep.ClusterCAs} {
		for _, cert := range list {
			var all [nCertLabels]string
			certLabelValues(cert, &all)
			mask := uint32(0)
			vals = vals[:0]
			for i, v := range all {
				if v != "" {
					mask |= 1 << i
					vals = append(vals, v)
				}
			}
			d := c.desc(mask)
			expired := 0.0
			if now.After(cert.NotAfter) {
				expired = 1
			}
			c.send(ch, d[famNotAfter], float64(cert.NotAfter.Unix()), vals)
			c.send(ch, d[famNotBefore], float64(cert.NotBefore.Unix()), vals)
			c.send(ch, d[famExpired], expired, vals)
		}
	}
}

func (c *certCollector) send(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, vals []string) {
	m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, vals...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err) // reported by the scrape, never a panic
	}
	ch <- m
}

// desc returns the descs of the three families for one set of labels.
func (c *certCollector) desc(mask uint32) *[nFams]*prometheus.Desc {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.descs[mask]; ok {
		return d
	}
	var names []string
	for i, n := range certLabelNames {
		if mask&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	d := new([nFams]*prometheus.Desc)
	for f := range d {
		d[f] = prometheus.NewDesc(famNames[f][0], famNames[f][1], names, nil)
	}
	if c.descs == nil {
		c.descs = map[uint32]*[nFams]*prometheus.Desc{}
	}
	c.descs[mask] = d
	return d
}

// certLabelValues fills the values of certLabelNames for one certificate.
// Values are valid UTF-8 (a file name need not be).
func certLabelValues(c *inventory.Certificate, out *[nCertLabels]string) {
	kind, key := "", ""
	switch {
	case c.Cluster != "":
		kind, key = "cluster", c.Cluster
	case c.Kind == inventory.KindKubeconfigEmbedded:
		kind, key = "user", c.User
	}
	iss := inventory.NameParts{}
	if c.IssuerParts != nil {
		iss = *c.IssuerParts
	}
	sub := c.SubjectParts
	*out = [nCertLabels]string{c.Name, c.Path, path.Base(c.Path), kind, key, c.SerialDecimal,
		iss.C, iss.ST, iss.L, iss.O, iss.OU, iss.CN,
		sub.C, sub.ST, sub.L, sub.O, sub.OU, sub.CN, string(c.RenewalPath)}
	for i, v := range out {
		if !utf8.ValidString(v) {
			out[i] = strings.ToValidUTF8(v, "\uFFFD")
		}
	}
}

// buildInfo returns the constant build-info series: certagent's own and
// the exporter's (its labels, certagent's version).
func buildInfo(version string) []prometheus.Collector {
	revision, built := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				built = s.Value
			}
		}
	}
	own := prometheus.NewGauge(prometheus.GaugeOpts{Name: "certagent_build_info", Help: "Constant 1, with certagent's build in labels.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version(),
			"goos": runtime.GOOS, "goarch": runtime.GOARCH}})
	compat := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x509_exporter_build_info", Help: "Constant 1, with build labels (x509-certificate-exporter's names, certagent's build).",
		ConstLabels: prometheus.Labels{"version": version, "git_commit": revision, "built": built, "go_runtime": runtime.Version(),
			"go_os": runtime.GOOS, "go_arch": runtime.GOARCH}})
	own.Set(1)
	compat.Set(1)
	return []prometheus.Collector{own, compat}
}
