package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/client"
	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// datagrams collects what arrives on a unixgram socket (sd_notify or
// journald's native protocol).
type datagrams struct {
	mu   sync.Mutex
	msgs []string
	conn *net.UnixConn
}

func listenGram(t testing.TB, path string) *datagrams {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	d := &datagrams{conn: c}
	go func() {
		buf := make([]byte, 1<<16)
		for {
			n, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			d.mu.Lock()
			d.msgs = append(d.msgs, string(buf[:n]))
			d.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close() })
	return d
}

func (d *datagrams) waitFor(t testing.TB, what string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		d.mu.Lock()
		for _, m := range d.msgs {
			if ok(m) {
				d.mu.Unlock()
				return m
			}
		}
		d.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t.Fatalf("no %s among %d datagrams: %q", what, len(d.msgs), d.msgs)
	return ""
}

// daemon is a `certagent run` subprocess on a sandbox root.
type daemon struct {
	cmd    *exec.Cmd
	root   string
	socket string
	stderr *os.File
	notify *datagrams
}

func startDaemon(t testing.TB, bin, root string, env []string, args ...string) *daemon {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	d := &daemon{root: root, socket: filepath.Join(root, "run/certagent/certagent.sock"), notify: listenGram(t, sock)}
	var err error
	if d.stderr, err = os.CreateTemp(t.TempDir(), "stderr"); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bin, append([]string{"run", "--root", root, "--no-restart", "--metrics-address="}, args...)...)
	d.cmd.Env = append(append(os.Environ(), "NOTIFY_SOCKET="+sock), env...)
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		d.cmd.Wait()
	})
	d.notify.waitFor(t, "READY=1", func(m string) bool { return strings.Contains(m, "READY=1") })
	return d
}

func (d *daemon) log() string {
	b, _ := os.ReadFile(d.stderr.Name())
	return string(b)
}

func unixClient(sock string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}}
}

