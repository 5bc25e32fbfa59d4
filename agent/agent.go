// Package agent is certagent's loop: it watches the node, decides what to
// do with each certificate (package decide), renews (package renewal, and
// the injected CSR renewer), applies every result the same way, restarts,
// reports, and serves the status API. Each side effect is a small
// interface built in cmd/certagent: Restarter, Reporter, Recorder and
// renewal.CSRRenewer.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/canode"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/renewal"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/agent/state"
	"github.com/certagent/certagent/agent/watch"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Notifier tells the service manager how the agent is doing
// (systemd.Notifier in production).
type Notifier interface {
	Ready(status string) error
	Status(status string) error
	Watchdog() error
	Stopping() error
}

// Options configure an Agent.
type Options struct {
	Root *pki.Root
	// LoadConfig reads the configuration, with command-line overrides
	// applied; it is called at start and on every Reload.
	LoadConfig func() (*config.Config, error)
	// StateDir and Socket are host paths.
	StateDir, Socket string
	Clock            clock.WithTicker
	Log              *logrus.Logger
	Notifier         Notifier
	// Restarter restarts what uses renewed certificates (nil: nothing is
	// restarted, nor probed).
	Restarter Restarter
	Version   string
	// Watchdog is the unit's WatchdogSec (0: off); the loop pings at half.
	Watchdog time.Duration
	// Debounce waits for more file events before a rescan (default
	// 20ms; at most ten times that in a steady stream of events).
	Debounce time.Duration
	// MaxSleep is the longest the loop sleeps before it looks at the wall
	// clock again (default 1m), so a suspend never hides a deadline long.
	MaxSleep time.Duration
	// Hooks are passed to the renewal transactions (tests).
	Hooks rotate.Hooks
	// Group may read the status API (default "certagent").
	Group string
	// Metrics, when set, records scans, renewals and probes.
	Metrics Recorder
	// Reporter, when set, sends Events and the Node condition.
	Reporter Reporter
	// CSR renews through the cluster (nil: certificates the cluster issues
	// fail to renew, with the reason).
	CSR renewal.CSRRenewer
	// CARotation, when set, reads the cluster's CA rotation, which the
	// agent then carries out on this node (nil: none is ever followed).
	CARotation canode.Source
	// MemoryLimit, when set, is the process's soft memory limit on a node
	// with few certificates; after each full scan the loop lifts it while
	// the live heap is more than half of it, so that thousands of
	// certificates do not keep the GC running (0: the limit is left alone).
	MemoryLimit int64
}

// Restarter reloads what uses renewed certificates and compares what is
// served with the disk (restart.Restarter).
type Restarter interface {
	// Restart restarts, in order, what uses the renewed certificates and
	// returns those rolled back because their component did not come up.
	Restart(ctx context.Context, cfg *config.Config, renewed []restart.Renewed, ping func()) map[string]error
	// Check probes what every endpoint serves; mismatchSince keeps when a
	// mismatch was first seen per address.
	Check(ctx context.Context, cfg *config.Config, rep *inventory.Report, mismatchSince map[string]time.Time) []api.ComponentStatus
}

// Reporter tells the cluster (report.Reporter). It never blocks.
type Reporter interface {
	Event(typ, reason, message string)
	Condition(healthy bool, reason, message string)
	SetNode(node string)
	// Err says why nothing can be sent ("" when it can).
	Err() string
}

// Recorder keeps the metrics (metrics.Metrics).
type Recorder interface {
	Scanned(rep *inventory.Report, took time.Duration)
	Renewed(name, method string, at time.Time)
	Failed(method string)
	CSRWaited(d time.Duration)
	Served(comps []api.ComponentStatus)
}

