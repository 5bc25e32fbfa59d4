package inventory

import (
	"bytes"
	"context"
	"crypto/sha256"
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
	// Workers bounds parallel reads and signature checks; 0 means
	// GOMAXPROCS.
	Workers int
	// Cache, when set, is kept by the caller across scans: unchanged files
	// are not read again, and signatures already checked are not checked
	// again. nil reads and checks everything. A leaf found unchanged is
	// reported as the Certificate a previous scan reported when nothing
	// but its residual seconds differs: its ResidualSeconds are then that
	// scan's. The current ones are Residual(NotAfter, ScannedAt), which the
	// daemon's status document writes.
	Cache *Cache
	// Changed, with a Cache, says what changed since the previous scan
	// with it (a file watcher's report): the files it holds elsewhere are
	// not looked at. nil looks at every file.
	Changed *Changed
}

// scanner holds one scan's inputs. authorities is written only between
// phases, never while workers run.
type scanner struct {
	root        *pki.Root
	cfg         *config.Config
	now         time.Time
	cache       *Cache
	gen         uint64   // the cache's generation for this scan
	changes     *changes // what changed since the previous scan; nil: look at everything
	authorities []*authority
	names       sync.Map // string(RawIssuer) -> *issuerInfo
	cands       []candidate
	published   atomic.Pointer[[]*authority] // the authorities found so far in phase 1
	publishMu   sync.Mutex
	writersMu   sync.Mutex
	writers     map[string]string    // directory -> who else can write it; guarded by writersMu
	messages    map[[2]string]string // warnings already formatted, for assemble
	scratch     Certificate          // assemble's copy of a cached leaf, kept when new
	// For the next scan's patch (record): the previous scan to patch, the
	// readings in candidate order, how many problems came before the
	// readings', the readings' problems, each authority's longest-lived leaf.
	prev    *lastScan
	results []*result
	fixed   int
	other   []Problem
	longest map[*authority]time.Duration
}

// authority is a CA certificate with what is needed to check signatures.
type authority struct {
	info    *Certificate
	cert    *x509.Certificate
	keyOK   bool // private key present and matching
	keyHere bool // a private key file is present, matching or not
	bundled bool // came as the chain of another file
	// wellKnown: bundled in a well-known CA file (ca.crt...), whose chain
	// may issue other files' certificates.
	wellKnown bool
	// partner: bundled in a well-known CA file with the same subject as
	// the file's own CA, whose key is here: the CA it replaces during a
	// rotation, whose certificates that key re-signs.
	partner bool
	id      [sha256.Size]byte // digest of the whole certificate, once matching starts
}

// found is one certificate out of a file, before assessment.
type found struct {
	info      *Certificate
	identity  string // dedupe key: resolved file (+ kubeconfig user)
	order     int    // candidate order: lower wins a dedupe
	expectKey bool
	// cert is kept for authorities only. Every certificate whose issuer
	// is not yet known keeps its signed part, a few hundred bytes, until
	// every authority is known and its issuer is found by signature.
	cert   *x509.Certificate
	signed *pki.Signed
	sigID  [sha256.Size]byte
	// akid and rawIssuer pick candidate issuers once signed is let go;
	// verdicts are the checks done so far in this scan.
	akid, rawIssuer string
	verdicts        []verdictOf
	issuer          *authority
	// nodeClient: a kubelet client identity (system:node:*, system:nodes).
	nodeClient bool
	// csr: configured for renewal through a CSR.
	csr bool
	// groups are the subject's organizations (Kubernetes groups).
	groups []string
	// extra: found through a configured path, not a well-known location.
	extra bool
	// shared: info is the cached template's, read-only; assemble makes
	// the scan's own (see ownInfo). last, on a cached leaf, is what the
	// latest scan reported for it, handed out again when the same.
	shared bool
	last   *lastInfo
	// writers is the check of who else could write its files, when its
	// renewal from a local CA depended on it.
	writers *writersCheck
}

// lastInfo holds the Certificate a cached leaf was last reported as, and
// the verdict of the authority it was last checked against.
type lastInfo struct {
	p       atomic.Pointer[Certificate]
	verdict atomic.Pointer[caVerdict]
}

// caVerdict is a signature check's outcome against the authority whose
// whole certificate has digest ca.
type caVerdict struct {
	ca [sha256.Size]byte
	ok bool
}

