package coord

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/certagent/certagent/agent/kube/kubefake"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestEtcdSafe(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    Members
		want bool
	}{
		{"three healthy", Members{3, 2, true}, true},
		{"one other down", Members{3, 1, true}, false},
		{"self down, others up", Members{3, 2, false}, true},
		{"no quorum already", Members{3, 0, true}, true},
		{"five, one other down", Members{5, 3, true}, true},
		{"five, two others down", Members{5, 2, true}, false},
		{"two members", Members{2, 1, true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, why := EtcdSafe(tc.m); got != tc.want || why == "" {
				t.Errorf("EtcdSafe(%+v) = %v %q, want %v", tc.m, got, why, tc.want)
			}
		})
	}
}

func TestAPIServerSafe(t *testing.T) {
	for _, tc := range []struct {
		p    Peers
		want bool
	}{{Peers{2, 1, true}, true}, {Peers{2, 0, true}, false}, {Peers{2, 0, false}, true}, {Peers{0, 0, true}, false}} {
		if got, _ := APIServerSafe(tc.p); got != tc.want {
			t.Errorf("APIServerSafe(%+v) = %v", tc.p, got)
		}
	}
}

// etcdMember is a fake member's client endpoint: /health, and, on the
// first, the gateway's member list.
func etcdMember(t *testing.T, healthy *bool, list func() string) *httptest.Server {
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/health" && *healthy:
			fmt.Fprint(w, `{"health":"true","reason":""}`)
		case r.URL.Path == "/health":
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"health":"false","reason":"RAFT NO LEADER"}`)
		case r.URL.Path == "/v3/cluster/member/list" && r.Method == http.MethodPost && list != nil:
			fmt.Fprint(w, list())
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func TestEtcdMembers(t *testing.T) {
	up := []bool{true, true, true, true}
	var srv []*httptest.Server
	list := func() string {
		var ms []string
		for i, s := range srv {
			ms = append(ms, fmt.Sprintf(`{"ID":"%d","name":"m%d","clientURLs":["%s"],"isLearner":%v}`, 100+i, i, s.URL, i == 3))
		}
		return `{"header":{"cluster_id":"1","member_id":"100"},"members":[` + strings.Join(ms, ",") + `]}`
	}
	for i := range up {
		var l func() string
		if i == 0 {
			l = list
		}
		srv = append(srv, etcdMember(t, &up[i], l))
	}
	e := &Etcd{Endpoint: srv[0].URL, HTTP: srv[0].Client()}
	for _, tc := range []struct {
		name string
		up   []bool
		want Members
		safe bool
	}{
		{"all healthy (the learner does not count)", []bool{true, true, true, false}, Members{3, 2, true}, true},
		{"one other down", []bool{true, false, true, true}, Members{3, 1, true}, false},
		{"self down", []bool{false, true, true, true}, Members{3, 2, false}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			copy(up, tc.up)
			m, err := e.Members(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if m != tc.want {
				t.Errorf("got %+v, want %+v", m, tc.want)
			}
			if ok, why := EtcdSafe(m); ok != tc.safe {
				t.Errorf("safe %v (%s)", ok, why)
			}
		})
	}
	bad := &Etcd{Endpoint: srv[1].URL, HTTP: srv[1].Client()} // no member list there
	if _, err := bad.Members(context.Background()); err == nil || !strings.Contains(err.Error(), "member list") {
		t.Errorf("got %v, want the member list error", err)
	}
}

func readyz(t *testing.T, ready *bool) *httptest.Server {
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !*ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	t.Cleanup(s.Close)
	return s
}

func TestAPIServersFromEndpointSlice(t *testing.T) {
	ready := []bool{true, true, false}
	var addrs []string
	var srv []*httptest.Server
	for i := range ready {
		srv = append(srv, readyz(t, &ready[i]))
		addrs = append(addrs, strings.TrimPrefix(srv[i].URL, "https://"))
	}
	// The slice names IPs with one port: a fake "node IP" per server, all
	// mapped back to the test servers by the dialer.
	port := int32(6443)
	name := "https"
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port}}}
	for i := range ready {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.0.0.%d", i+1)}})
	}
	cs := fake.NewClientset(slice)
	client := srv[0].Client()
	tr := client.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "example.com" // a name the test certificate has, as "kubernetes" in production
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		i := int(net.ParseIP(host).To4()[3]) - 1
		return (&net.Dialer{}).DialContext(ctx, network, addrs[i])
	}
	client.Transport = tr
	a := &APIServers{Client: kubefake.Wrap(cs), Self: "127.0.0.1:6443", HTTP: client,
		LocalIPs: func() []net.IP { return []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("127.0.0.1")} }}
	a.Self = "10.0.0.1:6443"
	p, err := a.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := (Peers{Others: 2, ReadyOthers: 1, SelfReady: true}); p != want {
		t.Errorf("got %+v, want %+v", p, want)
	}
	ready[1] = false
	p, _ = a.Peers(context.Background())
	if ok, why := APIServerSafe(p); ok {
		t.Errorf("safe with no other ready server: %+v %s", p, why)
	}
	a.Self = "127.0.0.1:6443" // the node's own IP, 10.0.0.1, still excluded by port and local IP
	if p, _ = a.Peers(context.Background()); p.Others != 2 {
		t.Errorf("own address counted as another server: %+v", p)
	}
}

func TestAPIServersStatic(t *testing.T) {
	ready := []bool{true, false}
	s0, s1 := readyz(t, &ready[0]), readyz(t, &ready[1])
	a0, a1 := strings.TrimPrefix(s0.URL, "https://"), strings.TrimPrefix(s1.URL, "https://")
	a := &APIServers{Static: []string{a0, a1}, Self: a1, HTTP: s0.Client()}
	p, err := a.Peers(context.Background())
	if err != nil || p != (Peers{1, 1, false}) {
		t.Fatalf("got %+v %v", p, err)
	}
	b := &APIServers{Self: a1, HTTP: s0.Client()}
	if _, err := b.Peers(context.Background()); err == nil {
		t.Error("no servers and no client, and no error")
	}
}