// Agent is the long-running renewal loop. Everything not guarded by mu is
// owned by the loop goroutine.
type Agent struct {
	opts      Options
	cfg       *config.Config
	state     *state.Store
	watch     *watch.Watcher
	startedAt time.Time
	node      string
	nextPass  time.Time // when the loop must run a pass at the latest
	scanStart time.Time // when the latest full scan began: it saw every change before
	cache     *inventory.Cache
	lastPing  time.Time
	ready     bool                 // READY=1 was sent
	logged    map[string]string    // event kind + name -> serial it was logged for
	mismatch  map[string]time.Time // served-certificate mismatches, by address
	socket    fs.FileInfo          // the socket serve created, removed at shutdown only if still there

	kick   chan string
	reload chan struct{}
	renews chan renewCall

	csrJobs    map[string]string                // certificate -> CSR it waits for ("" until known); loop only
	csrWaiters map[string][]chan renewal.Result // renew requests waiting for a CSR job's end; loop only
	csrDone    chan renewal.Result
	csrPending chan csrUpdate

	ca        caRotation // loop only
	decisions decisions  // the previous pass's decisions; loop only
	kept      []string   // the names the latest Forget kept, in order; loop only
	// dirsOf is the latest certDirs: certificates and their directories.
	dirsOf struct {
		certs []*inventory.Certificate
		dirs  map[string]bool
	}
	// built is the latest status document's certificates and the renewal
	// statuses they were built from, in the same order; loop only.
	built struct {
		certs    []*api.CertStatus
		statuses []*api.RenewalStatus
	}

	mu        sync.Mutex // guards status, statusDoc and health
	status    *api.Status
	statusDoc *statusDoc // status encoded; nil until asked for
	encodeMu  sync.Mutex // one encoding of the status at a time; guards encoder
	encoder   statusEncoder
	health    api.Health
}

type renewCall struct {
	ctx   context.Context
	req   api.RenewRequest
	reply chan renewReply
}

type renewReply struct {
	out *renewal.Outcome
	err error
}

