// Package api holds the wire types of certagent's local API and of
// `certagent status -o json` (apiVersion certagent.io/v1alpha1): the status
// document, the renew request and its answer. It has no behaviour beyond
// printing them, so the status client links nothing of the daemon.
package api

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certagent/certagent/agent/inventory"
)

// Agent states of a certificate, as `certagent status` shows them.
const (
	StateOK        = "ok"                // nothing due
	StateScheduled = "renewal-scheduled" // inside its renewal window, renewal at NextActionAt
	StateRenewing  = "renewing"          // a renewal is running
	StateFailed    = "failed"            // the last attempt failed; retry at NextActionAt
	StateExpired   = "expired"           // expired and not being renewed here
)

// Status is what `certagent status -o json` prints: the same document as
// `certagent check -o json`, each certificate with a "renewal" object, and
// the daemon's health.
type Status struct {
	Kind         string                   `json:"kind"`
	APIVersion   string                   `json:"apiVersion"`
	ScannedAt    time.Time                `json:"scannedAt"`
	Root         string                   `json:"root"`
	Certificates []*CertStatus            `json:"certificates"`
	Authorities  []*inventory.Certificate `json:"authorities"`
	KeyPairs     []*inventory.KeyPair     `json:"keyPairs"`
	Problems     []inventory.Problem      `json:"problems"`
	Daemon       Health                   `json:"daemon"`
	// CARotation is this node's part in a CA rotation (absent when the
	// cluster has none).
	CARotation *CARotationStatus `json:"caRotation,omitempty"`
}

// CA rotation states of a node.
const (
	RotationInProgress = "in-progress"
	RotationDone       = "done"
	RotationBlocked    = "blocked"
)

// CARotationStatus is a node's part in a CA rotation (`certagent ca
// rotate`): the phase the cluster asks for, where the node is, and what
// is left on it.
type CARotationStatus struct {
	CA string `json:"ca"` // ca, etcd-ca or front-proxy-ca
	ID string `json:"id"` // SHA-256 of the new CA certificate
	// Phase is the cluster's (the ConfigMap's); NodePhase this node's.
	Phase     string `json:"phase"`
	NodePhase string `json:"nodePhase"`
	// State is in-progress, done or blocked (NodePhase).
	State string    `json:"state"`
	Since time.Time `json:"since"`
	// Left is what remains on this node; Blocked says why it cannot go on.
	Left    []string `json:"left,omitempty"`
	Blocked string   `json:"blocked,omitempty"`
}

