package main

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent"
	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/client"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/rotate/pki"
)

func newDemoCommand() *cobra.Command {
	var dir string
	var keep, checkOnly bool
	var lifetime time.Duration
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Build a sandbox node PKI in a temp dir, check it, then run the agent on it live (no cluster, no root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if dir == "" {
				d, err := os.MkdirTemp("", "certagent-demo-")
				if err != nil {
					return err
				}
				dir = d
				if !keep {
					defer os.RemoveAll(d)
				}
			}
			now := time.Now()
			ca, err := writeSandbox(dir, now)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "Sandbox node PKI in %s: a kubeadm layout with 1-year leaves,\n", dir)
			fmt.Fprintln(out, "apiserver due in 20 days, front-proxy-client expired yesterday, one broken file.")
			fmt.Fprintf(out, "\n$ certagent check --root %s\n\n", dir)
			root, err := pki.NewRoot(dir)
			if err != nil {
				return err
			}
			rep, err := inventory.Scan(cmd.Context(), inventory.Options{Root: root})
			if err != nil {
				return err
			}
			if err := rep.WriteTable(out); err != nil {
				return err
			}
			fmt.Fprintf(out, "\n(check exits %d here: 2 means something is expired or broken.)\n", rep.ExitCode())
			if !checkOnly {
				if err := demoAgent(cmd.Context(), out, root, ca, lifetime); err != nil {
					return err
				}
			}
			if keep {
				fmt.Fprintf(out, "\nKept %s; try: certagent check --root %s -o json\n", dir, dir)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "write the sandbox here instead of a temp dir (kept)")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temp dir")
	cmd.Flags().BoolVar(&checkOnly, "check-only", false, "stop after the check; do not start the agent")
	lifetime = 20 * time.Second
	cmd.Flags().Var(newDurationFlag(&lifetime, nil, config.Bounds{Min: time.Second, Max: time.Hour}), "webhook-lifetime", "lifetime of the short-lived certificate the agent renews live (1s to 1h)")
	return cmd
}

// writeSandbox writes the demo's node PKI: a kubeadm control-plane layout
// with a kubelet store, some certificates near expiry, one expired and one
// broken file.
func writeSandbox(dir string, now time.Time) (*sandboxCA, error) {
	ca, err := (&sandbox{dir: dir, now: now, notAfter: map[string]time.Time{
		"apiserver":          now.Add(20 * 24 * time.Hour),
		"front-proxy-client": now.Add(-24 * time.Hour),
		"admin.conf":         now.Add(60 * 24 * time.Hour),
	}}).write()
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	broken := filepath.Join(dir, "etc/kubernetes/pki/custom-webhook.crt")
	return ca, os.WriteFile(broken, []byte("-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3\n"), 0o644)
}

// demoAgent runs the agent in-process on the sandbox and shows it at work:
// due certificates renewed at start, a manual change noticed at once, and
// a short-lived certificate renewed at its jittered point.
func demoAgent(ctx context.Context, out io.Writer, root *pki.Root, ca *sandboxCA, lifetime time.Duration) error {
	dir := root.Dir()
	fmt.Fprintf(out, "\n$ certagent run --root %s --no-restart   (in the background)\n\n", dir)
	log := logrus.New()
	log.SetOutput(out)
	log.SetFormatter(&demoFormatter{})
	cfgText := "apiVersion: certagent.io/v1alpha1\nkind: AgentConfiguration\npaths: [/opt/webhook]\nrenewal: {localCAPaths: [/opt/webhook/*.crt]}\nagent: {noRestart: true, resyncInterval: 5s}\n"
	a, err := agent.New(agent.Options{ // --no-restart, no cluster: no restarter, reporter or CSR renewer
		Root: root, LoadConfig: func() (*config.Config, error) { return config.Parse([]byte(cfgText)) },
		StateDir: filepath.Join(dir, "var/lib/certagent"), Socket: filepath.Join(dir, "run/certagent/certagent.sock"),
		Clock: clock.RealClock{}, Log: log, Version: version,
	})
	if err != nil {
		return err
	}
	// A webhook certificate that lives only seconds: the agent schedules
	// it at 70-90 % of that and renews it while you watch.
	if err := writeWebhook(dir, ca, lifetime); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c := client.New(filepath.Join(dir, "run/certagent/certagent.sock"))
	var s *api.Status
	for i := 0; i < 100 && s == nil; i++ {
		time.Sleep(50 * time.Millisecond)
		s, _ = c.Status(ctx)
	}
	if s == nil {
		return fmt.Errorf("demo: the agent did not come up")
	}
	fmt.Fprintf(out, "\n$ certagent status --root %s\n\n", dir)
	s.WriteTable(out, time.Now())

	fmt.Fprintf(out, "\nWatching /opt/webhook/webhook.crt (lifetime %s) until the agent renews it...\n", lifetime)
	first := serialOf(s, "/opt/webhook/webhook.crt")
	deadline := time.Now().Add(3 * lifetime)
	for i := 0; time.Now().Before(deadline); i++ {
		time.Sleep(time.Second)
		s, err = c.Status(ctx)
		if err != nil {
			return err
		}
		changed := serialOf(s, "/opt/webhook/webhook.crt") != first
		for _, cs := range s.Certificates {
			if cs.Name == "/opt/webhook/webhook.crt" && (i%4 == 0 || changed) {
				when := "-"
				if cs.Renewal.NextActionAt != nil {
					when = time.Until(*cs.Renewal.NextActionAt).Round(time.Second).String()
				}
				fmt.Fprintf(out, "  %s  serial %s  expires in %s  state %s  next %s in %s\n", time.Now().Format("15:04:05"),
					cs.Serial, time.Until(cs.NotAfter).Round(time.Second), cs.Renewal.State, cs.Renewal.NextAction, when)
			}
		}
		if serialOf(s, "/opt/webhook/webhook.crt") != first {
			fmt.Fprintln(out, "\nRenewed live. Final status:")
			fmt.Fprintln(out)
			return s.WriteTable(out, time.Now())
		}
	}
	return fmt.Errorf("demo: the webhook certificate was not renewed in time")
}

func writeWebhook(dir string, ca *sandboxCA, lifetime time.Duration) error {
	now := time.Now()
	s := &sandbox{dir: dir, now: now}
	c, k := s.issue(ca, x509.Certificate{Subject: pkix.Name{CommonName: "webhook.kube-system.svc"}, DNSNames: []string{"webhook.kube-system.svc"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotBefore: now, NotAfter: now.Add(lifetime)})
	s.file("opt/webhook/webhook.key", s.keyPEM(k), 0o600)
	s.file("opt/webhook/webhook.crt", pki.EncodeCertPEM(c), 0o644)
	return s.err
}

func serialOf(s *api.Status, name string) string {
	for _, c := range s.Certificates {
		if c.Name == name {
			return c.Serial
		}
	}
	return ""
}

// demoFormatter prints agent events as one short line each.
type demoFormatter struct{}

func (demoFormatter) Format(e *logrus.Entry) ([]byte, error) {
	if e.Message == "renewal scheduled" {
		return nil, nil // one per certificate: too chatty for the demo
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  [agent] %s", e.Message)
	for _, k := range []string{"CERT_NAME", "NEW_SERIAL", "REASON"} {
		if v, ok := e.Data[k]; ok {
			fmt.Fprintf(&b, " %s=%v", k, v)
		}
	}
	b.WriteByte('\n')
	return []byte(b.String()), nil
}