// New validates options and prepares an agent; Run starts it.
func New(opts Options) (*Agent, error) {
	if opts.Root == nil || opts.LoadConfig == nil || opts.Log == nil {
		return nil, errors.New("agent: Root, LoadConfig and Log are required")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	if opts.MaxSleep <= 0 {
		opts.MaxSleep = time.Minute
	}
	if opts.Group == "" {
		opts.Group = GroupName
	}
	if opts.Metrics == nil {
		opts.Metrics = nopRecorder{}
	}
	if opts.Reporter == nil {
		opts.Reporter = nopReporter{}
	}
	return &Agent{
		opts: opts, cache: inventory.NewCache(), kick: make(chan string, 1), reload: make(chan struct{}, 1), renews: make(chan renewCall),
		logged: map[string]string{}, mismatch: map[string]time.Time{}, csrJobs: map[string]string{},
		csrWaiters: map[string][]chan renewal.Result{}, csrDone: make(chan renewal.Result), csrPending: make(chan csrUpdate),
	}, nil
}

// Reload asks the loop to re-read the config and rescan (SIGHUP).
func (a *Agent) Reload() {
	select {
	case a.reload <- struct{}{}:
	default:
	}
}

// Rescan asks the loop for a pass.
func (a *Agent) Rescan(reason string) {
	select {
	case a.kick <- reason:
	default:
	}
}

// Renew runs a renewal request inside the loop, so that it never races
// the agent's own renewals.
func (a *Agent) Renew(ctx context.Context, req api.RenewRequest) (*renewal.Outcome, error) {
	c := renewCall{ctx: ctx, req: req, reply: make(chan renewReply, 1)}
	select {
	case a.renews <- c:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-c.reply:
		return r.out, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// StatusJSON returns the latest status document (nil before the first
// scan).
func (a *Agent) StatusJSON() []byte {
	if d := a.statusDocument(); d != nil {
		return d.bytes()
	}
	return nil
}

// statusDocument returns the latest status document, encoded on the
// first request after each pass (most passes are never asked for), and
// then only the certificates that changed since the previous encoding.
func (a *Agent) statusDocument() *statusDoc {
	a.encodeMu.Lock()
	defer a.encodeMu.Unlock()
	a.mu.Lock()
	s, doc := a.status, a.statusDoc
	a.mu.Unlock()
	if doc != nil || s == nil {
		return doc
	}
	doc, err := a.encoder.encode(s)
	if err != nil {
		a.opts.Log.WithField("REASON", err.Error()).Error("status encoding failed")
		return nil
	}
	a.mu.Lock()
	if a.status == s {
		a.statusDoc = doc
	}
	a.mu.Unlock()
	return doc
}

// Run runs the agent until ctx is done: the first full scan, then
// READY=1, then a pass on every change, deadline, request or resync.
func (a *Agent) Run(ctx context.Context) error {
	cfg, err := a.opts.LoadConfig()
	if err != nil {
		return err
	}
	a.cfg = cfg
	a.startedAt = a.opts.Clock.Now()
	a.node = cfg.Agent.NodeName
	if a.node == "" {
		a.node, _ = os.Hostname()
	}
	st, warn, err := state.Open(a.opts.StateDir, a.startedAt)
	if err != nil {
		return err
	}
	a.state = st
	if warn != nil {
		a.opts.Log.WithField("REASON", warn.Error()).Warn("state file corrupt, starting fresh")
		a.health.StateWarning = warn.Error()
	}
	if a.watch, err = watch.New(a.opts.Clock, a.opts.Debounce); err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer a.watch.Close()
	srv, err := a.serve()
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(sctx)
		cancel()
		removeSocket(a.opts.Socket, a.socket)
	}()

	// Before the first scan is published: finish or undo what a crash left,
	// so no pair stays mismatched until the next renewal falls due.
	a.repairAtStart(ctx)
	// Watch what the config names before the first scan, so that a change
	// during it is not missed.
	a.watch.Set(a.watchDirs(&inventory.Report{}))
	a.pass(ctx, "start", nil)
	if a.opts.Notifier != nil {
		a.opts.Notifier.Ready(a.summary())
	}
	a.ready = true
	a.opts.Log.WithFields(logrus.Fields{"SOCKET": a.opts.Socket, "VERSION": a.opts.Version}).Info("certagent started")
	for {
		wait := a.nextPass.Sub(a.opts.Clock.Now())
		if wait > a.opts.MaxSleep {
			wait = a.opts.MaxSleep
		}
		if wd := a.opts.Watchdog / 2; wd > 0 && wait > wd {
			wait = wd
		}
		stopTimer, fire := a.timer(wait)
		select {
		case <-ctx.Done():
			stopTimer()
			if a.opts.Notifier != nil {
				a.opts.Notifier.Stopping()
			}
			a.opts.Log.Info("certagent stopping")
			return a.state.Flush()
		case <-a.watch.C:
			a.changed(ctx)
		case reason := <-a.kick:
			a.pass(ctx, reason, nil)
		case <-a.reload:
			a.reloadConfig()
			a.pass(ctx, "reload", nil)
		case c := <-a.renews:
			a.renewRequested(ctx, c)
			a.pass(ctx, "renew request", nil)
		case u := <-a.csrPending:
			a.csrWaiting(u)
			a.pass(ctx, "CSR created", nil)
		case r := <-a.csrDone:
			a.csrFinished(ctx, r)
			a.pass(ctx, "CSR finished", nil)
		case <-fire:
			if !a.opts.Clock.Now().Before(a.nextPass) {
				a.pass(ctx, "timer", nil)
			}
		}
		stopTimer()
		a.ping()
	}
}

// changed runs a pass for the changes on disk the watcher reported: a
// scan of the changed paths alone, or of everything when the watcher
// cannot say which (an overflow, a watch that moved). Changes received
// before the latest full scan began are in it already (the agent's own
// renewal, scanned again right after): no pass for them.
func (a *Agent) changed(ctx context.Context) {
	ch := a.watch.Take(a.scanStart)
	switch {
	case ch.Empty():
	case ch.All:
		a.pass(ctx, "change on disk", nil)
	default:
		a.pass(ctx, "change on disk", &inventory.Changed{Paths: ch.Paths, Watched: ch.Watched})
	}
}

// timer arms the loop's wake-up after wait. A deadline already gone (the
// pass took longer than the time left) fires at once rather than through a
// timer set in the past, which a clock need not fire until it moves again.
func (a *Agent) timer(wait time.Duration) (stop func() bool, fire <-chan time.Time) {
	if wait > 0 {
		t := a.opts.Clock.NewTimer(wait)
		return t.Stop, t.C()
	}
	now := make(chan time.Time, 1)
	now <- a.opts.Clock.Now()
	return func() bool { return false }, now
}

// ping feeds the watchdog; it runs only from the loop, so a stuck loop
// stops the pings and systemd restarts the agent.
func (a *Agent) ping() {
	a.publishCoordination()
	if a.opts.Watchdog <= 0 || a.opts.Notifier == nil {
		return
	}
	now := a.opts.Clock.Now()
	if now.Sub(a.lastPing) >= a.opts.Watchdog/2 {
		a.opts.Notifier.Watchdog()
		a.lastPing = now
	}
}

func (a *Agent) reloadConfig() {
	cfg, err := a.opts.LoadConfig()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.health.ConfigError = err.Error()
		a.opts.Log.WithField("REASON", err.Error()).Error("config reload failed, keeping the old config")
		return
	}
	a.health.ConfigError = ""
	a.cfg = cfg
	a.opts.Log.Info("config reloaded")
}

// watchDirs lists the host directories whose changes matter.
func (a *Agent) watchDirs(rep *inventory.Report) []string {
	cfg, root := a.cfg, a.opts.Root
	set := map[string]bool{}
	add := func(node string) { set[root.HostPath(node)] = true }
	for _, d := range []string{cfg.KubernetesDir, cfg.PKIDir, path.Join(cfg.PKIDir, "etcd"), cfg.KubeletPKIDir} {
		add(d)
	}
	for _, p := range cfg.Paths {
		if strings.ContainsAny(p, "*?[") {
			add(path.Dir(p))
		} else if fi, err := os.Stat(root.HostPath(p)); err == nil && fi.IsDir() {
			add(p)
		} else {
			add(path.Dir(p))
		}
	}
	for d := range a.certDirs(rep.Certificates) {
		add(d)
	}
	for _, c := range rep.Authorities {
		add(path.Dir(c.Path))
		if c.ResolvedPath != "" {
			add(path.Dir(c.ResolvedPath))
		}
	}
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// certDirs returns the directories of certs' files: thousands of
// certificates share a few. When each certificate is the previous call's
// in its place, or has its paths, they are the previous call's.
func (a *Agent) certDirs(certs []*inventory.Certificate) map[string]bool {
	prev := a.dirsOf.certs
	same := a.dirsOf.dirs != nil && len(certs) == len(prev)
	for i := 0; same && i < len(certs); i++ {
		c, p := certs[i], prev[i]
		same = c == p || c.Path == p.Path && c.ResolvedPath == p.ResolvedPath
	}
	if !same {
		a.dirsOf.dirs = map[string]bool{}
		for _, c := range certs {
			a.dirsOf.dirs[path.Dir(c.Path)] = true
			if c.ResolvedPath != "" {
				a.dirsOf.dirs[path.Dir(c.ResolvedPath)] = true
			}
		}
	}
	a.dirsOf.certs = certs
	return a.dirsOf.dirs
}

// publish stores a new status document for the API (which encodes it
// when asked). s is not changed afterwards.
func (a *Agent) publish(s *api.Status) {
	a.mu.Lock()
	a.status, a.statusDoc = s, nil
	a.mu.Unlock()
}

func (a *Agent) healthSnapshot() api.Health {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.health
	h.Version, h.PID, h.StartedAt = a.opts.Version, os.Getpid(), a.startedAt.UTC()
	h.UptimeSeconds = int64(a.opts.Clock.Since(a.startedAt) / time.Second)
	h.WatchedDirs = a.watch.Watched()
	h.WatchErrors = a.watch.Errors()
	h.NoRestart = a.cfg.Agent.NoRestart
	h.ReportError = a.opts.Reporter.Err()
	h.Coordination = a.coordination()
	return h
}

// coordinationSource is a Restarter that says what a control-plane
// restart waits for (restart.Restarter).
type coordinationSource interface {
	Coordination() *api.CoordinationStatus
}

func (a *Agent) coordination() *api.CoordinationStatus {
	if c, ok := a.opts.Restarter.(coordinationSource); ok {
		return c.Coordination()
	}
	return nil
}

// publishCoordination republishes the status document when what a
// restart waits for changed: while a restart waits its turn, the loop runs
// no pass, and status must still say who holds the restart Lease.
func (a *Agent) publishCoordination() {
	now := a.coordination()
	a.mu.Lock()
	s := a.status
	a.mu.Unlock()
	if s == nil || sameCoordination(s.Daemon.Coordination, now) {
		return
	}
	cp := *s
	cp.Daemon.Coordination = now
	a.publish(&cp)
}

func sameCoordination(a, b *api.CoordinationStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Component == b.Component && a.State == b.State && a.Holder == b.Holder && a.Reason == b.Reason && a.Since.Equal(b.Since)
}

// summary is the one-line STATUS= text.
func (a *Agent) summary() string {
	a.mu.Lock()
	s := a.status
	a.mu.Unlock()
	if s == nil {
		return "starting"
	}
	var next *api.CertStatus
	failed := 0
	for _, c := range s.Certificates {
		if c.Renewal.State == api.StateFailed {
			failed++
		}
		if c.Renewal.NextAction != "none" && c.Renewal.NextActionAt != nil && (next == nil || c.Renewal.NextActionAt.Before(*next.Renewal.NextActionAt)) {
			next = c
		}
	}
	out := fmt.Sprintf("%d certs", len(s.Certificates))
	if next != nil {
		out += fmt.Sprintf(", next renewal %s in %s", next.Name, inventory.Human(next.Renewal.NextActionAt.Sub(a.opts.Clock.Now())))
	}
	if failed > 0 {
		out += fmt.Sprintf(", %d failed", failed)
	}
	if n := len(s.Problems); n > 0 {
		out += fmt.Sprintf(", %d problems", n)
	}
	return out
}
