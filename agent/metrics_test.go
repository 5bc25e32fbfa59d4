package agent

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/inventory"
)

// BenchmarkMetricsScrape10k: one /metrics scrape with 10,000 certificates.
func BenchmarkMetricsScrape10k(b *testing.B) {
	m := NewMetrics()
	rep := &inventory.Report{}
	now := time.Now()
	for i := 0; i < 10000; i++ {
		rep.Certificates = append(rep.Certificates, &inventory.Certificate{
			Name: fmt.Sprintf("/opt/corpus/cert-%05d.pem", i), Path: fmt.Sprintf("/opt/corpus/cert-%05d.pem", i),
			Subject: fmt.Sprintf("CN=svc-%05d.example.internal", i), Issuer: "CN=kubernetes", Serial: fmt.Sprintf("%X", i*7919),
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Duration(i) * time.Hour), RenewalPath: inventory.RenewLocalCA,
		})
	}
	m.scanned(rep, time.Millisecond)
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