// line is the rotation's line in the table.
func (r *CARotationStatus) line(now time.Time) string {
	out := fmt.Sprintf("ca rotation: %s %s (cluster %s), node %s %s for %s", r.CA, short(r.ID), r.Phase, r.NodePhase, r.State, inventory.Human(now.Sub(r.Since)))
	switch {
	case r.Blocked != "":
		out += ": " + r.Blocked
	case len(r.Left) > 0:
		out += fmt.Sprintf("; left: %s", strings.Join(r.Left, ", "))
	}
	return out
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// CertStatus is a certificate as check reports it, plus what the agent
// does with it.
type CertStatus struct {
	*inventory.Certificate
	Renewal RenewalStatus `json:"renewal"`
}

// RenewalStatus is the agent's view of one certificate.
type RenewalStatus struct {
	State string `json:"state"`
	// NextAction is "renew", "retry" or "none"; Reason says why.
	NextAction string `json:"nextAction"`
	// PendingCSR is the CertificateSigningRequest a renewal waits for.
	PendingCSR   string     `json:"pendingCSR,omitempty"`
	NextActionAt *time.Time `json:"nextActionAt,omitempty"`
	Reason       string     `json:"reason,omitempty"`
	Failures     int        `json:"failures,omitempty"`
	LastAttempt  *time.Time `json:"lastAttempt,omitempty"`
	LastError    string     `json:"lastError,omitempty"`
	LastRenewal  *time.Time `json:"lastRenewal,omitempty"`
	LastResult   string     `json:"lastResult,omitempty"`
}

// Health is the daemon's own state.
type Health struct {
	Version       string    `json:"version"`
	PID           int       `json:"pid"`
	StartedAt     time.Time `json:"startedAt"`
	UptimeSeconds int64     `json:"uptimeSeconds"`
	// LastScan is nil (and absent from the JSON) before the first scan
	// finished.
	LastScan        *time.Time `json:"lastScan,omitempty"`
	LastScanReason  string     `json:"lastScanReason"`
	LastScanSeconds float64    `json:"lastScanSeconds"`
	Scans           int64      `json:"scans"`
	WatchedDirs     []string   `json:"watchedDirs"`
	WatchErrors     []string   `json:"watchErrors"`
	ConfigError     string     `json:"configError,omitempty"`
	StateWarning    string     `json:"stateWarning,omitempty"`
	NoRestart       bool       `json:"noRestart"`
	// ReportError says why Events and the Node condition cannot be sent
	// (the kubeconfig's credential was refused, or a file is missing).
	ReportError string `json:"reportError,omitempty"`
	// LastCSR is the most recent renewal through the Kubernetes API.
	LastCSR *CSRRecord `json:"lastCSR,omitempty"`
	// Components: per component, the last restart and whether what it
	// serves matches the disk.
	Components []ComponentStatus `json:"components,omitempty"`
	// Coordination, while a control-plane restart waits for its turn or
	// holds the cluster's restart Lease, says who holds it and why.
	Coordination *CoordinationStatus `json:"coordination,omitempty"`
}

// ComponentStatus is what `status` shows per component.
type ComponentStatus struct {
	Name string `json:"name"`
	// LastRestart is when the component was last restarted, or confirmed
	// to have loaded changed files by itself (LastAction), and LastResult
	// "ok" or "failed: ...".
	LastRestart *time.Time `json:"lastRestart,omitempty"`
	LastResult  string     `json:"lastResult,omitempty"`
	// LastAction is ActionRestart or ActionReload.
	LastAction string         `json:"lastAction,omitempty"`
	Served     []ServedStatus `json:"served,omitempty"`
}

// The LastAction of a ComponentStatus.
const (
	// ActionRestart: certagent restarted the component.
	ActionRestart = "restart"
	// ActionReload: the component showed that it loaded the changed files
	// by itself; it was not restarted.
	ActionReload = "reload"
)

// CoordinationStatus is a control-plane restart waiting for, or holding,
// the cluster-wide restart Lease.
type CoordinationStatus struct {
	// Component is the static pod to restart.
	Component string `json:"component"`
	// State is "waiting" (another node holds the Lease, or a check says
	// not yet), "holding" (this node restarts now) or "api-down-delay"
	// (no Lease can be had: a per-node delay before a local restart).
	State string `json:"state"`
	// Holder and HolderSince: the Lease's holder and its acquireTime.
	Holder      string     `json:"holder,omitempty"`
	HolderSince *time.Time `json:"holderSince,omitempty"`
	// Reason says why it waits.
	Reason string `json:"reason,omitempty"`
	// Since is when this state began; Until, for the delay, when it ends.
	Since time.Time  `json:"since"`
	Until *time.Time `json:"until,omitempty"`
}

// ServedStatus compares what an endpoint serves with the disk.
type ServedStatus struct {
	Address      string `json:"address"`
	Certificate  string `json:"certificate"`
	DiskSerial   string `json:"diskSerial"`
	ServedSerial string `json:"servedSerial,omitempty"`
	// State is "match", "mismatch" (recent: a restart may be under way),
	// "stale" (mismatch for longer than restart.staleAfter) or
	// "not-serving".
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// CSRRecord describes one finished CSR renewal.
type CSRRecord struct {
	Name     string  `json:"name"`
	Method   string  `json:"method"`
	Seconds  float64 `json:"seconds"`
	Requests int64   `json:"requests"`
	Error    string  `json:"error,omitempty"`
}

// ExitCode is check's exit code over the same certificates.
func (s *Status) ExitCode() int {
	rep := &inventory.Report{Authorities: s.Authorities, KeyPairs: s.KeyPairs, Problems: s.Problems}
	for _, c := range s.Certificates {
		rep.Certificates = append(rep.Certificates, c.Certificate)
	}
	return rep.ExitCode()
}

// WriteTable prints the status for a person.
func (s *Status) WriteTable(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tEXPIRES\tRESIDUAL\tSTATE\tNEXT\tWHEN\tLAST RENEWAL")
	for _, c := range s.Certificates {
		r := c.Renewal
		when := "-"
		if r.NextActionAt != nil {
			when = relative(r.NextActionAt.Sub(now))
		}
		last := "-"
		if r.LastRenewal != nil {
			last = r.LastRenewal.Local().Format("2006-01-02 15:04") + " " + firstWord(r.LastResult)
		} else if r.LastError != "" {
			last = "failed: " + r.LastError
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.NotAfter.Format(dateFmt),
			inventory.Human(time.Duration(c.ResidualSeconds)*time.Second), r.State, r.NextAction, when, last)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "problem: %s: %s\n", p.Path, p.Error)
	}
	d := s.Daemon
	scan := "no scan finished yet"
	if d.LastScan != nil && !d.LastScan.IsZero() {
		scan = fmt.Sprintf("last scan %s ago (%s, %.3fs)", inventory.Human(now.Sub(*d.LastScan)), d.LastScanReason, d.LastScanSeconds)
	}
	fmt.Fprintf(w, "\ndaemon %s (pid %d): up %s, %s, %d scans, watching %d directories\n",
		d.Version, d.PID, inventory.Human(now.Sub(d.StartedAt)), scan, d.Scans, len(d.WatchedDirs))
	for _, c := range d.Components {
		line := "component " + c.Name + ":"
		if c.LastRestart != nil {
			verb := "restarted"
			if c.LastAction == ActionReload {
				verb = "reloaded by itself"
			}
			line += fmt.Sprintf(" %s %s (%s);", verb, c.LastRestart.Local().Format("2006-01-02 15:04:05"), c.LastResult)
		}
		for _, sv := range c.Served {
			line += fmt.Sprintf(" %s serves %s: %s", sv.Address, sv.Certificate, sv.State)
		}
		fmt.Fprintln(w, line)
	}
	if c := d.Coordination; c != nil {
		fmt.Fprintln(w, c.line(now))
	}
	if r := s.CARotation; r != nil {
		fmt.Fprintln(w, r.line(now))
	}
	for _, e := range d.WatchErrors {
		fmt.Fprintf(w, "watch error: %s\n", e)
	}
	if d.ConfigError != "" {
		fmt.Fprintf(w, "config error (old config kept): %s\n", d.ConfigError)
	}
	if d.ReportError != "" {
		fmt.Fprintf(w, "not reporting to the cluster: %s\n", d.ReportError)
	}
	if d.StateWarning != "" {
		fmt.Fprintf(w, "state: %s\n", d.StateWarning)
	}
	return nil
}

const dateFmt = "Jan 02, 2006 15:04 MST"

func relative(d time.Duration) string {
	if d <= 0 {
		return "now"
	}
	return "in " + inventory.Human(d)
}

func firstWord(s string) string {
	for i, r := range s {
		if r == ' ' || r == ':' {
			return s[:i]
		}
	}
	return s
}

// line is the coordination's line in the table.
func (c *CoordinationStatus) line(now time.Time) string {
	out := fmt.Sprintf("restart lock: %s %s for %s", c.Component, c.State, inventory.Human(now.Sub(c.Since)))
	if c.Holder != "" {
		out += "; Lease held by " + c.Holder
		if c.HolderSince != nil {
			out += " since " + c.HolderSince.Local().Format("2006-01-02 15:04:05")
		}
	}
	if c.Until != nil {
		out += "; until " + c.Until.Local().Format("2006-01-02 15:04:05")
	}
	if c.Reason != "" {
		out += ": " + c.Reason
	}
	return out
}
