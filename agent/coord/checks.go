package coord

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
)

// single says whether this node's control plane is the only one: etcd
// has one voting member, or, when etcd cannot be asked, no other
// kube-apiserver is known, or there is nothing to ask (no etcd client
// certificate, no kubeconfig). Then nobody must take turns with it.
func (c *Coordinator) single(ctx context.Context) bool {
	if c.Etcd == nil && c.APIServers == nil {
		return true // nothing tells of other nodes: none to take turns with
	}
	if c.Etcd != nil {
		if m, err := c.Etcd.Members(ctx); err == nil {
			return m.Voting <= 1
		}
	}
	if c.APIServers != nil {
		if p, err := c.APIServers.Peers(ctx); err == nil {
			return p.Others == 0
		}
	}
	return false
}

// safe says whether restarting component now keeps the cluster up, and
// why. A check that cannot be asked does not block: the Lease already
// keeps restarts one at a time, and the reason is logged.
func (c *Coordinator) safe(ctx context.Context, component string) (bool, string) {
	switch {
	case component == "etcd" && c.Etcd != nil:
		m, err := c.Etcd.Members(ctx)
		if err != nil {
			c.Log.WithFields(logrus.Fields{"COMPONENT": component, "REASON": err.Error()}).Warning("cannot ask etcd for its members: restarting without the quorum check")
			return true, "etcd cannot be asked: " + err.Error()
		}
		return EtcdSafe(m)
	case component == "kube-apiserver" && c.APIServers != nil:
		p, err := c.APIServers.Peers(ctx)
		if err != nil {
			c.Log.WithFields(logrus.Fields{"COMPONENT": component, "REASON": err.Error()}).Warning("cannot find the other kube-apiservers: restarting without the check")
			return true, "kube-apiservers cannot be listed: " + err.Error()
		}
		return APIServerSafe(p)
	}
	return true, "no check for " + component
}

// settle waits, before the Lease goes to another node, until this node's
// restarted component is healthy again (etcd's member answers /health,
// the kube-apiserver /readyz), for at most Settle: the restart's own
// check only proved the new certificate served.
func (c *Coordinator) settle(ctx context.Context, component string) {
	healthy := func() bool {
		switch {
		case component == "etcd" && c.Etcd != nil:
			m, err := c.Etcd.Members(ctx)
			return err == nil && m.SelfHealthy
		case component == "kube-apiserver" && c.APIServers != nil:
			p, err := c.APIServers.Peers(ctx)
			return err == nil && p.SelfReady
		}
		return true
	}
	limit := c.Settle
	if limit <= 0 {
		limit = 2 * time.Minute
	}
	deadline := c.Clock.Now().Add(limit)
	for !healthy() {
		if c.Clock.Now().After(deadline) || ctx.Err() != nil {
			c.Log.WithFields(logrus.Fields{"COMPONENT": component, "REASON": "not healthy after " + limit.String()}).Warning("giving the restart Lease up before the component is healthy")
			return
		}
		select {
		case <-ctx.Done():
		case <-c.Clock.After(c.retry()):
		}
	}
}