// result is what reading one candidate produced.
type result struct {
	found      []*found
	clusterCAs []*Certificate
	chain      []*authority
	keyPair    *KeyPair
	problems   []Problem
	// deps are the files reading it depended on, for the cache; noCache
	// is set when a read failed in a way that may not last.
	deps      []dep
	noCache   bool
	untracked bool // no cache: deps are not recorded
	// cached: a copy of the cache's reading (deps are its entry's).
	cached bool
	// authorities are the CAs it holds, for this scan (not cached).
	authorities []*authority
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
	if opts.Cache != nil {
		s.cache = opts.Cache
		s.gen = s.cache.begin(s.root, s.root.MaxFileSize)
		s.changes = s.nodeChanges(opts.Changed)
		if s.changes != nil {
			s.prev = s.cache.previous(s.gen, s.cfg)
		}
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
	if s.prev != nil && s.patch(rep, cands) {
		return rep, nil
	}
	s.fixed = len(rep.Problems)
	all, err := s.readAll(ctx, rep, cands, workers)
	if err != nil {
		return nil, err
	}
	// Phase 2: every authority is known; each certificate's issuer is the
	// first of them whose key verifies its signature.
	if err := s.match(ctx, all, workers); err != nil {
		return nil, err
	}
	s.cands = nil
	s.assemble(rep, all)
	if s.cache != nil && s.changes == nil {
		// Only a full scan sees every file: a narrowed one leaves what
		// the removed files left in the cache to the next full scan
		// (a file created again is looked at, never trusted by path).
		s.cache.sweep(s.gen)
	}
	if s.cache != nil {
		s.record(rep, cands)
	}
	return rep, nil
}

// readAll is phase 1: read and parse every file on every worker, checking
// each certificate against the authorities found so far, then merge the
// readings into rep in candidate order.
func (s *scanner) readAll(ctx context.Context, rep *Report, cands []candidate, workers int) ([]*found, error) {
	s.cands = cands
	results := make([]*result, len(cands))
	order := processingOrder(cands)
	if err := parallel(ctx, len(cands), workers, func(j int) {
		i := order[j]
		results[i] = s.readCached(cands[i], i)
		s.early(results[i])
	}); err != nil {
		return nil, err
	}
	s.results = results
	var all []*found
	for _, r := range results {
		all = s.collect(rep, r, all)
	}
	return all, nil
}

// parallel runs do(0..n-1) on at most workers goroutines, each taking the
// next index; it stops early (with the error) when ctx ends.
func parallel(ctx context.Context, n, workers int, do func(i int)) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				do(i)
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
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
	s.authorities = append(s.authorities, r.authorities...)
	return append(all, r.found...)
}

// read reads one candidate. It runs on a worker and only reads s.
func (s *scanner) read(c candidate, order int) *result {
	r := &result{untracked: s.cache == nil}
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
		r.track("", f, err)
		if f != nil {
			f.Path = c.path
		}
	} else {
		f, err = s.readFile(r, c.path)
	}
	if err != nil {
		r.noCache = true
		return fail(err)
	}
	if c.keyPair {
		r.keyPair = s.readKeyPair(r, name, f)
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
		fd.info.Key = s.readKey(r, c.keyPath, b.Certs[0], false)
	case c.siblingKey:
		fd.info.Key = s.readKey(r, sibling(c.path), b.Certs[0], true)
	}
	// Bundled chain certificates are authorities named after the file.
	for i, cc := range b.Certs[1:] {
		info := s.describe(fmt.Sprintf("%s#%d", name, i+1), c.path, f.Resolved, kind, cc)
		a := &authority{info: info, cert: cc, bundled: true, wellKnown: c.ca}
		a.partner = c.ca && fd.info.IsCA && fd.info.Key != nil && fd.info.Key.Matches && bytes.Equal(cc.RawSubject, b.Certs[0].RawSubject)
		if pki.IsCA(cc) {
			r.chain = append(r.chain, a)
		}
		if fd.issuer == nil && pki.SignedBy(b.Certs[0], cc) {
			fd.issuer, fd.signed = a, nil
		}
	}
	r.found = append(r.found, fd)
	return r
}

func (s *scanner) newFound(c candidate, name, p, resolved string, kind Kind, cert *x509.Certificate, order int) *found {
	fd := &found{info: s.describe(name, p, resolved, kind, cert), identity: resolved, order: order,
		nodeClient: strings.HasPrefix(cert.Subject.CommonName, "system:node:") && slices.Contains(cert.Subject.Organization, "system:nodes"),
		groups:     cert.Subject.Organization, extra: c.configured, signed: pki.SignedPart(cert),
		akid: string(cert.AuthorityKeyId), rawIssuer: s.rawIssuer(cert)}
	fd.sigID = fd.signed.ID()
	if fd.info.IsCA {
		fd.cert = cert
	}
	return fd
}

// readKey reads a separate private key file and checks it against cert.
// With optional set, a missing file means "no key" rather than a problem.
func (s *scanner) readKey(r *result, keyPath string, cert *x509.Certificate, optional bool) *KeyInfo {
	ki := &KeyInfo{Path: keyPath}
	f, err := s.readFile(r, keyPath)
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
		less := func(i, j int) bool {
			if l[i].Name != l[j].Name {
				return l[i].Name < l[j].Name
			}
			return l[i].Path < l[j].Path
		}
		if !sort.SliceIsSorted(l, less) { // most often they are: candidates are listed in order
			sort.SliceStable(l, less)
		}
	}
	byName(rep.Certificates)
	byName(rep.Authorities)
	byName(rep.ClusterCAs)
	sort.SliceStable(rep.Problems, func(i, j int) bool { return rep.Problems[i].Path < rep.Problems[j].Path })
	sort.SliceStable(rep.KeyPairs, func(i, j int) bool { return rep.KeyPairs[i].Path < rep.KeyPairs[j].Path })
}
