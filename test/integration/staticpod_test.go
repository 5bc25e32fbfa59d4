package integration

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/test/cluster"
)

// staticPodRunner stands in for the kubelet's static-pod handling of the
// kube-apiserver manifest: it stops the real API server when the manifest
// leaves the directory and starts it again when it comes back.
func staticPodRunner(t *testing.T, c *cluster.Cluster, manifests string, every time.Duration) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		running := true
		for {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			_, err := os.Stat(filepath.Join(manifests, "kube-apiserver.yaml"))
			switch here := err == nil; {
			case !here && running:
				c.StopAPIServer()
				running = false
			case here && !running:
				if err := c.StartAPIServer(kubeBin); err != nil {
					t.Error(err)
				}
				running = true
			}
		}
	}()
	return func() { close(stop); <-done }
}

func servedSerialAt(addr string) string {
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return ""
	}
	defer conn.Close()
	return strings.ToUpper(conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16))
}

// TestStaticPodAPIServer: after renewing apiserver.crt, certagent's
// daemon confirms with a TLS probe that the real API server serves the
// new serial. The real kube-apiserver reads its serving certificate anew
// by itself: it is not restarted. With restart.reloadWait 0 certagent
// recreates the static pod instead (manifest out as a dotfile, back after
// the file check period).
func TestStaticPodAPIServer(t *testing.T) {
	for _, tc := range []struct {
		name, reloadWait, confirmed string
		restart                     bool
	}{
		{name: "reads it by itself", reloadWait: "60s", confirmed: "loaded the renewed certificate by itself"},
		{name: "restart", reloadWait: "0s", confirmed: "restarted; the new certificate is served", restart: true},
	} {
		t.Run(tc.name, func(t *testing.T) { staticPodAPIServer(t, tc.reloadWait, tc.confirmed, tc.restart) })
	}
}

func staticPodAPIServer(t *testing.T, reloadWait, confirmed string, restart bool) {
	c := sharedCluster(t)
	manifests := filepath.Join(c.Root, "etc/kubernetes/manifests")
	os.MkdirAll(manifests, 0o755)
	os.WriteFile(filepath.Join(manifests, "kube-apiserver.yaml"), []byte("apiVersion: v1\nkind: Pod\n"), 0o600)
	stopRunner := staticPodRunner(t, c, manifests, 200*time.Millisecond)
	defer stopRunner()
	addr := strings.TrimPrefix(c.URL, "https://")
	cfg := filepath.Join(c.Root, "etc/certagent/config.yaml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nrestart: {fileCheckFrequency: 1s, timeout: 90s, reloadWait: "+reloadWait+
		", endpoints: {kube-apiserver: \""+addr+"\"}}\n"+
		// One control-plane node: its kube-apiserver is the only one (here
		// its kubeconfigs do not reach it, nor the default etcd address etcd).
		"coordination: {apiServers: [\""+addr+"\"]}\n"), 0o644)
	defer os.Remove(cfg)
	before := servedSerialAt(addr)
	d := startDaemon(t, certagentBin, c.Root, nil, "--no-restart=false")
	r := run(t, certagentBin, "renew", "--root", c.Root, "apiserver")
	if r.code != 0 {
		t.Fatalf("renew: %s%s", r.stdout, r.stderr)
	}
	onDisk := time.Now()
	disk := strings.ToUpper(readCert(t, filepath.Join(c.Root, "etc/kubernetes/pki/apiserver.crt")).SerialNumber.Text(16))
	if disk == before {
		t.Fatal("not renewed on disk")
	}
	pid := c.PID("apiserver")
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(d.log(), confirmed) {
		if time.Now().After(deadline) || strings.Contains(d.log(), "rolling back") {
			t.Fatalf("not confirmed (%q)\n%s", confirmed, d.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("renewed on disk to the new serial confirmed served (restart %v): %s", restart, time.Since(onDisk))
	if got := servedSerialAt(addr); got != disk {
		t.Errorf("served %s, disk %s", got, disk)
	}
	if recreated := c.PID("apiserver") != pid; recreated != restart {
		t.Errorf("the kube-apiserver process recreated: %v, want %v", recreated, restart)
	}
	if !strings.Contains(d.log(), "COMPONENT=kube-apiserver") {
		t.Errorf("confirmation not logged per component:\n%s", d.log())
	}
	if err := c.WaitReady(t.Context(), time.Minute); err != nil {
		t.Fatal(err)
	}
}
