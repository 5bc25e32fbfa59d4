package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/agent/kube"

	"github.com/certagent/certagent/agent/carotate"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/kubeclient"
	"github.com/certagent/certagent/rotate"
	cafiles "github.com/certagent/certagent/rotate/carotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Exit codes of `certagent ca rotate` beyond 0, 1 and 4: a failed
// precondition (nothing changed for it), and a wait that ran out.
const (
	ExitRefused = 6
	ExitTimeout = 7
)

// caTimeoutBounds: a wait for every node, at least a second, at most a week.
var caTimeoutBounds = config.Bounds{Min: time.Second, Max: 7 * 24 * time.Hour}

// newCAClient builds the admin client (a fake in tests).
var newCAClient = func(root *pki.Root, kubeconfig string) (kube.Interface, error) {
	cs, _, err := kubeclient.New(root, kubeconfig, nil)
	return cs, err
}

type caFlags struct {
	ca, kubeconfig, newCert, newKey, until, output string
	stageOnly, again                               bool
	timeout                                        time.Duration
}

func newCACommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Rotate a cluster CA (ca, etcd-ca, front-proxy-ca) without an outage",
	}
	cmd.AddCommand(newCARotateCommand(g), newCAStatusCommand(g))
	return cmd
}

func newCARotateCommand(g *globalFlags) *cobra.Command {
	f := &caFlags{timeout: 10 * time.Minute}
	cmd := &cobra.Command{
		Use:   "rotate [--ca ca|etcd-ca|front-proxy-ca] [--until PHASE] [--new-ca-cert F --new-ca-key F] [--stage-only]",
		Short: "Rotate a cluster CA in phases (prepare, trust, reissue, finish), resumable",
		Long: `rotate runs on one control-plane node with the admin credential. It
stages a new CA next to the old one (made here, or --new-ca-cert and
--new-ca-key), then moves the cluster through prepare, trust, reissue and
finish, each once every node's certagent reports it done. A rerun goes on
where it stopped. --stage-only only places and checks the new CA files on
this node (for other control-plane nodes).

Exit codes: 0 done (or stopped after --until, or staged); 1 failed (the
API, an invalid rotation state, a file); 4 bad flags or config; 6 refused:
a precondition failed (each printed on its own line); 7 a wait for the
nodes ran past --timeout (the lagging nodes are named; rerun to go on).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			root, cfg, err := g.load()
			if err != nil {
				return err
			}
			return runCARotate(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), root, cfg, f)
		},
	}
	cmd.Flags().StringVar(&f.ca, "ca", "ca", "the CA to rotate: ca, etcd-ca or front-proxy-ca")
	cmd.Flags().StringVar(&f.kubeconfig, "kubeconfig", "", "the admin credential, a node path (default admin.conf in the Kubernetes directory)")
	cmd.Flags().StringVar(&f.newCert, "new-ca-cert", "", "the new CA certificate to use instead of one certagent makes (a host path)")
	cmd.Flags().StringVar(&f.newKey, "new-ca-key", "", "its private key (a host path)")
	cmd.Flags().BoolVar(&f.stageOnly, "stage-only", false, "only place and check the new CA files on this node; no API")
	cmd.Flags().StringVar(&f.until, "until", "", "stop once this phase is done on every node: prepare, trust (restart in-cluster workloads there), reissue or finish; done: go to the end")
	cmd.Flags().Var(newDurationFlag(&f.timeout, nil, caTimeoutBounds), "timeout", "how long each wait for the nodes lasts, and how long a failing API request is tried again (at most 1w)")
	cmd.Flags().BoolVar(&f.again, "new", false, "start a new rotation even though the last one of this CA finished")
	addOutputFlag(cmd, &f.output)
	cmd.RegisterFlagCompletionFunc("ca", cobra.FixedCompletions(carotate.CAs, cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("until", cobra.FixedCompletions([]string{"prepare", "trust", "reissue", "finish", "done"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// check refuses flag combinations that make no sense, as usage errors.
func (f *caFlags) check() error {
	usage := func(format string, args ...any) error {
		return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
	}
	switch {
	case !slices.Contains(carotate.CAs, f.ca):
		return usage("--ca must be one of %s, got %q", strings.Join(carotate.CAs, ", "), f.ca)
	case (f.newCert == "") != (f.newKey == ""):
		return usage("--new-ca-cert and --new-ca-key go together")
	case f.stageOnly && f.newCert == "":
		return usage("--stage-only needs --new-ca-cert and --new-ca-key")
	case f.until != "" && carotate.Phase(f.until).Index() < 0:
		return usage("--until must be prepare, trust, reissue, finish or done, got %q", f.until)
	}
	return checkOutput(f.output)
}

// caNode is this node's side of `ca rotate`: the CA in use, the new CA
// supplied (if any), and the preconditions that failed here.
type caNode struct {
	local    *carotate.Local
	cur      *rotate.LocalCA // nil when refused
	supplied *carotate.Pair
	newCert  *x509.Certificate // the supplied CA, checked
	refusals []string
}

func loadCANode(root *pki.Root, cfg *config.Config, f *caFlags) (*caNode, error) {
	local, err := carotate.NewLocal(root, cfg.PKIDir, f.ca)
	if err != nil {
		return nil, &exitError{code: ExitUsage, err: err}
	}
	n := &caNode{local: local}
	var refusal string
	n.cur, refusal = n.local.Current()
	if refusal != "" {
		n.refusals = append(n.refusals, refusal)
	}
	if n.supplied, err = f.supplied(); err != nil {
		return nil, &exitError{code: ExitUsage, err: err}
	}
	if n.supplied == nil {
		return n, nil
	}
	// What the supplied CA replaces is checked by the Rotator once it has
	// read the rotation (after this node's signer switch the CA in use is
	// the supplied one); --stage-only checks it against the CA in use.
	n.newCert, _, err = cafiles.ReadPair(n.supplied.CertPEM, n.supplied.KeyPEM)
	if err == nil && f.stageOnly && n.cur != nil && !n.inUse() {
		err = cafiles.CheckSuccessor(n.cur.Cert, n.newCert)
	}
	if err != nil {
		n.refusals = append(n.refusals, fmt.Sprintf("the supplied CA (%s, %s): %v", f.newCert, f.newKey, err))
	}
	return n, nil
}

// inUse reports whether the supplied CA is already the CA in use here
// (the node's signer switched to it).
func (n *caNode) inUse() bool {
	return n.cur != nil && n.newCert != nil && n.cur.Cert.Equal(n.newCert)
}

// newKey is this node's key of the rotation's new CA next: the CA key
// once the signer switched to next, else the supplied or staged pair's.
func (n *caNode) newKey(next *x509.Certificate) (crypto.Signer, error) {
	if n.cur != nil && n.cur.Cert.Equal(next) {
		return n.cur.Key, nil
	}
	if n.newCert != nil && n.newCert.Equal(next) {
		_, key, err := cafiles.ReadPair(n.supplied.CertPEM, n.supplied.KeyPEM)
		return key, err
	}
	stem, err := cafiles.Stem(n.local.CA)
	if err != nil {
		return nil, err
	}
	staged, key, err := cafiles.Staged(n.local.Root, n.local.PKIDir, stem)
	switch {
	case err != nil:
		return nil, err
	case !staged.Equal(next):
		return nil, fmt.Errorf("%s is another CA (serial %X)", n.local.Files.NextCert, staged.SerialNumber)
	}
	return key, nil
}

// prepare stages the new CA on this node (see carotate.Local.Prepare).
func (n *caNode) prepare() (*x509.Certificate, error) {
	return n.local.Prepare(n.cur, n.supplied, time.Now())
}

func runCARotate(ctx context.Context, out, errOut io.Writer, root *pki.Root, cfg *config.Config, f *caFlags) error {
	n, err := loadCANode(root, cfg, f)
	if err != nil {
		return err
	}
	if f.stageOnly {
		if n.inUse() {
			fmt.Fprintf(out, "the supplied CA (id %s) is already this node's CA (its signer switched): nothing to stage\n", carotate.Fingerprint(n.newCert))
			return nil
		}
		if len(n.refusals) > 0 {
			return caError(&carotate.RefusedError{Reasons: n.refusals})
		}
		c, err := n.prepare()
		if err != nil {
			return &exitError{code: 1, err: err}
		}
		fmt.Fprintf(out, "staged %s and %s (id %s)\n", n.local.Files.NextCert, n.local.Files.NextKey, carotate.Fingerprint(c))
		return nil
	}
	kubeconfig := f.kubeconfig
	if kubeconfig == "" {
		kubeconfig = path.Join(cfg.KubernetesDir, "admin.conf")
	}
	cs, err := newCAClient(root, kubeconfig)
	if err != nil {
		return caError(&carotate.RefusedError{Reasons: append(n.refusals, fmt.Sprintf("the admin credential %s is unusable: %v", kubeconfig, err))})
	}
	progress := out
	if f.output != "table" {
		progress = errOut
	}
	r := &carotate.Rotator{Client: cs, Connect: func() (kube.Interface, error) { return newCAClient(root, kubeconfig) },
		Clock: clock.RealClock{}, Out: progress, Kubeconfig: kubeconfig, Timeout: f.timeout, Until: carotate.Phase(f.until),
		CA: f.ca, Refusals: n.refusals, New: f.again, Supplied: n.newCert, NewKey: n.newKey}
	if n.cur != nil {
		r.Current, r.CurrentKey, r.Prepare = n.cur.Cert, n.cur.Key, n.prepare
	}
	_, runErr := r.Run(ctx)
	if f.output != "table" {
		if _, err := printCAStatus(ctx, out, cs, f.output); err != nil && runErr == nil {
			runErr = err
		}
	}
	return caError(runErr)
}

// supplied reads --new-ca-cert and --new-ca-key (host paths).
func (f *caFlags) supplied() (*carotate.Pair, error) {
	if f.newCert == "" {
		return nil, nil
	}
	c, err := pki.ReadHostFile(f.newCert)
	if err != nil {
		return nil, fmt.Errorf("--new-ca-cert: %w", err)
	}
	k, err := pki.ReadHostFile(f.newKey)
	if err != nil {
		return nil, fmt.Errorf("--new-ca-key: %w", err)
	}
	return &carotate.Pair{CertPEM: c, KeyPEM: k}, nil
}

// caError maps a rotation's error to its exit code.
func caError(err error) error {
	var te *carotate.TimeoutError
	switch {
	case err == nil:
		return nil
	case carotate.IsRefused(err):
		return &exitError{code: ExitRefused, err: err}
	case errors.As(err, &te):
		return &exitError{code: ExitTimeout, err: err}
	}
	return &exitError{code: 1, err: err}
}

func newCAStatusCommand(g *globalFlags) *cobra.Command {
	var kubeconfig, output string
	cmd := &cobra.Command{
		Use:   "status [-o table|json|yaml]",
		Short: "Show the cluster's CA rotation and every node's report",
		Long: `status prints the rotation kept in kube-system/certagent-ca-rotation and
what every node reports about it (phase, done, blocked, what is left).

Exit codes: 0 no rotation, or the last one finished; 1 a rotation is in
progress; 2 a node is blocked, or the rotation state is invalid; 3 the API
could not be asked; 4 bad flags or config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			root, cfg, err := g.load()
			if err != nil {
				return err
			}
			if kubeconfig == "" {
				kubeconfig = path.Join(cfg.KubernetesDir, "admin.conf")
			}
			cs, err := newCAClient(root, kubeconfig)
			if err != nil {
				return &exitError{code: carotate.StatusNoAPI, err: fmt.Errorf("%s: %w", kubeconfig, err)}
			}
			d, err := printCAStatus(cmd.Context(), cmd.OutOrStdout(), cs, output)
			if err != nil {
				return err
			}
			if code := d.ExitCode(); code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&kubeconfig, "kubeconfig", "", "the admin credential, a node path (default admin.conf in the Kubernetes directory)")
	addOutputFlag(cmd, &output)
	return cmd
}

// printCAStatus reads and prints the rotation's status.
func printCAStatus(ctx context.Context, out io.Writer, cs kube.Interface, output string) (*carotate.StatusDoc, error) {
	d, err := carotate.ReadStatus(ctx, cs)
	if err != nil {
		return nil, &exitError{code: carotate.StatusNoAPI, err: err}
	}
	switch output {
	case "json":
		err = d.WriteJSON(out)
	case "yaml":
		err = writeYAML(out, d.WriteJSON)
	default:
		err = d.WriteTable(out, time.Now())
	}
	if err != nil {
		return nil, &exitError{code: ExitUsage, err: err}
	}
	return d, nil
}
