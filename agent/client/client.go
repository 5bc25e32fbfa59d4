// Package client talks to a running certagent over its unix socket: the
// status document, renew requests and rescans. It imports only the wire
// types (agent/api), so `certagent status` does not link the daemon.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/certagent/certagent/agent/api"
)

// Client talks to a running agent over its socket.
type Client struct {
	socket string
	http   *http.Client
}

// ErrUnreachable means no agent answered on the socket.
var ErrUnreachable = errors.New("certagent daemon not reachable")

// New returns a client for the socket at path.
func New(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{socket: path, http: &http.Client{Transport: tr, Timeout: 4 * time.Minute}}
}

// APIError is a refusal from the agent, such as a non-root renew.
type APIError struct {
	Code int
	Msg  string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("certagent daemon: %s (HTTP %d)", e.Msg, e.Code)
}

func (c *Client) do(ctx context.Context, method, p string, body, out any) error {
	var rd *strings.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	} else {
		rd = strings.NewReader("")
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://certagent"+p, rd)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %v", ErrUnreachable, c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		return &APIError{Code: resp.StatusCode, Msg: e.Error}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status fetches the status document.
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var s api.Status
	if err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Renew asks the agent to renew. A renewal through a CSR may wait for an
// approval for as long as its timeout: ctx, not the client's 4 minutes,
// bounds the call.
func (c *Client) Renew(ctx context.Context, req api.RenewRequest) (*api.RenewResponse, error) {
	var o api.RenewResponse
	long := *c.http
	long.Timeout = 0
	if err := (&Client{socket: c.socket, http: &long}).do(ctx, http.MethodPost, "/v1/renew", req, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// Rescan asks the agent for a pass.
func (c *Client) Rescan(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/rescan", struct{}{}, nil)
}

// Reachable reports whether an agent answers on the socket.
func (c *Client) Reachable() bool {
	conn, err := net.DialTimeout("unix", c.socket, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
