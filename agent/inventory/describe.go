package inventory

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"path"
	"strings"

	"github.com/certagent/certagent/rotate/pki"
)

// describe extracts what the report shows of a certificate. The result
// holds no reference to cert, so leaves can be dropped after reading.
func (s *scanner) describe(name, p, resolved string, kind Kind, c *x509.Certificate) *Certificate {
	alg, bits := pki.DescribeKey(c.PublicKey)
	issuer, issuerParts := s.issuerName(c)
	info := &Certificate{
		Name: name, Path: p, Kind: kind,
		Subject: c.Subject.String(), Issuer: issuer,
		SubjectParts: nameParts(c.Subject), IssuerParts: issuerParts,
		DNSNames: c.DNSNames, EmailAddresses: c.EmailAddresses,
		Serial: strings.ToUpper(c.SerialNumber.Text(16)), SerialDecimal: c.SerialNumber.String(),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(),
		KeyAlgorithm: alg, KeySize: bits, IsCA: pki.IsCA(c),
	}
	if resolved != "" && resolved != p {
		info.ResolvedPath = resolved
	}
	for _, ip := range c.IPAddresses {
		info.IPAddresses = append(info.IPAddresses, ip.String())
	}
	for _, u := range c.URIs {
		info.URIs = append(info.URIs, u.String())
	}
	return info
}

// issuerName renders the issuer's name and picks its parts once per
// distinct issuer: thousands of certificates usually share a handful.
func (s *scanner) issuerName(c *x509.Certificate) (string, *NameParts) {
	if v, ok := s.names.Load(string(c.RawIssuer)); ok {
		n := v.(*issuerInfo)
		return n.name, n.parts
	}
	parts := nameParts(c.Issuer)
	n := &issuerInfo{name: c.Issuer.String(), parts: &parts, raw: string(c.RawIssuer)}
	if v, loaded := s.names.LoadOrStore(n.raw, n); loaded {
		n = v.(*issuerInfo)
	}
	return n.name, n.parts
}

// rawIssuer returns c's raw issuer name, one string per distinct issuer.
func (s *scanner) rawIssuer(c *x509.Certificate) string {
	if v, ok := s.names.Load(string(c.RawIssuer)); ok {
		return v.(*issuerInfo).raw
	}
	return string(c.RawIssuer)
}

// issuerInfo is what the scanner keeps per distinct issuer name.
type issuerInfo struct {
	name  string
	parts *NameParts
	raw   string // the DER of the name
}

// nameParts takes the first value of each attribute, as the exporter does
// (a multi-valued O=Acme, Inc.+O=system:masters shows "Acme, Inc.").
func nameParts(n pkix.Name) NameParts {
	first := func(l []string) string {
		if len(l) == 0 {
			return ""
		}
		return l[0]
	}
	return NameParts{C: first(n.Country), ST: first(n.Province), L: first(n.Locality),
		O: first(n.Organization), OU: first(n.OrganizationalUnit), CN: n.CommonName}
}

// readKubeconfig reports the client certificates of a kubeconfig: embedded
// ones in place, referenced ones by reading the files they name.
func (s *scanner) readKubeconfig(c candidate, name string, f *pki.File, order int, r *result) *result {
	creds, cas, err := pki.LoadKubeconfig(f.Data, path.Dir(c.path))
	if err != nil {
		r.problems = append(r.problems, Problem{Path: c.path, Name: c.name, Error: err.Error()})
		return r
	}
	s.readClusterCAs(c, name, cas, r)
	for i, cr := range creds {
		credName := name
		if i > 0 || !cr.Current {
			credName = name + ":" + cr.User
		}
		if cr.Embedded() {
			s.readEmbedded(c, credName, f, cr, order, r)
		} else {
			s.readReferenced(c, credName, f, cr, order, r)
		}
	}
	return r
}

// readClusterCAs reports every certificate of the clusters'
// certificate-authority-data, named <kubeconfig>#cluster/<cluster> (and
// #2, #3, ... for the further certificates of a bundle).
func (s *scanner) readClusterCAs(c candidate, name string, cas []pki.ClusterCA, r *result) {
	for _, ca := range cas {
		b, err := pki.ParseBundle(ca.Data)
		if err != nil {
			r.problems = append(r.problems, Problem{Path: c.path, Name: name,
				Error: fmt.Sprintf("cluster %q certificate-authority-data: %v", ca.Cluster, err)})
			continue
		}
		for i, cert := range b.Certs {
			n := name + "#cluster/" + ca.Cluster
			if i > 0 {
				n += fmt.Sprintf("#%d", i+1)
			}
			info := s.describe(n, c.path, "", KindKubeconfigEmbedded, cert)
			info.Kubeconfig, info.Cluster, info.RenewalPath = c.path, ca.Cluster, RenewNone
			r.clusterCAs = append(r.clusterCAs, info)
		}
	}
}

