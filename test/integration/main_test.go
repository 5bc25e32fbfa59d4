// Package integration runs certagent's binary against real components: the
// real kubeadm (built by test/k8stools/build.sh) makes the PKIs and is the
// reference the output is compared with.
//
// Environment: CERTAGENT_BIN (the binary; built if unset), CERTAGENT_KUBE_BIN
// (directory with kubeadm, kube-apiserver, kube-controller-manager). Without
// the Kubernetes binaries the tests skip, unless CERTAGENT_REQUIRE_INTEGRATION
// or CI is set: then they fail.
package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

var (
	certagentBin string
	kubeBin      string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// As certagent's main does: no watch-list attempt for one CSR.
	if os.Getenv("KUBE_FEATURE_WatchListClient") == "" {
		os.Setenv("KUBE_FEATURE_WatchListClient", "false")
	}
	certagentBin = os.Getenv("CERTAGENT_BIN")
	if certagentBin == "" {
		dir, err := os.MkdirTemp("", "certagent-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		certagentBin = filepath.Join(dir, "certagent")
		out, err := exec.Command("go", "build", "-tags", "certagent_testhooks", "-o", certagentBin, "github.com/certagent/certagent/cmd/certagent").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build certagent: %v\n%s", err, out)
			return 1
		}
	}
	kubeBin = os.Getenv("CERTAGENT_KUBE_BIN")
	defer stopSharedCluster()
	return m.Run()
}

// requireKube returns the path of a Kubernetes binary or skips the test;
// under CI or `make test` a missing binary fails it instead.
func requireKube(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(kubeBin, name)
	if kubeBin != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found: set CERTAGENT_KUBE_BIN (make test builds it with test/k8stools/build.sh)", name)
	if os.Getenv("CERTAGENT_REQUIRE_INTEGRATION") != "" || os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip("SKIPPED: " + msg)
	return ""
}

// result is one run of a command.
type result struct {
	stdout, stderr string
	code           int
}

func run(t testing.TB, bin string, args ...string) result {
	t.Helper()
	return runWith(t, nil, bin, args...)
}

func runWith(t testing.TB, attr *syscall.SysProcAttr, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = attr
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return result{out.String(), errb.String(), code}
}
