package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// measure runs a command n times and returns the median wall time and the
// largest peak RSS (kB) of the runs.
func measure(b *testing.B, n int, name string, args ...string) (time.Duration, int64) {
	b.Helper()
	var walls []time.Duration
	var rss int64
	for i := 0; i < n; i++ {
		cmd := exec.Command(name, args...)
		start := time.Now()
		if err := cmd.Run(); err != nil {
			if _, ok := err.(*exec.ExitError); !ok {
				b.Fatalf("%s: %v", name, err)
			}
		}
		walls = append(walls, time.Since(start))
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > rss {
			rss = ru.Maxrss
		}
	}
	sort.Slice(walls, func(i, j int) bool { return walls[i] < walls[j] })
	return walls[len(walls)/2], rss
}

// BenchmarkCheckVsKubeadm: whole-process `certagent check` next to
// `kubeadm certs check-expiration` on the same real kubeadm PKI, median of
// 15 runs each.
func BenchmarkCheckVsKubeadm(b *testing.B) {
	root := kubeadmPKI(b, "8760h")
	kubeadm := requireKube(b, "kubeadm")
	b.Run("certagent", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			med, rss := measure(b, 15, certagentBin, "check", "--root", root, "-o", "json")
			b.ReportMetric(med.Seconds(), "median-s")
			b.ReportMetric(float64(rss)/1024, "peak-RSS-MB")
		}
	})
	b.Run("kubeadm", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			med, rss := measure(b, 15, kubeadm, "certs", "check-expiration", "--config", "/etc/kubernetes/kubeadm.yaml", "--rootfs", root, "-o", "json")
			b.ReportMetric(med.Seconds(), "median-s")
			b.ReportMetric(float64(rss)/1024, "peak-RSS-MB")
		}
	})
}

// BenchmarkCheck10k: whole-process `certagent check -o json` with a
// configured directory of 10,000 PEM certificates, median of 7 runs and the
// peak RSS, each next to the floor: a program that reads and parses the
// same files on one thread (testdata/floor), run in turn with certagent so
// that both see the same machine. "own-ca": signed by the node's RSA-2048
// CA (kubeadm's default); "foreign-ca": signed by a CA that is not on the
// node, so only read and parse remain (what a metrics exporter does);
// "ecdsa-ca-in-dir": signed by an ECDSA P-256 CA whose certificate is in
// the directory, as monitored directories often are; "ecdsa-no-ca": the
// same leaves without it.
func BenchmarkCheck10k(b *testing.B) {
	root := b.TempDir()
	n, err := (pkitest.Layout{KeyType: pkitest.RSA}).Write(root)
	if err != nil {
		b.Fatal(err)
	}
	foreign, err := pkitest.NewCA("foreign", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), pkitest.RSA)
	if err != nil {
		b.Fatal(err)
	}
	ecdsa, err := pkitest.NewCA("corpus-ca", time.Now().Add(-time.Hour), time.Now().Add(10*365*24*time.Hour), pkitest.ECDSA)
	if err != nil {
		b.Fatal(err)
	}
	for dir, ca := range map[string]*pkitest.CA{"own-ca": n.CA, "foreign-ca": foreign, "ecdsa-ca-in-dir": ecdsa, "ecdsa-no-ca": ecdsa} {
		if err := pkitest.WriteCorpus(filepath.Join(root, "opt", dir), ca, 10000, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "opt/ecdsa-ca-in-dir/ca.crt"), pkitest.CertPEM(ecdsa.Cert), 0o644); err != nil {
		b.Fatal(err)
	}
	floor := filepath.Join(b.TempDir(), "floor")
	if out, err := exec.Command("go", "build", "-o", floor, "./testdata/floor").CombinedOutput(); err != nil {
		b.Fatalf("build the floor: %v\n%s", err, out)
	}
	for _, dir := range []string{"own-ca", "foreign-ca", "ecdsa-ca-in-dir", "ecdsa-no-ca"} {
		b.Run(dir, func(b *testing.B) {
			cfg := filepath.Join(b.TempDir(), "config.yaml")
			body := "apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\npaths: [/opt/" + dir + "]\n"
			if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
				b.Fatal(err)
			}
			for i := 0; i < b.N; i++ {
				var walls, floors []time.Duration
				var rss, floorRSS int64
				for j := 0; j < 7; j++ { // in turn, so that both see the same machine
					w, r := measure(b, 1, certagentBin, "check", "--root", root, "--config", cfg, "-o", "json")
					fw, fr := measure(b, 1, floor, filepath.Join(root, "opt", dir))
					walls, floors = append(walls, w), append(floors, fw)
					rss, floorRSS = max(rss, r), max(floorRSS, fr)
				}
				med, fmed := median(walls), median(floors)
				b.ReportMetric(med.Seconds(), "median-s")
				b.ReportMetric(float64(rss)/1024, "peak-RSS-MB")
				b.ReportMetric(fmed.Seconds(), "floor-median-s")
				b.ReportMetric(float64(floorRSS)/1024, "floor-peak-RSS-MB")
				b.ReportMetric(med.Seconds()/fmed.Seconds(), "x-floor")
			}
		})
	}
}

