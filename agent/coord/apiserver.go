package coord

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/agent/kube"
)

// Peers is what the kube-apiservers of the cluster say: how many there
// are besides this node's, how many of those answer /readyz, and whether
// this node's does.
type Peers struct {
	Others, ReadyOthers int
	SelfReady           bool
}

// APIServerSafe says whether restarting this node's kube-apiserver leaves
// the cluster an API server, and why: yes when another one is ready, and
// also when this one is not ready either (nothing is lost).
func APIServerSafe(p Peers) (bool, string) {
	switch {
	case p.ReadyOthers > 0:
		return true, fmt.Sprintf("%d of %d other kube-apiservers ready", p.ReadyOthers, p.Others)
	case !p.SelfReady:
		return true, "no kube-apiserver is ready, this one neither: restarting loses nothing"
	default:
		return false, fmt.Sprintf("none of the %d other kube-apiservers is ready", p.Others)
	}
}

// APIChecker finds the kube-apiservers and asks their /readyz.
type APIChecker interface {
	Peers(ctx context.Context) (Peers, error)
}

// APIServers lists the kube-apiservers from Static (host:port, set in
// the config) or else from the `kubernetes` EndpointSlice in the default
// namespace, and GETs /readyz of each. Self is this node's endpoint; an
// address equal to it, or on a local IP with its port, is this node's.
// HTTP verifies the servers with the cluster CA.
type APIServers struct {
	Static []string
	Client kube.Interface
	Self   string
	HTTP   *http.Client
	// LocalIPs lists this host's addresses (net.InterfaceAddrs when nil).
	LocalIPs func() []net.IP
}

// Peers implements APIChecker.
func (a *APIServers) Peers(ctx context.Context) (Peers, error) {
	all := a.Static
	if len(all) == 0 {
		var err error
		if all, err = a.fromSlice(ctx); err != nil {
			return Peers{}, err
		}
	}
	var p Peers
	var mu sync.Mutex
	var wg sync.WaitGroup
	others := a.others(all)
	p.Others = len(others)
	for _, addr := range append(others, a.Self) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := a.ready(ctx, addr)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case ok && addr == a.Self:
				p.SelfReady = true
			case ok:
				p.ReadyOthers++
			}
		}()
	}
	wg.Wait()
	return p, nil
}

// fromSlice reads the endpoints of the `kubernetes` Service.
func (a *APIServers) fromSlice(ctx context.Context) ([]string, error) {
	if a.Client == nil {
		return nil, fmt.Errorf("no Kubernetes client")
	}
	s, err := a.Client.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver endpoints: %w", err)
	}
	port := 6443
	for _, p := range s.Ports {
		if p.Port != nil && (p.Name == nil || *p.Name == "https") {
			port = int(*p.Port)
		}
	}
	var out []string
	for _, ep := range s.Endpoints {
		if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
			out = append(out, "") // counted as another server, never ready
			continue
		}
		for _, ip := range ep.Addresses {
			out = append(out, net.JoinHostPort(ip, strconv.Itoa(port)))
		}
	}
	return out, nil
}

// others drops this node's own addresses.
func (a *APIServers) others(all []string) []string {
	_, selfPort, _ := net.SplitHostPort(a.Self)
	local := a.LocalIPs
	if local == nil {
		local = interfaceIPs
	}
	ips := local()
	var out []string
	for _, addr := range all {
		if addr == a.Self {
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		mine := false
		if err == nil && port == selfPort {
			for _, ip := range ips {
				if ip.Equal(net.ParseIP(host)) {
					mine = true
				}
			}
		}
		if !mine {
			out = append(out, addr)
		}
	}
	return out
}

func interfaceIPs() []net.IP {
	addrs, _ := net.InterfaceAddrs()
	var out []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			out = append(out, n.IP)
		}
	}
	return out
}

// ready GETs https://addr/readyz; 200 is ready.
func (a *APIServers) ready(ctx context.Context, addr string) bool {
	if addr == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
