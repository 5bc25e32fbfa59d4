package inventory

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/rotate"
	"github.com/certagent/certagent/rotate/pki"
)

// Options configure a scan.
type Options struct {
	Root   *pki.Root      // required
	Config *config.Config // nil means config.Default()
	Now    time.Time      // zero means time.Now()
	// Workers bounds parallel reads; 0 means GOMAXPROCS.
	Workers int
}

// scanner holds one scan's inputs. authorities is written only between
// phases, never while workers run.
type scanner struct {
	root        *pki.Root
	cfg         *config.Config
	now         time.Time
	authorities []*authority
	names       sync.Map // string(RawIssuer) -> *issuerInfo
	writersMu   sync.Mutex
	writers     map[string]string // directory -> who else can write it; guarded by writersMu
}

// authority is a CA certificate with what is needed to check signatures.
type authority struct {
	info    *Certificate
	cert    *x509.Certificate
	keyOK   bool // private key present and matching
	keyHere bool // a private key file is present, matching or not
	bundled bool // came as the chain of another file
}

// found is one certificate out of a file, before assessment.
type found struct {
	info      *Certificate
	identity  string // dedupe key: resolved file (+ kubeconfig user)
	order     int    // candidate order: lower wins a dedupe
	expectKey bool
	// cert is kept for authorities only. Leaves whose issuer was not among
	// the authorities known when they were read keep its key identifier and
	// name, so that an authority found later can be matched without
	// holding every leaf in memory.
	cert          *x509.Certificate
	pending       bool
	akid, rawIssr string
	issuer        *authority
	// nodeClient: a kubelet client identity (system:node:*, system:nodes).
	nodeClient bool
	// csr: configured for renewal through a CSR.
	csr bool
	// groups are the subject's organizations (Kubernetes groups).
	groups []string
	// extra: found through a configured path, not a well-known location.
	extra bool
}

// result is what reading one candidate produced.
type result struct {
	found      []*found
	clusterCAs []*Certificate
	chain      []*authority
	keyPair    *KeyPair
	problems   []Problem
}

