// Package nspawn boots a real systemd node for certagent's tests: a cached
// Debian rootfs (rootfs.sh) unpacked and booted with systemd-nspawn,
// driven from outside with nsenter.
package nspawn

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Node is a booted container.
type Node struct {
	Dir    string // the rootfs on the host
	Leader int    // pid of the container's systemd
	cmd    *exec.Cmd
	log    *bytes.Buffer
}

// Rootfs returns the cached rootfs tarball, building it on first use.
func Rootfs(scriptDir string) (string, error) {
	out, err := exec.Command("bash", filepath.Join(scriptDir, "rootfs.sh")).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return "", fmt.Errorf("rootfs.sh: %v\n%s", err, ee.Stderr)
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// Unpack extracts the rootfs into dir, to be prepared and then booted.
func Unpack(tarball, dir string) error {
	if out, err := exec.Command("tar", "-C", dir, "-xf", tarball).CombinedOutput(); err != nil {
		return fmt.Errorf("untar: %v %s", err, out)
	}
	return nil
}

// Boot starts systemd in dir with a private network and waits until the
// system is up.
func Boot(ctx context.Context, dir string) (*Node, error) {
	return BootWith(ctx, dir, "--private-network")
}

// BootWith starts systemd in dir with more systemd-nspawn options (none:
// the host's network) and waits until the system is up.
func BootWith(ctx context.Context, dir string, opts ...string) (*Node, error) {
	n := &Node{Dir: dir, log: &bytes.Buffer{}}
	args := append([]string{"-D", dir, "-b", "--register=no", "--keep-unit", "--quiet"}, opts...)
	n.cmd = exec.Command("systemd-nspawn", args...)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if n.Leader == 0 {
			n.Leader = findSystemd(n.cmd.Process.Pid)
		}
		if n.Leader != 0 {
			out, _ := n.Exec("systemctl", "is-system-running")
			s := strings.TrimSpace(string(out))
			if s == "running" || s == "degraded" {
				return n, nil
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	n.Stop()
	return nil, fmt.Errorf("container did not boot: %s", n.log.String())
}

// findSystemd finds the container's PID 1 among the descendants of pid.
func findSystemd(pid int) int {
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(kids)) {
		k, _ := strconv.Atoi(f)
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", k))
		if strings.TrimSpace(string(comm)) == "systemd" {
			return k
		}
		if s := findSystemd(k); s != 0 {
			return s
		}
	}
	return 0
}

// Exec runs a command inside the container (all its namespaces).
func (n *Node) Exec(args ...string) ([]byte, error) {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(n.Leader), "-a", "--"}, args...)...).CombinedOutput()
}

// ExecNet runs a host command in the container's network namespace only.
func (n *Node) ExecNet(args ...string) ([]byte, error) {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(n.Leader), "-n", "--"}, args...)...).CombinedOutput()
}

// Log is what nspawn printed.
func (n *Node) Log() string { return n.log.String() }

// Stop powers the container off (or kills it after 20 s).
func (n *Node) Stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	if n.Leader != 0 {
		syscall.Kill(n.Leader, syscall.Signal(34+4)) // SIGRTMIN+4: systemd powers off
	}
	done := make(chan struct{})
	go func() { n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		n.cmd.Process.Kill()
		<-done
	}
}