func median(l []time.Duration) time.Duration {
	l = slices.Clone(l)
	slices.Sort(l)
	return l[len(l)/2]
}

// BenchmarkRenewVsKubeadm: whole-process `certagent renew` of the 11
// certificates `kubeadm certs renew all` renews, next to kubeadm, on fresh
// copies of the same real kubeadm PKI, median of 11 runs each, for RSA-2048
// and ECDSA-P256. ("all" also renews kubelet.conf, which kubeadm leaves.)
func BenchmarkRenewVsKubeadm(b *testing.B) {
	kubeadm := requireKube(b, "kubeadm")
	for _, alg := range []string{"RSA-2048", "ECDSA-P256"} {
		orig := kubeadmPKIWith(b, "8760h", alg)
		copies := func(n int) []string {
			var out []string
			for i := 0; i < n; i++ {
				d := b.TempDir()
				copyTree(b, orig, d)
				out = append(out, d)
			}
			return out
		}
		medianOver := func(roots []string, argv func(root string) []string) time.Duration {
			var walls []time.Duration
			for _, r := range roots {
				a := argv(r)
				med, _ := measure(b, 1, a[0], a[1:]...)
				walls = append(walls, med)
			}
			sort.Slice(walls, func(i, j int) bool { return walls[i] < walls[j] })
			return walls[len(walls)/2]
		}
		b.Run(alg+"/certagent", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				med := medianOver(copies(11), func(r string) []string {
					return append([]string{certagentBin, "renew", "--root", r}, kubeadmRenewNames...)
				})
				b.ReportMetric(med.Seconds(), "median-s")
			}
		})
		b.Run(alg+"/kubeadm", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				med := medianOver(copies(11), func(r string) []string {
					return []string{kubeadm, "certs", "renew", "all", "--config", "/etc/kubernetes/kubeadm.yaml", "--rootfs", r}
				})
				b.ReportMetric(med.Seconds(), "median-s")
			}
		})
	}
}

var kubeadmRenewNames = []string{"admin.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client",
	"controller-manager.conf", "etcd-healthcheck-client", "etcd-peer", "etcd-server", "front-proxy-client",
	"scheduler.conf", "super-admin.conf"}

// procStats reads a process's CPU time (user+system) and its resident and
// peak resident memory.
func procStats(b *testing.B, pid int) (cpu time.Duration, rssKB, hwmKB int64) {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	cpu = time.Duration(ut+st) * time.Second / 100 // USER_HZ
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(status), "\n") {
		fs := strings.Fields(line)
		if len(fs) >= 2 && fs[0] == "VmRSS:" {
			rssKB, _ = strconv.ParseInt(fs[1], 10, 64)
		}
		if len(fs) >= 2 && fs[0] == "VmHWM:" {
			hwmKB, _ = strconv.ParseInt(fs[1], 10, 64)
		}
	}
	return cpu, rssKB, hwmKB
}

// BenchmarkAgentIdle: `certagent run` on a real kubeadm PKI, idle for 60 s
// after start-up: RSS at the end, peak RSS, and CPU share over the minute.
func BenchmarkAgentIdle(b *testing.B) {
	root := kubeadmPKI(b, "8760h")
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(certagentBin, "run", "--root", root, "--no-restart")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(2 * time.Second) // start-up and the first scan
		cpu0, _, _ := procStats(b, cmd.Process.Pid)
		time.Sleep(60 * time.Second)
		cpu1, rss, hwm := procStats(b, cmd.Process.Pid)
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		b.ReportMetric(float64(rss)/1024, "RSS-MB")
		b.ReportMetric(float64(hwm)/1024, "peak-RSS-MB")
		b.ReportMetric(100*float64(cpu1-cpu0)/float64(60*time.Second), "CPU-%")
	}
}