func (s *scanner) readEmbedded(c candidate, name string, f *pki.File, cr pki.Credential, order int, r *result) {
	b, err := pki.ParseBundle(cr.CertData)
	if err != nil {
		r.problems = append(r.problems, Problem{Path: c.path, Name: name,
			Error: fmt.Sprintf("user %q client-certificate-data: %v", cr.User, err)})
		return
	}
	fd := s.newFound(c, name, c.path, "", KindKubeconfigEmbedded, b.Certs[0], order)
	fd.identity = f.Resolved + "#" + cr.User
	fd.expectKey = true
	fd.info.Kubeconfig, fd.info.User = c.path, cr.User
	ki := &KeyInfo{Path: c.path, Mode: mode(f.Mode), UID: f.UID, GID: f.GID}
	switch {
	case len(cr.KeyData) > 0:
		ki = embeddedKey(c.path, f, cr.KeyData, b.Certs[0])
	case cr.KeyPath != "":
		ki = s.readKey(r, cr.KeyPath, b.Certs[0], false)
	}
	fd.info.Key = ki
	r.found = append(r.found, fd)
}

// embeddedKey checks client-key-data from the kubeconfig kc (read as f)
// against cert. Its path is the kubeconfig's.
func embeddedKey(kc string, f *pki.File, keyData []byte, cert *x509.Certificate) *KeyInfo {
	ki := &KeyInfo{Path: kc, Present: true, Mode: mode(f.Mode), UID: f.UID, GID: f.GID}
	if key, err := pki.ParseKeyPEM(keyData); err != nil {
		ki.Error = "client-key-data: " + err.Error()
	} else {
		ki.Matches = pki.KeyMatches(cert, key)
	}
	return ki
}

// readReferenced reads a client certificate a kubeconfig (c, read as kf)
// names by path, with its key: client-key-data, a client-key file, or the
// key in the certificate file itself.
func (s *scanner) readReferenced(c candidate, name string, kf *pki.File, cr pki.Credential, order int, r *result) {
	f, err := s.readFile(r, cr.CertPath)
	if err != nil {
		r.problems = append(r.problems, Problem{Path: c.path, Name: name,
			Error: fmt.Sprintf("user %q client-certificate: %v", cr.User, err)})
		return
	}
	b, err := pki.ParseBundle(f.Data)
	if err != nil {
		r.problems = append(r.problems, Problem{Path: cr.CertPath, Name: name, Error: err.Error()})
		return
	}
	kind := KindKubeconfigReference
	fd := s.newFound(c, name, cr.CertPath, f.Resolved, kind, b.Certs[0], order)
	fd.expectKey = true
	fd.info.Kubeconfig, fd.info.User = c.path, cr.User
	switch {
	case len(cr.KeyData) > 0:
		fd.info.Key = embeddedKey(c.path, kf, cr.KeyData, b.Certs[0])
	case cr.KeyPath == cr.CertPath && b.Key != nil, cr.KeyPath == "" && b.Key != nil:
		fd.info.Key = &KeyInfo{Path: cr.CertPath, Present: true, Matches: pki.KeyMatches(b.Certs[0], b.Key),
			Mode: mode(f.Mode), UID: f.UID, GID: f.GID}
	case cr.KeyPath != "":
		fd.info.Key = s.readKey(r, cr.KeyPath, b.Certs[0], false)
	}
	r.found = append(r.found, fd)
}

// readKeyPair checks sa.key against sa.pub.
func (s *scanner) readKeyPair(r *result, name string, f *pki.File) *KeyPair {
	pubPath := strings.TrimSuffix(f.Path, ".key") + ".pub"
	kp := &KeyPair{Name: name, Path: f.Path, PublicKeyPath: pubPath, Mode: mode(f.Mode)}
	key, err := pki.ParseKeyPEM(f.Data)
	if err != nil {
		kp.Error = "parse private key: " + err.Error()
		return kp
	}
	kp.KeyAlgorithm, kp.KeySize = pki.DescribeKey(key.Public())
	pf, err := s.readFile(r, pubPath)
	if err != nil {
		kp.Error = "public key: " + err.Error()
		return kp
	}
	pubs, err := pki.ParsePublicKeysPEM(pf.Data)
	if err != nil || len(pubs) == 0 {
		kp.Error = fmt.Sprintf("parse public key %s: %v", pubPath, err)
		return kp
	}
	kp.Matches = pki.PublicKeyMatches(pubs[0], key.Public())
	if !kp.Matches {
		kp.Error = "public key does not match private key"
	}
	return kp
}
