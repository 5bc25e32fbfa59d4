package agent

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate/pki"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// passNotes signals READY= and every STATUS= the loop sends, which it
// does at the end of each pass, right after the status is published.
type passNotes struct{ passes chan struct{} }

func (n passNotes) Ready(s string) error { return n.Status(s) }
func (n passNotes) Status(string) error {
	select {
	case n.passes <- struct{}{}:
	default:
	}
	return nil
}
func (n passNotes) Watchdog() error { return nil }
func (n passNotes) Stopping() error { return nil }

// BenchmarkPassOneChanged10k: the daemon, on a kubeadm node with a
// configured directory of 10,000 ECDSA leaves and their CA, sees one of
// them replaced (written aside, renamed over, as tools do). Per change:
// cpu-ms/op, the process's CPU time (every thread, user and system) from
// the rename to the new serial in the published status;
// status-cpu-ms/op, the encoding of the status document once asked for
// and its sending over the socket (as `certagent status` asks); gc-cpu-ms/op, the garbage collector's
// part of both; patched/op, the passes that patched the previous scan's
// report (the others scanned what changed in full); and over all changes
// the latency from
// the rename to the encoded document holding the new serial, p50-ms and
// p99-ms. Run it with -benchtime=100x for the p99 of 100 changes.
//
// The daemon's clock moves three seconds at each change (steppedClock),
// as between the changes of a node: every certificate's residual seconds
// and the time-dependent decisions move with it, as they do there; the
// changes themselves follow each other as fast as the daemon takes them.
func BenchmarkPassOneChanged10k(b *testing.B) {
	now := time.Now()
	dir, ca := nodeWithCorpus(b, "/opt/corpus", 10000)
	corpus := filepath.Join(dir, "opt/corpus")
	if err := os.WriteFile(filepath.Join(corpus, "ca.crt"), pkitest.CertPEM(ca.Cert), 0o644); err != nil {
		b.Fatal(err)
	}
	leaves := make([][]byte, 16)
	serials := make([]string, len(leaves))
	for i := range leaves {
		c, _, err := ca.Issue(pkitest.Spec{CommonName: "svc-05000.example.internal", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(300 * 24 * time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
		leaves[i], serials[i] = pkitest.CertPEM(c), strings.ToUpper(c.SerialNumber.Text(16))
	}
	// Files changed within the cache's racy window are read again: let
	// the corpus settle, as a node's files have.
	time.Sleep(2100 * time.Millisecond)

	root, _ := pki.NewRoot(dir)
	notes := passNotes{passes: make(chan struct{}, 1)}
	clk := &steppedClock{}
	a, err := New(Options{Root: root, Clock: clk, Log: quietLogger(), Notifier: notes, Version: "bench",
		LoadConfig: func() (*config.Config, error) {
			return config.Parse([]byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nagent: {nodeName: node1}\npaths: [/opt/corpus]\n"))
		},
		StateDir: filepath.Join(dir, "var/lib/certagent"), Socket: filepath.Join(dir, "run/certagent.sock"),
		MemoryLimit: 24 << 20}) // as `certagent run` sets it
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(24 << 20))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	target := "/opt/corpus/cert-05000.pem"
	for a.serialOf(target) == "" {
		<-notes.passes
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", a.opts.Socket)
	}}}
	var body bytes.Buffer // the client's, kept: its reading is not the daemon's cost
	get(b, hc, &body)
	var lat []time.Duration
	var encode time.Duration // CPU spent encoding the status document on request
	cpu0, gc0, patches0 := cpuTime(), gcCPU(), a.cache.Stats().Patches
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i % len(leaves)
		clk.step(3 * time.Second)
		tmp := filepath.Join(corpus, ".cert-05000.tmp")
		if err := os.WriteFile(tmp, leaves[j], 0o644); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := os.Rename(tmp, filepath.Join(dir, target)); err != nil {
			b.Fatal(err)
		}
		for a.serialOf(target) != serials[j] {
			select {
			case <-notes.passes:
			case <-time.After(30 * time.Second):
				b.Fatalf("change %d not in the status after 30 s", i)
			}
		}
		// What `certagent status` gets: the document, encoded on request,
		// over the socket.
		c := cpuTime()
		if !bytes.Contains(get(b, hc, &body), []byte(`"serial": "`+serials[j]+`"`)) {
			b.Fatalf("change %d: the status document lacks serial %s", i, serials[j])
		}
		lat = append(lat, time.Since(start))
		encode += cpuTime() - c
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0-encode).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(encode.Microseconds())/1000/float64(b.N), "status-cpu-ms/op")
	b.ReportMetric(float64((gcCPU()-gc0).Microseconds())/1000/float64(b.N), "gc-cpu-ms/op")
	b.ReportMetric(float64(a.cache.Stats().Patches-patches0)/float64(b.N), "patched/op")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[(len(lat)*99-1)/100].Microseconds())/1000, "p99-ms")
}

// steppedClock is the real clock moved forward by what step added: the
// daemon sees seconds pass between changes made milliseconds apart.
// Timers run in real time.
type steppedClock struct {
	clock.RealClock
	offset atomic.Int64
}

// step moves the clock forward by d.
func (c *steppedClock) step(d time.Duration) { c.offset.Add(int64(d)) }

// Now is the real time plus the steps so far.
func (c *steppedClock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Since is Now minus t.
func (c *steppedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// get reads the status document from the socket into body.
func get(b *testing.B, hc *http.Client, body *bytes.Buffer) []byte {
	resp, err := hc.Get("http://certagent/v1/status")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body.Reset()
	if _, err := body.ReadFrom(resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("status: HTTP %d, %v", resp.StatusCode, err)
	}
	return body.Bytes()
}

// serialOf is the serial the published status shows for a certificate.
func (a *Agent) serialOf(name string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status == nil {
		return ""
	}
	for _, c := range a.status.Certificates {
		if c.Name == name {
			return c.Serial
		}
	}
	return ""
}

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// gcCPU is the CPU time the garbage collector took so far (its share of
// cpu-ms/op and status-cpu-ms/op, an estimate of the runtime's).
func gcCPU() time.Duration {
	s := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	metrics.Read(s)
	return time.Duration(s[0].Value.Float64() * float64(time.Second))
}

// cpuTime is the process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
