package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent"
	"github.com/certagent/certagent/agent/client"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/csrrenew"
	"github.com/certagent/certagent/agent/kubeclient"
	"github.com/certagent/certagent/agent/metrics"
	"github.com/certagent/certagent/agent/report"
	"github.com/certagent/certagent/agent/restart"
	"github.com/certagent/certagent/systemd"
)

// agentFlags are the flags of `certagent run` that override the config.
type agentFlags struct {
	socket, stateDir, renewBefore, logLevel, metricsAddress string
	noRestart                                               bool
	metricsSet                                              bool
	// renewBeforeDuration is --renew-before parsed (checked as the flag is set).
	renewBeforeDuration time.Duration
}

func newRunCommand(g *globalFlags) *cobra.Command {
	f := &agentFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent: watch, schedule, renew, serve status (the systemd service)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.metricsSet = cmd.Flags().Changed("metrics-address")
			return runAgent(cmd.Context(), g, f)
		},
	}
	cmd.Flags().StringVar(&f.socket, "socket", "", "status API socket (default agent.socket below --root: /run/certagent/certagent.sock)")
	cmd.Flags().StringVar(&f.stateDir, "state-dir", "", "state directory (default agent.stateDir below --root: /var/lib/certagent)")
	cmd.Flags().Var(newDurationFlag(&f.renewBeforeDuration, &f.renewBefore, config.RenewBeforeBounds), "renew-before", "renew this long before expiry instead of at a jittered 70-90 % of the lifetime (720h, 30d, 1d12h; at most 100y)")
	cmd.Flags().BoolVar(&f.noRestart, "no-restart", false, "never restart services after a renewal (sandboxes, the demo)")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "debug, info, warning or error")
	cmd.Flags().StringVar(&f.metricsAddress, "metrics-address", "", "serve Prometheus /metrics on HOST:PORT (default agent.metricsAddress, 127.0.0.1:9795); empty turns it off")
	return cmd
}

// loader returns the config loader the agent calls at start and on SIGHUP,
// with the command-line overrides applied each time.
func (f *agentFlags) loader(g *globalFlags) func() (*config.Config, error) {
	return func() (*config.Config, error) {
		_, cfg, err := g.load()
		if err != nil {
			return nil, err
		}
		if f.renewBefore != "" {
			cfg.RenewBefore, cfg.RenewBeforeDuration = f.renewBefore, f.renewBeforeDuration
		}
		if f.noRestart {
			cfg.Agent.NoRestart = true
		}
		cfg.Agent.StateHostDir = f.stateDir
		return cfg, nil
	}
}

func runAgent(ctx context.Context, g *globalFlags, f *agentFlags) error {
	log := logrus.New()
	systemd.SetupLogging(log, "certagent")
	lvl, err := logrus.ParseLevel(f.logLevel)
	if err != nil {
		return &exitError{code: ExitUsage, err: fmt.Errorf("--log-level: %w", err)}
	}
	log.SetLevel(lvl)
	load := f.loader(g)
	root, _, err := g.load()
	if err != nil {
		return err
	}
	cfg, err := load()
	if err != nil {
		return &exitError{code: ExitUsage, err: err}
	}
	// Paths from the config lie inside the root: their directories are
	// resolved there (a link in an untrusted root cannot point the daemon's
	// writes at the host). Paths given as flags are the operator's own.
	socket, stateDir := f.socket, f.stateDir
	if socket == "" {
		dir, err := root.HostDir(path.Dir(cfg.Agent.Socket), 0o755)
		if err != nil {
			return fmt.Errorf("socket directory: %w", err)
		}
		socket = filepath.Join(dir, path.Base(cfg.Agent.Socket))
	}
	if stateDir == "" {
		if stateDir, err = root.HostDir(cfg.Agent.StateDir, 0o700); err != nil {
			return fmt.Errorf("state directory: %w", err)
		}
	}
	metricsAddr := "127.0.0.1:9795"
	if cfg.Agent.MetricsAddress != nil {
		metricsAddr = *cfg.Agent.MetricsAddress
	}
	if f.metricsSet {
		metricsAddr = f.metricsAddress
	}
	restarter := &restart.Restarter{Root: root, Units: systemd.Units{}, Clock: clock.RealClock{}, Log: log}
	restarter.Gate = &restartGate{root: root, restarter: restarter, log: log}
	opts := agent.Options{
		Root: root, LoadConfig: load, StateDir: stateDir, Socket: socket,
		Clock: clock.RealClock{}, Log: log, Notifier: testNotifier(systemd.Notifier{}), Version: version,
		Watchdog: systemd.WatchdogInterval(), Group: cfg.Agent.Group,
		Restarter:  restarter,
		CSR:        csrrenew.Renewer{Root: root, Client: kubeclient.ForCSR(root), Hooks: testHooks()},
		Hooks:      testHooks(),
		CARotation: kubeclient.CARotation{Root: root, Kubeconfig: cfg.Kubelet.Kubeconfig},
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		opts.MemoryLimit = softMemoryLimit
	}
	if metricsAddr != "" {
		m := metrics.New()
		m.SetVersion(version)
		opts.Metrics = m
		// Renewals matter more than metrics: a taken port is logged, not fatal.
		if srv, err := metrics.Serve(metricsAddr, m); err != nil {
			log.WithField("REASON", err.Error()).Error("cannot serve metrics")
		} else {
			defer srv.Close()
		}
	}
	if cfg.Agent.ReportToCluster == nil || *cfg.Agent.ReportToCluster {
		r := report.New(kubeclient.ForReport(root, cfg.Kubelet.Kubeconfig), cfg.Kubelet.Kubeconfig, log)
		opts.Reporter = r
		go r.Run(ctx)
	}
	a, err := agent.New(opts)
	if err != nil {
		return &exitError{code: ExitUsage, err: err}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				log.Info("SIGHUP: reloading config")
				a.Reload()
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := a.Run(ctx); err != nil {
		log.WithField("REASON", err.Error()).Error("certagent failed")
		return &exitError{code: 1, err: err}
	}
	return nil
}

func newStatusCommand(g *globalFlags) *cobra.Command {
	var output, socket string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Ask the running agent for every certificate's state and its own health",
		Long: `status queries the running agent over its socket. Exit codes are check's
(0 healthy, 1 renewal due, 2 broken), 3 when the daemon cannot be reached,
4 for bad flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if socket == "" {
				root, cfg, err := g.load()
				if err != nil {
					return err
				}
				if socket, err = root.HostFile(cfg.Agent.Socket); err != nil {
					return &exitError{code: ExitUnreachable, err: err}
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			s, err := client.New(socket).Status(ctx)
			if err != nil {
				return &exitError{code: ExitUnreachable, err: err}
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				err = jsonEncoder(out).Encode(s)
			case "yaml":
				err = writeYAML(out, func(w io.Writer) error { return jsonEncoder(w).Encode(s) })
			default:
				err = s.WriteTable(out, time.Now())
			}
			if err != nil {
				return &exitError{code: ExitUsage, err: err}
			}
			if code := s.ExitCode(); code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	cmd.Flags().StringVar(&socket, "socket", "", "the agent's socket (default agent.socket below --root)")
	return cmd
}

// ExitUnreachable: `certagent status` could not reach the daemon.
const ExitUnreachable = 3
