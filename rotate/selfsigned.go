package rotate

import (
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	certutil "k8s.io/client-go/util/cert"

	"github.com/certagent/certagent/rotate/pki"
)

// prepareSelfSigned makes a new self-signed pair for a SelfSigned target
// the way the kubelet makes kubelet.crt when it starts without one:
// client-go's GenerateSelfSignedCertKey, for the host named in the old
// certificate's subject ("<host>@<unix time>") and with the old DNS and IP
// names, a new CA bundled after the leaf, RSA 2048 keys. The lifetime is
// Policy.Validity, or client-go's (and so the kubelet's) one year.
// KeyAlgorithm and ReuseKey do not apply: the CA and its key are new.
func prepareSelfSigned(opts Options, p *prepared) error {
	t := p.t
	if t.Storage != StoragePair {
		return fmt.Errorf("%s: a self-signed re-issue writes a certificate and a key file, not %s", t.Name, t.Storage)
	}
	cur, err := load(opts.Root, t)
	if err != nil {
		return err
	}
	p.cur = cur
	host, ips, dns := selfSignedNames(cur.cert)
	if host == "" {
		return fmt.Errorf("%s: no host name in the subject or names of the current certificate", t.Name)
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKeyWithOptions(certutil.SelfSignedCertKeyOptions{
		Host: host, AlternateIPs: ips, AlternateDNS: dns, MaxAge: opts.Policy.Validity,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", t.Name, err)
	}
	b, err := pki.ParseBundle(certPEM)
	if err != nil {
		return fmt.Errorf("%s: new certificate: %w", t.Name, err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		return fmt.Errorf("%s: new key: %w", t.Name, err)
	}
	// Written as client-go wrote them: the CA after the leaf, the key in
	// the block client-go picks.
	kubelets := *cur
	kubelets.keyFormat = pki.KeyPEMFormat(keyPEM)
	if p.files, err = render(t, &kubelets, b.Certs, key); err != nil {
		return err
	}
	p.cert, p.key = b.Certs[0], key
	return nil
}

// selfSignedNames splits a kubelet self-signed certificate's names into
// the host GenerateSelfSignedCertKey takes and the other IPs and DNS names,
// so that the new certificate has the old names in the old order. The
// host is the subject's "<host>@<time>" prefix, or else the first DNS name
// or IP.
func selfSignedNames(c *x509.Certificate) (host string, ips []net.IP, dns []string) {
	ips, dns = slices.Clone(c.IPAddresses), slices.Clone(c.DNSNames)
	if i := strings.LastIndex(c.Subject.CommonName, "@"); i > 0 {
		host = c.Subject.CommonName[:i]
	}
	if ip := net.ParseIP(host); ip != nil && len(ips) > 0 && ips[0].Equal(ip) {
		return host, ips[1:], dns
	}
	if host != "" && len(dns) > 0 && dns[0] == host {
		return host, ips, dns[1:]
	}
	switch {
	case len(dns) > 0:
		return dns[0], ips, dns[1:]
	case len(ips) > 0:
		return ips[0].String(), ips[1:], dns
	}
	return "", nil, nil
}

// verifySelfSigned is verify's narrow mode for a SelfSigned target: the
// first certificate bundled after the leaf is a self-signed CA, the leaf
// chains to it for server auth at now, and the leaf's DNS names and IPs
// are the old certificate's. Subject and CA are not compared: both are
// new by design (the kubelet stamps the subject with the time).
func verifySelfSigned(t Target, old, cert *x509.Certificate, bundled []*x509.Certificate, now time.Time) error {
	if len(bundled) == 0 {
		return fmt.Errorf("%s: no CA bundled after the certificate", t.Name)
	}
	ca := bundled[0]
	if !ca.IsCA || !pki.SignedBy(ca, ca) {
		return fmt.Errorf("%s: the bundled certificate %s is not a self-signed CA", t.Name, ca.Subject)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, CurrentTime: now}); err != nil {
		return fmt.Errorf("%s: chain to its bundled CA: %w", t.Name, err)
	}
	return sameNames(old, cert)
}

// sameNames compares the DNS and IP names of two certificates, in order.
func sameNames(old, cert *x509.Certificate) error {
	if !slices.Equal(old.DNSNames, cert.DNSNames) {
		return fmt.Errorf("DNS names changed: %v -> %v", old.DNSNames, cert.DNSNames)
	}
	if !slices.EqualFunc(old.IPAddresses, cert.IPAddresses, net.IP.Equal) {
		return fmt.Errorf("IP addresses changed: %v -> %v", old.IPAddresses, cert.IPAddresses)
	}
	return nil
}
