package kube

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryLinksNoFullScheme: the certagent binary links neither
// client-go's clientset, its scheme of every API group, its generic typed
// client and testing fakes (about 8 MB of resident memory together), nor
// the test adapter.
func TestBinaryLinksNoFullScheme(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/certagent/certagent/cmd/certagent").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list gave %d packages: not the binary's dependencies", len(deps))
	}
	for _, dep := range deps {
		switch {
		case dep == "k8s.io/client-go/kubernetes",
			strings.HasPrefix(dep, "k8s.io/client-go/kubernetes/"),
			dep == "k8s.io/client-go/util/certificate/csr",
			dep == "k8s.io/client-go/gentype",
			dep == "k8s.io/client-go/testing",
			dep == "github.com/certagent/certagent/agent/kube/kubefake":
			t.Errorf("the binary links %s", dep)
		}
	}
}