// Scan inventories the node. It returns a report even when files are bad;
// an error only for a cancelled context.
func Scan(ctx context.Context, opts Options) (*Report, error) {
	if opts.Root == nil {
		return nil, errors.New("inventory: no root")
	}
	s := &scanner{root: opts.Root, cfg: opts.Config, now: opts.Now, writers: map[string]string{}}
	if s.cfg == nil {
		s.cfg = config.Default()
	}
	if s.now.IsZero() {
		s.now = time.Now()
	}
	if s.cfg.MaxFileSize > 0 {
		r := *s.root
		r.MaxFileSize = s.cfg.MaxFileSize
		s.root = &r
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	cands, problems := s.discover()
	// A renewal that a crash interrupted may have left a pair mismatched
	// until it is repaired: say so, whatever the files look like.
	for _, d := range rotate.Mixed(s.root, s.cfg.Renewal.BackupDir) {
		problems = append(problems, Problem{Path: d, Error: "interrupted renewal transaction: a key and certificate may not match until it is repaired " +
			"(the daemon repairs it when it starts; `certagent renew --all` repairs it too)"})
	}
	rep := &Report{Kind: "CertificateInventory", APIVersion: config.APIVersion, ScannedAt: s.now.UTC(),
		Root: s.root.Dir(), Problems: problems}

	// Phase A: the well-known authorities, so that every other file can be
	// matched with its issuer while it is read.
	var rest []indexed
	var all []*found
	for i, c := range cands {
		if !c.ca {
			rest = append(rest, indexed{i, c})
			continue
		}
		r := s.read(c, i)
		all = s.collect(rep, r, all)
	}
	early := len(s.authorities)
	// Phase B: everything else, in parallel.
	results := make([]*result, len(rest))
	var next atomic.Int64 // index of the next candidate to take
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				j := int(next.Add(1)) - 1
				if j >= len(rest) {
					return
				}
				results[j] = s.read(rest[j].c, rest[j].i)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, r := range results {
		all = s.collect(rep, r, all)
	}
	// Phase C: leaves whose issuer turned up only in phase B.
	var late []*authority
	for _, a := range s.authorities[early:] {
		if !a.bundled { // a bundled chain was matched with its own file already
			late = append(late, a)
		}
	}
	if len(late) > 0 {
		s.matchLate(all, late, cands)
	}
	s.assemble(rep, all)
	return rep, nil
}

type indexed struct {
	i int
	c candidate
}

// collect merges one result into the report and the authority list.
func (s *scanner) collect(rep *Report, r *result, all []*found) []*found {
	if r == nil {
		return all
	}
	rep.Problems = append(rep.Problems, r.problems...)
	rep.ClusterCAs = append(rep.ClusterCAs, r.clusterCAs...)
	if r.keyPair != nil {
		rep.KeyPairs = append(rep.KeyPairs, r.keyPair)
	}
	for _, f := range r.found {
		if f.info.IsCA {
			s.authorities = append(s.authorities, &authority{info: f.info, cert: f.cert,
				keyOK: f.info.Key != nil && f.info.Key.Matches, keyHere: f.info.Key != nil && f.info.Key.Present})
		}
	}
	s.authorities = append(s.authorities, r.chain...)
	return append(all, r.found...)
}

// read reads one candidate. It runs on a worker and only reads s.
func (s *scanner) read(c candidate, order int) *result {
	r := &result{}
	name := c.name
	if name == "" {
		name = c.path
	}
	fail := func(err error) *result {
		r.problems = append(r.problems, Problem{Path: c.path, Name: c.name, Error: err.Error()})
		return r
	}
	if c.resolved == "" && !c.explicit {
		// A well-known file that is simply not there is not a problem;
		// a link to nowhere is.
		// Its directory is resolved inside the root: a link there is
		// followed as the node would follow it, never out to the host.
		host, err := s.root.HostFile(c.path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil {
			if _, err := os.Lstat(host); errors.Is(err, fs.ErrNotExist) {
				return nil
			}
		}
	}
	var f *pki.File
	var err error
	if c.resolved != "" {
		f, err = s.root.ReadResolvedFile(c.resolved)
		if f != nil {
			f.Path = c.path
		}
	} else {
		f, err = s.root.ReadFile(c.path)
	}
	if err != nil {
		return fail(err)
	}
	if c.keyPair {
		r.keyPair = s.readKeyPair(name, f)
		return r
	}
	if c.kubeconfig || (!c.ca && pki.LooksLikeKubeconfig(f.Data)) {
		return s.readKubeconfig(c, name, f, order, r)
	}
	b, err := pki.ParseBundle(f.Data)
	if err != nil {
		return fail(err)
	}
	if b.Warning != nil {
		r.problems = append(r.problems, Problem{Path: c.path, Name: c.name, Error: b.Warning.Error()})
	}
	kind := KindPEM
	switch b.Format {
	case pki.FormatCombined:
		kind = KindCombined
	case pki.FormatDER:
		kind = KindDER
	}
	fd := s.newFound(c, name, c.path, f.Resolved, kind, b.Certs[0], order)
	fd.expectKey, fd.csr = c.expectKey, c.csr
	switch {
	case b.Key != nil:
		fd.info.Key = &KeyInfo{Path: c.path, Present: true, Matches: pki.KeyMatches(b.Certs[0], b.Key),
			Mode: mode(f.Mode), UID: f.UID, GID: f.GID}
	case c.keyPath != "":
		fd.info.Key = s.readKey(c.keyPath, b.Certs[0], false)
	case c.siblingKey:
		fd.info.Key = s.readKey(sibling(c.path), b.Certs[0], true)
	}
	// Bundled chain certificates are authorities named after the file.
	for i, cc := range b.Certs[1:] {
		info := s.describe(fmt.Sprintf("%s#%d", name, i+1), c.path, f.Resolved, kind, cc)
		a := &authority{info: info, cert: cc, bundled: true}
		if pki.IsCA(cc) {
			r.chain = append(r.chain, a)
		}
		if fd.issuer == nil && pki.SignedBy(b.Certs[0], cc) {
			fd.issuer = a
		}
	}
	s.matchIssuer(fd, b.Certs[0])
	r.found = append(r.found, fd)
	return r
}

func (s *scanner) newFound(c candidate, name, p, resolved string, kind Kind, cert *x509.Certificate, order int) *found {
	fd := &found{info: s.describe(name, p, resolved, kind, cert), identity: resolved, order: order,
		nodeClient: strings.HasPrefix(cert.Subject.CommonName, "system:node:") && slices.Contains(cert.Subject.Organization, "system:nodes"),
		groups:     cert.Subject.Organization, extra: c.configured}
	if fd.info.IsCA {
		fd.cert = cert
	}
	return fd
}

// matchIssuer finds the issuing authority among those known so far; when
// none is found the raw certificate is kept for a later look.
func (s *scanner) matchIssuer(fd *found, cert *x509.Certificate) {
	if fd.issuer != nil {
		return
	}
	if fd.info.IsCA && pki.SignedBy(cert, cert) {
		fd.info.CAName = fd.info.Name // a self-signed root
		return
	}
	for _, a := range s.authorities {
		if a.cert != cert && pki.SignedBy(cert, a.cert) {
			fd.issuer = a
			return
		}
	}
	fd.pending, fd.akid, fd.rawIssr = true, string(cert.AuthorityKeyId), string(cert.RawIssuer)
}

// matchLate matches leaves read before their issuer was known against the
// authorities found in phase B. The few files whose issuer name or key
// identifier points at one of those are read again; by now every authority
// is known, so the second read finds the issuer by signature.
func (s *scanner) matchLate(all []*found, late []*authority, cands []candidate) {
	maybe := func(fd *found) bool {
		for _, a := range late {
			if (fd.akid != "" && fd.akid == string(a.cert.SubjectKeyId)) || fd.rawIssr == string(a.cert.RawSubject) {
				return true
			}
		}
		return false
	}
	reread := map[int]*result{}
	for _, fd := range all {
		if !fd.pending || !maybe(fd) {
			continue
		}
		r, ok := reread[fd.order]
		if !ok {
			r = s.read(cands[fd.order], fd.order)
			reread[fd.order] = r
		}
		if r == nil {
			continue
		}
		for _, again := range r.found {
			if again.identity == fd.identity && again.issuer != nil && !again.issuer.bundled {
				fd.issuer = again.issuer
			}
		}
	}
}

// readKey reads a separate private key file and checks it against cert.
// With optional set, a missing file means "no key" rather than a problem.
func (s *scanner) readKey(keyPath string, cert *x509.Certificate, optional bool) *KeyInfo {
	ki := &KeyInfo{Path: keyPath}
	f, err := s.root.ReadFile(keyPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if optional {
				return nil
			}
			return ki
		}
		ki.Error = err.Error()
		return ki
	}
	ki.Present, ki.Mode, ki.UID, ki.GID = true, mode(f.Mode), f.UID, f.GID
	key, err := pki.ParseKeyPEM(f.Data)
	if err != nil {
		ki.Error = "parse private key: " + err.Error()
		return ki
	}
	ki.Matches = pki.KeyMatches(cert, key)
	return ki
}

func mode(m fs.FileMode) string { return fmt.Sprintf("%04o", uint32(m.Perm())) }

// sortReport orders every list by name, then path, for stable output.
func sortReport(rep *Report) {
	byName := func(l []*Certificate) {
		sort.SliceStable(l, func(i, j int) bool {
			if l[i].Name != l[j].Name {
				return l[i].Name < l[j].Name
			}
			return l[i].Path < l[j].Path
		})
	}
	byName(rep.Certificates)
	byName(rep.Authorities)
	byName(rep.ClusterCAs)
	sort.SliceStable(rep.Problems, func(i, j int) bool { return rep.Problems[i].Path < rep.Problems[j].Path })
	sort.SliceStable(rep.KeyPairs, func(i, j int) bool { return rep.KeyPairs[i].Path < rep.KeyPairs[j].Path })
}
