package integration

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/certagent/certagent/test/cluster"
)

var (
	clusterOnce sync.Once
	shared      *cluster.Cluster
	sharedErr   error
	sharedDirs  []string
)

// sharedCluster starts one real control plane for the package (kubeadm
// PKI with 1-hour leaves, controller-manager signing for 1 hour) and
// stops it in TestMain.
func sharedCluster(t testing.TB) *cluster.Cluster {
	t.Helper()
	requireKube(t, "kube-apiserver")
	clusterOnce.Do(func() {
		root, err := os.MkdirTemp("", "certagent-cluster-root-")
		if err != nil {
			sharedErr = err
			return
		}
		work, _ := os.MkdirTemp("", "certagent-cluster-work-")
		sharedDirs = append(sharedDirs, root, work)
		if sharedErr = makeKubeadmPKI(root, "1h", "RSA-2048"); sharedErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared, sharedErr = cluster.Start(ctx, kubeBin, root, work, time.Hour)
	})
	if sharedErr != nil {
		t.Fatalf("control plane: %v", sharedErr)
	}
	return shared
}

func stopSharedCluster() {
	if shared != nil {
		shared.Stop()
	}
	for _, d := range sharedDirs {
		os.RemoveAll(d)
	}
}
