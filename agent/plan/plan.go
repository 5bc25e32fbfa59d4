// Package plan decides which certificates a renewal run touches and how:
// it turns the inventory into rotate.Targets, with the reason, the new
// validity and the files for each, and says why the others are left alone.
package plan

import (
	"fmt"
	"sort"
	"time"

	"github.com/certagent/certagent/agent/canode"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/inventory"
	"github.com/certagent/certagent/agent/schedule"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Selection is what the user asked for.
type Selection struct {
	// Names renews these certificates unconditionally.
	Names []string
	// All renews every certificate inside its renewal window; with Force,
	// every renewable one.
	All, Force bool
}

// Item is one certificate's line in the plan.
type Item struct {
	Name string
	// Renew is true when the certificate goes into the transaction.
	Renew  bool
	Reason string
	Target rotate.Target
	// NotBefore and NotAfter are the renewed certificate's validity.
	NotBefore, NotAfter time.Time
	Files               []string
	Warnings            []string
	// Err says why a requested certificate cannot be renewed; a skipped
	// one that was not asked for by name has Err nil and a Reason.
	Err error
	// CSR is set for a certificate asked for by name whose renewal path is
	// csr: it is renewed through the cluster, outside the transaction.
	CSR *inventory.Certificate
}

// Plan is the ordered list of items.
type Plan struct {
	Items []*Item
}

// Targets returns the targets to renew.
func (p *Plan) Targets() []rotate.Target {
	var out []rotate.Target
	for _, it := range p.Items {
		if it.Renew {
			out = append(out, it.Target)
		}
	}
	return out
}

// Build makes the plan for sel from a fresh inventory.
func Build(root *pki.Root, cfg *config.Config, rep *inventory.Report, sel Selection, now time.Time) (*Plan, error) {
	b := &builder{root: root, cfg: cfg, rep: rep, now: now, cas: map[string]caResult{}}
	certs := map[string]*inventory.Certificate{}
	for _, c := range rep.Certificates {
		certs[c.Name] = c
	}
	cas := map[string]bool{}
	for _, c := range rep.Authorities {
		cas[c.Name] = true
	}
	p := &Plan{}
	if len(sel.Names) > 0 {
		for _, n := range sel.Names {
			c, ok := certs[n]
			switch {
			case cas[n]:
				p.Items = append(p.Items, &Item{Name: n, Err: fmt.Errorf("%s is a CA: certagent never renews CAs", n)})
			case !ok:
				p.Items = append(p.Items, &Item{Name: n, Err: notFound(rep, n)})
			default:
				p.Items = append(p.Items, b.item(c, "requested by name", true))
			}
		}
		return p, nil
	}
	if !sel.All {
		return nil, fmt.Errorf("name the certificates to renew, or use --all")
	}
	for _, c := range rep.Certificates {
		due := c.State == inventory.StateRenewalDue || c.State == inventory.StateExpired
		switch {
		case sel.Force:
			if c.RenewalPath == inventory.RenewLocalCA || c.RenewalPath == inventory.RenewSelfSigned {
				p.Items = append(p.Items, b.item(c, "forced", false))
			}
		case due && c.State != inventory.StateExpired:
			// The daemon's rule: not again within a tenth of the lifetime
			// of the certificate's issue (its notBefore, a one-shot run
			// keeps no other record), whatever renewBefore says.
			life := c.NotAfter.Sub(c.NotBefore)
			if next, held := schedule.HoldBack(c.RenewalWindowStart, c.NotBefore, life); held && now.Before(next) {
				p.Items = append(p.Items, &Item{Name: c.Name, Reason: fmt.Sprintf(
					"issued %s, less than a tenth of its %s lifetime ago: not renewed again before %s (renewBefore %s leaves no room)",
					c.NotBefore.Format(time.RFC3339), inventory.Human(life), next.Format(time.RFC3339), b.cfg.RenewBefore)})
				continue
			}
			reason := fmt.Sprintf("inside its renewal window since %s", c.RenewalWindowStart.Format(time.RFC3339))
			p.Items = append(p.Items, b.item(c, reason, false))
		case due:
			p.Items = append(p.Items, b.item(c, fmt.Sprintf("expired %s", c.NotAfter.Format(time.RFC3339)), false))
		}
	}
	// A well-known certificate that cannot even be read is not renewed by
	// --all, and that must not go unnoticed.
	for _, pr := range rep.Problems {
		if pr.Name != "" && !cas[pr.Name] && certs[pr.Name] == nil {
			p.Items = append(p.Items, &Item{Name: pr.Name, Err: notFound(rep, pr.Name)})
		}
	}
	sort.SliceStable(p.Items, func(i, j int) bool { return p.Items[i].Name < p.Items[j].Name })
	return p, nil
}

// notFound explains a name missing from the inventory, using the problem
// that hid it when there is one.
func notFound(rep *inventory.Report, name string) error {
	for _, pr := range rep.Problems {
		if pr.Name == name {
			return fmt.Errorf("cannot read the current certificate %s: %s", pr.Path, pr.Error)
		}
	}
	return fmt.Errorf("no certificate named %q (see certagent check)", name)
}

type caResult struct {
	ca  *rotate.LocalCA
	err error
}

type builder struct {
	root *pki.Root
	cfg  *config.Config
	rep  *inventory.Report
	now  time.Time
	cas  map[string]caResult
}

// item plans one certificate. required marks certificates asked for by
// name: for those, anything that prevents renewal is an error.
func (b *builder) item(c *inventory.Certificate, reason string, required bool) *Item {
	it := &Item{Name: c.Name, Reason: reason}
	skip := func(format string, a ...any) *Item {
		msg := fmt.Sprintf(format, a...)
		if required {
			it.Err = fmt.Errorf("%s", msg)
		} else {
			it.Reason = msg
		}
		return it
	}
	switch c.RenewalPath {
	case inventory.RenewCSR:
		if required {
			it.CSR, it.Reason = c, "requested by name; through a CertificateSigningRequest"
			return it
		}
		return skip("renewal path csr: renewed through the Kubernetes API, not from a local CA")
	case inventory.RenewExternal:
		if c.CAName == "" {
			return skip("issuer not found on this node: nothing here can renew it")
		}
		return skip("CA %s is externally managed (no %s key here): renew it where the CA key is", c.CAName, c.CAName)
	case inventory.RenewNone:
		return skip("not renewable: %s", firstOr(c.Warnings, "self-signed or a CA"))
	case inventory.RenewRefused:
		return skip("left alone: %s", c.LeftAlone)
	}
	t, err := targetFor(c)
	if err != nil {
		return skip("%v", err)
	}
	if c.RenewalPath == inventory.RenewSelfSigned {
		return b.selfSigned(it, t)
	}
	ca := b.ca(c)
	if ca.err != nil {
		it.Err = ca.err
		return it
	}
	t.CA = ca.ca
	it.Target, it.Renew, it.Files = t, true, t.Files()
	life := c.NotAfter.Sub(c.NotBefore)
	if v := b.cfg.Renewal.ValidityDuration; v > 0 {
		life = v
	}
	it.NotBefore, it.NotAfter = rotate.Validity(b.now, life, ca.ca.Cert.NotAfter)
	if it.NotAfter.Equal(ca.ca.Cert.NotAfter.UTC()) {
		it.Warnings = append(it.Warnings, fmt.Sprintf("CA %s expires %s, before a full %s lifetime: the renewed certificate ends with it; plan a new CA",
			ca.ca.Name, ca.ca.Cert.NotAfter.Format(time.RFC3339), inventory.Human(life)))
	}
	return it
}

// selfSigned plans a new self-signed pair (kubelet.crt): no CA to load;
// the validity is client-go's (an hour back, renewal.validity or a year).
func (b *builder) selfSigned(it *Item, t rotate.Target) *Item {
	if t.Storage != rotate.StoragePair {
		it.Err = fmt.Errorf("%s: a self-signed re-issue needs a certificate file and a key file", it.Name)
		return it
	}
	t.SelfSigned = true
	it.Target, it.Renew, it.Files = t, true, t.Files()
	life := b.cfg.Renewal.ValidityDuration
	if life <= 0 {
		life = 365 * 24 * time.Hour
	}
	it.NotBefore = b.now.Add(-time.Hour).UTC()
	it.NotAfter = it.NotBefore.Add(life)
	return it
}

// ca loads the issuing CA once per run.
func (b *builder) ca(c *inventory.Certificate) caResult {
	if r, ok := b.cas[c.CAName]; ok {
		return r
	}
	var auth *inventory.Certificate
	for _, a := range b.rep.Authorities {
		if a.Name == c.CAName {
			auth = a
		}
	}
	if auth != nil && auth.Key == nil {
		// A CA bundled in a CA file whose own CA's key is here (a
		// rotation's old CA): that key re-signs what it issued.
		for _, a := range b.rep.Authorities {
			if a.Path == auth.Path && a.Key != nil && a.Key.Present {
				auth = a
			}
		}
	}
	var r caResult
	if auth == nil || auth.Key == nil || !auth.Key.Present {
		r.err = fmt.Errorf("CA %s: %w", c.CAName, rotate.ErrExternalCA)
	} else {
		r.ca, r.err = rotate.LoadLocalCA(b.root, auth.Name, auth.Path, auth.Key.Path)
		if r.err == nil {
			// Only the CA that this node's rotation replaces, once switched.
			canode.Retire(b.root, b.cfg.Agent, r.ca)
		}
	}
	b.cas[c.CAName] = r
	return r
}

// targetFor maps an inventory entry onto how rotate writes it.
func targetFor(c *inventory.Certificate) (rotate.Target, error) {
	// Write where the links lead, so a symlinked file keeps its link.
	file := c.Path
	if c.ResolvedPath != "" {
		file = c.ResolvedPath
	}
	t := rotate.Target{Name: c.Name, CertPath: file}
	switch c.Kind {
	case inventory.KindKubeconfigEmbedded:
		t.Storage, t.User = rotate.StorageKubeconfig, c.User
		if c.Key == nil || c.Key.Path != c.Path {
			return t, fmt.Errorf("%s: the key is not embedded next to the certificate", c.Name)
		}
		return t, nil
	case inventory.KindCombined:
		t.Storage = rotate.StorageCombined
		return t, nil
	case inventory.KindPEM, inventory.KindKubeconfigReference:
		if c.Key == nil || !c.Key.Present {
			return t, fmt.Errorf("%s: no private key found next to it", c.Name)
		}
		if c.Key.Path == c.Path || c.Key.Path == file {
			t.Storage = rotate.StorageCombined
		} else {
			t.Storage, t.KeyPath = rotate.StoragePair, c.Key.Path
		}
		return t, nil
	}
	return t, fmt.Errorf("%s: %s files are not renewed; keep certificates as PEM", c.Name, c.Kind)
}

func firstOr(l []string, def string) string {
	if len(l) > 0 {
		return l[0]
	}
	return def
}
