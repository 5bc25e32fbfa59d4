package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestOutputYAML: -o yaml is the -o json document, field for field, for
// check and status.
func TestOutputYAML(t *testing.T) {
	dir := t.TempDir()
	if _, err := (pkitest.Layout{}).Write(dir); err != nil {
		t.Fatal(err)
	}
	status := `{"kind":"AgentStatus","apiVersion":"certagent.io/v1alpha1","certificates":[{"name":"apiserver","notAfter":"2030-01-01T00:00:00Z","renewal":{"state":"ok","nextAction":"none"}}],"daemon":{"version":"x","pid":1,"startedAt":"2030-01-01T00:00:00Z","scans":0}}`
	sock := serveStatus(t, status)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{name: "check", args: []string{"check", "--root", dir}},
		{name: "status", args: []string{"status", "--socket", sock}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, code := execute(t, append(tc.args, "-o", "json")...)
			ys, ycode := execute(t, append(tc.args, "-o", "yaml")...)
			if code != ycode {
				t.Fatalf("exit %d with json, %d with yaml", code, ycode)
			}
			var fromJSON, fromYAML any
			if err := json.Unmarshal([]byte(js), &fromJSON); err != nil {
				t.Fatalf("json: %v\n%s", err, js)
			}
			if err := yaml.Unmarshal([]byte(ys), &fromYAML); err != nil {
				t.Fatalf("yaml: %v\n%s", err, ys)
			}
			if strings.HasPrefix(strings.TrimSpace(ys), "{") {
				t.Fatalf("not YAML:\n%s", ys)
			}
			// Two scans: only the scan time and what derives from it move.
			strip(fromJSON)
			strip(fromYAML)
			if !reflect.DeepEqual(fromJSON, fromYAML) {
				t.Fatalf("documents differ:\njson %.2000v\nyaml %.2000v", fromJSON, fromYAML)
			}
		})
	}
}

// serveStatus answers GET /v1/status on a unix socket with body.
func serveStatus(t *testing.T, body string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// strip removes the fields that change from one scan to the next.
func strip(v any) {
	switch x := v.(type) {
	case map[string]any:
		delete(x, "scannedAt")
		delete(x, "residualSeconds")
		for _, e := range x {
			strip(e)
		}
	case []any:
		for _, e := range x {
			strip(e)
		}
	}
}