// TestDaemonLifecycle: READY and STATUS through a test NOTIFY_SOCKET,
// status and renew through the socket, SIGTERM with STOPPING=1, and exit
// code 3 once the daemon is gone.
func TestDaemonLifecycle(t *testing.T) {
	root := sandbox(t)
	d := startDaemon(t, certagentBin, root, nil)
	ready := d.notify.waitFor(t, "READY=1", func(m string) bool { return strings.Contains(m, "READY=1") })
	if !strings.Contains(ready, "STATUS=14 certs, next renewal") {
		t.Errorf("READY without a useful STATUS: %q", ready)
	}
	r := run(t, certagentBin, "status", "--root", root, "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"renewal": {`) || !strings.Contains(r.stdout, `"daemon": {`) || !strings.Contains(r.stdout, `"notAfter"`) {
		t.Fatalf("status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = run(t, certagentBin, "renew", "--root", root, "etcd-peer")
	if r.code != 0 || !strings.Contains(r.stdout, "renewed by the running certagent daemon") || !strings.Contains(r.stdout, "renewed   etcd-peer") {
		t.Fatalf("renew through the daemon: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(d.log(), "CALLER_UID=0") || !strings.Contains(d.log(), "ACTION=renew") {
		t.Errorf("renew request not audit-logged:\n%s", d.log())
	}
	// A rescan through the client: accepted, and a pass follows.
	if err := client.New(d.socket).Rescan(context.Background()); err != nil {
		t.Fatalf("rescan: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.log(), "ACTION=rescan") || !strings.Contains(run(t, certagentBin, "status", "--root", root).stdout, "(rescan request") {
		if time.Now().After(deadline) {
			t.Fatalf("no pass after the rescan request\n%s", d.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Malformed and wrong requests are refused cleanly.
	c := unixClient(d.socket)
	for _, tc := range []struct {
		method, path, body string
		code               int
	}{
		{"POST", "/v1/renew", "{bad json", 400},
		{"POST", "/v1/renew", `{"names":["x"],"all":true}`, 400},
		{"POST", "/v1/renew", `{"names":["x"],"bogus":1}`, 400},
		{"GET", "/v1/renew", "", 405},
		{"GET", "/nope", "", 404},
	} {
		req, _ := http.NewRequest(tc.method, "http://x"+tc.path, strings.NewReader(tc.body))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := new(bytes.Buffer)
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(body.String(), `"error"`) {
			t.Errorf("%s %s %q: %d %s, want %d", tc.method, tc.path, tc.body, resp.StatusCode, body, tc.code)
		}
	}
	// SIGTERM: STOPPING=1, a clean exit, the socket gone.
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit 10s after SIGTERM")
	}
	d.notify.waitFor(t, "STOPPING=1", func(m string) bool { return strings.Contains(m, "STOPPING=1") })
	if r := run(t, certagentBin, "status", "--root", root); r.code != 3 || !strings.Contains(r.stderr, "not reachable") {
		t.Errorf("status without a daemon: exit %d %s", r.code, r.stderr)
	}
}

// TestSocketPermissions: root may do everything, a member of the
// configured group may read but not renew, anyone else is refused. The
// group is Debian's nogroup (gid 65534), so the test creates no group.
func TestSocketPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root")
		}
		t.Skip("SKIPPED: needs root to run clients as other users")
	}
	root := sandbox(t)
	cfg := filepath.Join(root, "etc/certagent/config.yaml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\nagent: {group: nogroup}\n"), 0o644)
	d := startDaemon(t, certagentBin, root, nil)
	fi, err := os.Stat(d.socket)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 65534 {
		t.Fatalf("socket mode %v gid %v: %v", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, err)
	}
	openUp(filepath.Join(root, "run/certagent"))
	member := runAs(t, 65534, 65534, certagentBin, "status", "--socket", d.socket)
	if member.code != 0 || !strings.Contains(member.stdout, "apiserver") {
		t.Errorf("group member status: exit %d\n%s%s", member.code, member.stdout, member.stderr)
	}
	refused := runAs(t, 65534, 65534, certagentBin, "renew", "--root", root, "apiserver")
	if refused.code == 0 || !strings.Contains(refused.stderr, "only root may") {
		t.Errorf("group member renew: exit %d\n%s%s", refused.code, refused.stdout, refused.stderr)
	}
	other := runAs(t, 4321, 4321, certagentBin, "status", "--socket", d.socket)
	if other.code != 3 || !strings.Contains(other.stderr, "permission denied") {
		t.Errorf("outsider status: exit %d\n%s%s", other.code, other.stdout, other.stderr)
	}
}

// TestSlowClientDoesNotBlock: a client that sends half a request and
// stalls holds nothing the agent or other clients need.
func TestSlowClientDoesNotBlock(t *testing.T) {
	root := sandbox(t)
	d := startDaemon(t, certagentBin, root, nil)
	slow, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprint(slow, "GET /v1/status HTTP/1.1\r\nHost: x\r\n") // and never the blank line
	// A status reader that never reads its response.
	stuck, _ := net.Dial("unix", d.socket)
	defer stuck.Close()
	fmt.Fprint(stuck, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
	start := time.Now()
	for i := 0; i < 5; i++ {
		if r := run(t, certagentBin, "status", "--socket", d.socket); r.code != 0 {
			t.Fatalf("status while a client stalls: exit %d %s", r.code, r.stderr)
		}
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("5 status calls took %s with a stalled client", el)
	}
	// The loop itself keeps working: a change on disk still shows.
	os.WriteFile(filepath.Join(root, "etc/kubernetes/pki/late.crt"), []byte("garbage"), 0o644)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r := run(t, certagentBin, "status", "--socket", d.socket)
		if strings.Contains(r.stdout, "late.crt") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Error("a change on disk did not show while a client stalled")
}

// TestJournalNativeProtocol: with stderr being the journal stream, events
// go to journald natively with their fields. The binary is built with its
// journal socket pointed at a test socket.
func TestJournalNativeProtocol(t *testing.T) {
	dir := t.TempDir()
	jsock := filepath.Join(dir, "journal.sock")
	bin := filepath.Join(dir, "certagent-journal")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X github.com/coreos/go-systemd/v22/journal.journalSocket="+jsock, "github.com/certagent/certagent/cmd/certagent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	journal := listenGram(t, jsock)
	// One certificate expired, so that a renewal event is logged at once.
	root := t.TempDir()
	if _, err := (pkitest.Layout{NotAfter: map[string]time.Time{"front-proxy-client": time.Now().Add(-time.Hour)}}).Write(root); err != nil {
		t.Fatal(err)
	}
	stderr, _ := os.CreateTemp(dir, "stderr")
	var st syscall.Stat_t
	syscall.Fstat(int(stderr.Fd()), &st)
	stream := fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino)
	cmd := exec.Command(bin, "run", "--root", root, "--no-restart")
	cmd.Env = append(os.Environ(), stream)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	msg := journal.waitFor(t, "a renewed event", func(m string) bool { return strings.Contains(m, "MESSAGE_ID=5bb61177dc074362822c1a458b6a50ca") })
	fields := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(msg))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			fields[k] = v
		}
	}
	for _, k := range []string{"CERT_NAME", "CERT_PATH", "SERIAL", "NOT_AFTER", "METHOD", "SYSLOG_IDENTIFIER", "PRIORITY", "MESSAGE"} {
		if fields[k] == "" {
			t.Errorf("journal entry lacks %s: %q", k, msg)
		}
	}
	if fields["SYSLOG_IDENTIFIER"] != "certagent" {
		t.Errorf("SYSLOG_IDENTIFIER=%q", fields["SYSLOG_IDENTIFIER"])
	}
	if b, _ := os.ReadFile(stderr.Name()); len(b) > 0 {
		t.Errorf("text logs on stderr although it is the journal stream: %s", b)
	}
}

// TestSIGTERMDuringATransaction: SIGTERM while a renewal is committing
// lets it finish; the daemon exits cleanly and leaves no interrupted
// transaction and no mismatched pair.
func TestSIGTERMDuringATransaction(t *testing.T) {
	root := t.TempDir()
	if _, err := (pkitest.Layout{NotAfter: map[string]time.Time{"front-proxy-client": time.Now().Add(-time.Hour)}}).Write(root); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(certagentBin, "run", "--root", root, "--no-restart", "--metrics-address=")
	cmd.Env = append(os.Environ(), "CERTAGENT_TEST_PAUSE_AT=backed-up") // holds the commit for 2 s
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if r := run(t, certagentBin, "renew", "--root", root, "--all", "--dry-run"); strings.Contains(r.stdout, "interrupted") {
		t.Errorf("SIGTERM left an interrupted transaction:\n%s", r.stdout)
	}
	rep := consistent(t, root)
	for _, c := range rep.Certificates {
		if c.Name == "front-proxy-client" && c.State == "expired" {
			t.Error("the transaction in flight was not finished")
		}
	}
}
