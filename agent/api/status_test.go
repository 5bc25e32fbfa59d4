package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestStatusBeforeFirstScan: a status published before the first scan
// finished (the first pass renews something) says so, in the table and in
// the JSON, instead of a scan in year 1 ("292y ago").
func TestStatusBeforeFirstScan(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		lastScan  *time.Time
		wantTable string
		wantJSON  bool
	}{
		{name: "no scan yet", wantTable: "no scan finished yet"},
		{name: "scanned", lastScan: ptr(now.Add(-90 * time.Second)), wantTable: "ago (start, ", wantJSON: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Status{Daemon: Health{StartedAt: now.Add(-time.Minute), LastScan: tc.lastScan, LastScanReason: "start"}}
			var b bytes.Buffer
			if err := s.WriteTable(&b, now); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(b.String(), tc.wantTable) || strings.Contains(b.String(), "292y") {
				t.Errorf("table:\n%s\nwant %q", b.String(), tc.wantTable)
			}
			data, _ := json.Marshal(s)
			var doc struct {
				Daemon map[string]any `json:"daemon"`
			}
			json.Unmarshal(data, &doc)
			if _, has := doc.Daemon["lastScan"]; has != tc.wantJSON || strings.Contains(fmt.Sprint(doc.Daemon), "0001-01-01") {
				t.Errorf("JSON lastScan present %v, want %v: %s", has, tc.wantJSON, data)
			}
		})
	}
}

func ptr(t time.Time) *time.Time { return &t }

// TestStatusCoordination: a restart waiting its turn shows, in the table
// and in daemon.coordination, who holds the restart Lease and since when.
func TestStatusCoordination(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	since := now.Add(-2 * time.Minute)
	s := &Status{Daemon: Health{StartedAt: now.Add(-time.Hour), Coordination: &CoordinationStatus{
		Component: "etcd", State: "waiting", Holder: "cp-2", HolderSince: &since, Reason: "another node holds the restart Lease", Since: now.Add(-time.Minute)}}}
	var b bytes.Buffer
	if err := s.WriteTable(&b, now); err != nil {
		t.Fatal(err)
	}
	want := "restart lock: etcd waiting for 60s; Lease held by cp-2 since " + since.Local().Format("2006-01-02 15:04:05") + ": another node holds"
	if !strings.Contains(b.String(), want) {
		t.Errorf("table:\n%s\nwant %q", b.String(), want)
	}
	data, _ := json.Marshal(s)
	for _, f := range []string{`"coordination":{"component":"etcd","state":"waiting","holder":"cp-2","holderSince":"2029-12-31T23:58:00Z"`} {
		if !strings.Contains(string(data), f) {
			t.Errorf("JSON lacks %s:\n%s", f, data)
		}
	}
	s.Daemon.Coordination = nil
	if data, _ = json.Marshal(s); strings.Contains(string(data), "coordination") {
		t.Errorf("coordination in the JSON while nothing waits:\n%s", data)
	}
}

// TestCARotationLine: a rotation is one table line and a caRotation
// object; without one, neither.
func TestCARotationLine(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &Status{Daemon: Health{StartedAt: now}}
	var b bytes.Buffer
	s.WriteTable(&b, now)
	data, _ := json.Marshal(s)
	if strings.Contains(b.String(), "ca rotation") || strings.Contains(string(data), "caRotation") {
		t.Fatalf("a rotation shown without one:\n%s\n%s", b.String(), data)
	}
	s.CARotation = &CARotationStatus{CA: "ca", ID: "0123456789abcdef", Phase: "reissue", NodePhase: "reissue", State: RotationInProgress,
		Since: now.Add(-90 * time.Second), Left: []string{"restart kubelet"}}
	b.Reset()
	s.WriteTable(&b, now)
	if want := "ca rotation: ca 0123456789ab (cluster reissue), node reissue in-progress for 90s; left: restart kubelet\n"; !strings.Contains(b.String(), want) {
		t.Errorf("table:\n%s\nwant %q", b.String(), want)
	}
	data, _ = json.Marshal(s)
	for _, f := range []string{`"caRotation":{"ca":"ca"`, `"nodePhase":"reissue"`, `"state":"in-progress"`, `"left":["restart kubelet"]`} {
		if !strings.Contains(string(data), f) {
			t.Errorf("JSON lacks %s: %s", f, data)
		}
	}
}
