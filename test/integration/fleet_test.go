package integration

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/agent/schedule"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

type countRT struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (c countRT) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

// BenchmarkFleet simulates N nodes (CERTAGENT_FLEET_N, default 1000) whose
// kubelet client certificates were all issued at the same instant with a
// lifetime scaled down to CERTAGENT_FLEET_LIFETIME (default 10m: the run takes about 9 minutes). Each node
// renews the way certagent does: at its jittered 70-90 % point (seeded by
// its serial and name), a CSR with its own credential through the one real
// kube-apiserver, auto-approved and signed by the real controller manager.
// It reports the spread of CSR creation, the peak creations per second
// against the mean rate over the window, the success rate and the API
// requests per renewal.
func BenchmarkFleet(b *testing.B) {
	c := sharedCluster(b)
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("CERTAGENT_FLEET_N")); err == nil && v > 0 {
		n = v
	}
	life := 10 * time.Minute
	if v, err := time.ParseDuration(os.Getenv("CERTAGENT_FLEET_LIFETIME")); err == nil {
		life = v
	}
	ca := clusterCA(b, c)
	caPEM, _ := os.ReadFile(filepath.Join(c.Root, "etc/kubernetes/pki/ca.crt"))
	for iter := 0; iter < b.N; iter++ {
		t0 := time.Now()
		type result struct {
			created  time.Time
			ok       bool
			requests int64
			err      error
		}
		results := make([]result, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			node := fmt.Sprintf("fleet-%d-%04d", iter, i)
			cert, key, err := ca.Issue(pkitest.Spec{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}, NotBefore: t0, NotAfter: t0.Add(life)})
			if err != nil {
				b.Fatal(err)
			}
			counter := &atomic.Int64{}
			cfg := &rest.Config{Host: c.URL, TLSClientConfig: rest.TLSClientConfig{ServerName: "kubernetes", CAData: caPEM,
				CertData: pkitest.CertPEM(cert), KeyData: pkitest.KeyPEM(key)}, Timeout: 60 * time.Second}
			cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return countRT{rt, counter} })
			client, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				b.Fatal(err)
			}
			deadline := schedule.Deadline(cert.NotBefore, cert.NotAfter, schedule.Policy{}, schedule.Source(cert.SerialNumber.Text(16), node))
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				time.Sleep(time.Until(deadline))
				ctx := context.Background()
				k, _ := rotate.NewKey(nil, "ecdsa-p256")
				results[i].created = time.Now()
				p, err := rotate.RequestCSR(ctx, client.CertificatesV1().CertificateSigningRequests(), rotate.KubeletClientSpec(node, false), k)
				if err == nil {
					_, err = rotate.WaitCSR(ctx, client.CertificatesV1().CertificateSigningRequests(), p, 90*time.Second)
				}
				results[i].ok, results[i].err, results[i].requests = err == nil, err, counter.Load()
			}(i)
		}
		wg.Wait()
		var created []float64
		okCount := 0
		var reqs []int64
		var firstErr error
		for _, r := range results {
			created = append(created, r.created.Sub(t0).Seconds())
			reqs = append(reqs, r.requests)
			if r.ok {
				okCount++
			} else if firstErr == nil {
				firstErr = r.err
			}
		}
		sort.Float64s(created)
		sort.Slice(reqs, func(i, j int) bool { return reqs[i] < reqs[j] })
		window := created[len(created)-1] - created[0]
		buckets := map[int]int{}
		peak := 0
		for _, s := range created {
			buckets[int(s)]++
			if buckets[int(s)] > peak {
				peak = buckets[int(s)]
			}
		}
		mean := float64(n) / math.Max(window, 1)
		var sum, sq float64
		for _, s := range created {
			sum += s
		}
		avg := sum / float64(n)
		for _, s := range created {
			sq += (s - avg) * (s - avg)
		}
		var total int64
		for _, r := range reqs {
			total += r
		}
		b.ReportMetric(float64(n), "nodes")
		b.ReportMetric(100*float64(okCount)/float64(n), "renewed-%")
		b.ReportMetric(window, "window-s")
		b.ReportMetric(math.Sqrt(sq/float64(n)), "stddev-s")
		b.ReportMetric(float64(peak), "peak-CSR/s")
		b.ReportMetric(mean, "mean-CSR/s")
		b.ReportMetric(float64(peak)/mean, "peak/mean")
		b.ReportMetric(float64(total)/float64(n), "requests/renewal")
		b.ReportMetric(float64(reqs[len(reqs)-1]), "max-requests")
		if firstErr != nil {
			b.Logf("first failure: %v", firstErr)
		}
	}
}