// BenchmarkChangeToStatusLatency: a certificate replaced on disk by rename
// (as kubeadm or the kubelet does it) until `status` over the socket shows
// the new serial; 100 changes, p50 and p99.
func BenchmarkChangeToStatusLatency(b *testing.B) {
	root := b.TempDir()
	n, err := (pkitest.Layout{}).Write(root)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(certagentBin, "run", "--root", root, "--no-restart")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	sock := filepath.Join(root, "run/certagent/certagent.sock")
	client := unixClient(sock)
	serialNow := func() string {
		resp, err := client.Get("http://x/v1/status")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var s struct {
			Certificates []struct{ Name, Serial string } `json:"certificates"`
		}
		json.NewDecoder(resp.Body).Decode(&s)
		for _, c := range s.Certificates {
			if c.Name == "etcd-healthcheck-client" {
				return c.Serial
			}
		}
		return ""
	}
	for i := 0; i < 200 && serialNow() == ""; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	dir := filepath.Join(root, "etc/kubernetes/pki/etcd")
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		lat = lat[:0]
		for j := 0; j < 100; j++ {
			c, k, _ := n.EtcdCA.Issue(pkitest.Spec{CommonName: "kube-etcd-healthcheck-client", NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(365 * 24 * time.Hour)})
			serial := strings.ToUpper(c.SerialNumber.Text(16))
			os.WriteFile(filepath.Join(dir, ".k"), pkitest.KeyPEM(k), 0o600)
			os.WriteFile(filepath.Join(dir, ".c"), pkitest.CertPEM(c), 0o644)
			os.Rename(filepath.Join(dir, ".k"), filepath.Join(dir, "healthcheck-client.key"))
			start := time.Now()
			os.Rename(filepath.Join(dir, ".c"), filepath.Join(dir, "healthcheck-client.crt"))
			for serialNow() != serial {
				if time.Since(start) > 10*time.Second {
					b.Fatal("change never showed")
				}
				time.Sleep(2 * time.Millisecond)
			}
			lat = append(lat, time.Since(start))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(lat[len(lat)/2].Seconds(), "p50-s")
		b.ReportMetric(lat[len(lat)*99/100].Seconds(), "p99-s")
	}
}

// BenchmarkCSRRenewal: 20 renewals of a worker's kubelet client
// certificate against the real API server with auto-approval: the time
// from "renewal due" to the new certificate on disk (median, max), and the
// API requests each took.
func BenchmarkCSRRenewal(b *testing.B) {
	c := sharedCluster(b)
	root := makeNode(b, c, nodeOpts{name: "bench-node", age: time.Minute, life: time.Hour})
	d := startDaemon(b, certagentBin, root, nil)
	ca := clusterCA(b, c)
	kdir := filepath.Join(root, "var/lib/kubelet/pki")
	for i := 0; i < b.N; i++ {
		var secs []float64
		var reqs []int64
		for j := 0; j < 20; j++ {
			// The kubelet "installs" a certificate that is already due.
			nb := time.Now().Add(-57 * time.Minute)
			cert, key, _ := ca.Issue(pkitest.Spec{CommonName: "system:node:bench-node", Organization: []string{"system:nodes"}, NotBefore: nb, NotAfter: nb.Add(time.Hour)})
			file := filepath.Join(kdir, fmt.Sprintf("kubelet-client-due-%d-%d.pem", i, j))
			os.WriteFile(file, append(pkitest.CertPEM(cert), pkitest.KeyPEM(key)...), 0o600)
			os.Symlink("/var/lib/kubelet/pki/"+filepath.Base(file), filepath.Join(kdir, "kubelet-client-updated.pem"))
			os.Rename(filepath.Join(kdir, "kubelet-client-updated.pem"), filepath.Join(kdir, "kubelet-client-current.pem"))
			due := strings.ToUpper(cert.SerialNumber.Text(16))
			deadline := time.Now().Add(30 * time.Second)
			for {
				s := d.status(b)
				cur := serialOfStatus(s, "kubelet-client-current")
				if cur != "" && cur != due && s.Daemon.LastCSR != nil && s.Daemon.LastCSR.Requests > 0 {
					secs = append(secs, s.Daemon.LastCSR.Seconds)
					reqs = append(reqs, s.Daemon.LastCSR.Requests)
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("renewal %d did not happen\n%s", j, d.log())
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		sort.Float64s(secs)
		sort.Slice(reqs, func(i, j int) bool { return reqs[i] < reqs[j] })
		b.ReportMetric(secs[len(secs)/2], "median-s")
		b.ReportMetric(secs[len(secs)-1], "max-s")
		b.ReportMetric(float64(reqs[len(reqs)/2]), "requests/renewal")
		b.ReportMetric(float64(reqs[len(reqs)-1]), "max-requests")
	}
}
