package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/certagent/certagent/rotate"
)

func TestClusterSmoke(t *testing.T) {
	c := sharedCluster(t)
	cfg, err := c.RestConfig(filepath.Join(c.Root, "etc/kubernetes/kubelet.conf"))
	if err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	key, _ := rotate.NewKey(nil, "ecdsa-p256")
	p, err := rotate.RequestCSR(context.Background(), client, rotate.KubeletClientSpec("node1", false), key)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	certs, err := rotate.WaitCSR(context.Background(), client, p, 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, c.Log("controller-manager"))
	}
	t.Logf("issued %s in %s: %s until %s", p.Name, time.Since(start), certs[0].Subject, certs[0].NotAfter)
}
