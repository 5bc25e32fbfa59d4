package coord

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Members is what etcd says of its voting members: how many there are,
// how many other than this node's answer /health, and whether this
// node's does.
type Members struct {
	Voting, HealthyOthers int
	SelfHealthy           bool
}

// Quorum is the number of voting members a cluster of n needs.
func Quorum(n int) int { return n/2 + 1 }

// EtcdSafe says whether restarting this node's member keeps etcd's
// quorum, and why: yes when the other healthy members are a quorum by
// themselves, and also when the cluster has lost quorum already (then
// this restart cannot make it worse, and may be what brings it back).
func EtcdSafe(m Members) (bool, string) {
	q := Quorum(m.Voting)
	healthy := m.HealthyOthers
	if m.SelfHealthy {
		healthy++
	}
	switch {
	case m.HealthyOthers >= q:
		return true, fmt.Sprintf("%d of %d other etcd members healthy, quorum %d", m.HealthyOthers, m.Voting-1, q)
	case healthy < q:
		return true, fmt.Sprintf("etcd has no quorum already (%d of %d healthy): restarting cannot lose it", healthy, m.Voting)
	default:
		return false, fmt.Sprintf("etcd would lose quorum: %d of %d other members healthy, quorum %d", m.HealthyOthers, m.Voting-1, q)
	}
}

// EtcdChecker asks etcd for its members and their health.
type EtcdChecker interface {
	Members(ctx context.Context) (Members, error)
}

// Etcd asks etcd through its v3 HTTP/JSON gateway: the member list from
// the local member (Endpoint, https://host:port), then /health of every
// voting member at its first client URL. HTTP carries the healthcheck
// client certificate (kubeadm's etcd requires one).
type Etcd struct {
	Endpoint string
	HTTP     *http.Client
}

type memberList struct {
	Header struct {
		MemberID string `json:"member_id"`
	} `json:"header"`
	Members []struct {
		ID         string   `json:"ID"`
		Name       string   `json:"name"`
		ClientURLs []string `json:"clientURLs"`
		IsLearner  bool     `json:"isLearner"`
	} `json:"members"`
}

// Members implements EtcdChecker.
func (e *Etcd) Members(ctx context.Context) (Members, error) {
	var list memberList
	if err := e.post(ctx, e.Endpoint+"/v3/cluster/member/list", &list); err != nil {
		return Members{}, fmt.Errorf("etcd member list: %w", err)
	}
	var m Members
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, mb := range list.Members {
		if mb.IsLearner {
			continue // learners do not vote
		}
		m.Voting++
		self := mb.ID == list.Header.MemberID
		if len(mb.ClientURLs) == 0 {
			continue // not started yet: not healthy
		}
		url := mb.ClientURLs[0]
		if self {
			url = e.Endpoint
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := e.healthy(ctx, url)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case ok && self:
				m.SelfHealthy = true
			case ok:
				m.HealthyOthers++
			}
		}()
	}
	wg.Wait()
	if m.Voting == 0 {
		return Members{}, fmt.Errorf("etcd member list: no voting member")
	}
	return m, nil
}

func (e *Etcd) post(ctx context.Context, url string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte("{}")))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}

// healthy asks a member's /health: {"health":"true"} with 200.
func (e *Etcd) healthy(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/health", nil)
	if err != nil {
		return false
	}
	resp, err := e.HTTP.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var h struct {
		Health string `json:"health"`
	}
	err = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&h)
	return err == nil && resp.StatusCode == http.StatusOK && h.Health == "true"
}
