package main

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/coord"
	"github.com/certagent/certagent/agent/kubeclient"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/rotate/pki"
)

// restartGate is the restart.Gate of the daemon and of `renew`: for each
// static pod restart it builds a coord.Coordinator from the configuration
// and the node's files as they are now (the node's credential rotates),
// and counts the API requests coordination spends.
type restartGate struct {
	root      *pki.Root
	restarter *restart.Restarter
	log       *logrus.Logger
	requests  atomic.Int64

	mu  sync.Mutex // guards cur
	cur *coord.Coordinator
}

// Acquire implements restart.Gate.
func (g *restartGate) Acquire(ctx context.Context, cfg *config.Config, component string, ping func()) (func(), error) {
	if !cfg.Coordination.On() {
		return func() {}, nil
	}
	c := g.coordinator(cfg)
	before := g.requests.Load()
	g.mu.Lock()
	g.cur = c
	g.mu.Unlock()
	release, err := c.Acquire(ctx, component, ping)
	if err != nil {
		return nil, err
	}
	return func() {
		release()
		// API_REQUESTS counts since the agent started, TURN_API_REQUESTS this turn.
		n := g.requests.Load()
		g.log.WithFields(logrus.Fields{"COMPONENT": component, "NODE": c.Node, "API_REQUESTS": n, "TURN_API_REQUESTS": n - before}).
			Info("restart turn over")
	}, nil
}

// Status says what the current coordination waits for.
func (g *restartGate) Status() *api.CoordinationStatus {
	g.mu.Lock()
	c := g.cur
	g.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Status()
}

// nodeName is the Lease holder: agent.nodeName, kubelet.nodeName, or the
// host name.
func nodeName(cfg *config.Config) string {
	if cfg.Agent.NodeName != "" {
		return cfg.Agent.NodeName
	}
	if cfg.Kubelet.NodeName != "" {
		return cfg.Kubelet.NodeName
	}
	h, _ := os.Hostname()
	return h
}

func (g *restartGate) coordinator(cfg *config.Config) *coord.Coordinator {
	co := cfg.Coordination
	c := &coord.Coordinator{Node: nodeName(cfg), Clock: clock.RealClock{}, Log: g.log,
		Retry: co.RetryIntervalDuration, Renew: co.LeaseDurationDuration / 3, Window: co.APIDownWindowDuration,
		Settle: cfg.Restart.TimeoutDuration, DownAfter: co.LeaseDurationDuration}
	cs, roots, err := kubeclient.New(g.root, co.Kubeconfig, &g.requests)
	if err != nil {
		c.Lock = failLock{err}
	} else {
		c.Lock = &coord.LeaseLock{Client: cs.CoordinationV1(), Namespace: co.LeaseNamespace, Name: co.LeaseName,
			Identity: c.Node, Duration: co.LeaseDurationDuration, Clock: clock.RealClock{}}
		c.APIServers = &coord.APIServers{Static: co.APIServers, Client: cs, Self: cfg.Restart.Endpoints["kube-apiserver"],
			// kubeadm puts "kubernetes" in every kube-apiserver's certificate.
			HTTP: &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "kubernetes"}}}}
	}
	if tc, err := g.restarter.EtcdClientTLS(cfg); err == nil {
		c.Etcd = &coord.Etcd{Endpoint: "https://" + cfg.Restart.Endpoints["etcd"], HTTP: &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: tc}}}
	} else {
		g.log.WithField("REASON", err.Error()).Debug("no etcd quorum check")
	}
	return c
}

// failLock is the Lock when no client can be built: it always says why.
type failLock struct{ err error }

func (f failLock) TryAcquire(context.Context) (coord.Holder, bool, error) {
	return coord.Holder{}, false, f.err
}
func (f failLock) Release(context.Context) error { return nil }
