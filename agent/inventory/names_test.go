package inventory

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestNamePartsAndDecimalSerial: the parsed name attributes survive commas
// and multi-valued attributes, and the serial is kept in decimal too.
func TestNamePartsAndDecimalSerial(t *testing.T) {
	dir, _ := layout(t, pkitest.Layout{})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := new(big.Int).SetString("1234567890123456789", 10)
	name := pkix.Name{Country: []string{"JP"}, Province: []string{"Tokyo"}, Locality: []string{"Chiyoda"},
		Organization: []string{"Acme, Inc.", "system:masters"}, OrganizationalUnit: []string{"Platform"}, CommonName: "web, east"}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: name, NotBefore: now.Add(-1e9), NotAfter: now.AddDate(1, 0, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	put(t, dir, "/srv/extra/web.crt", pkitest.CertPEM(c), 0o644)
	rep := scan(t, dir, mustConfig(t, "paths: [/srv/extra]"), now)
	got := byName(rep)["/srv/extra/web.crt"]
	if got == nil {
		t.Fatalf("web.crt not reported: %v", names(rep.Certificates))
	}
	want := NameParts{C: "JP", ST: "Tokyo", L: "Chiyoda", O: "Acme, Inc.", OU: "Platform", CN: "web, east"}
	if got.SubjectParts != want || got.IssuerParts == nil || *got.IssuerParts != want {
		t.Errorf("parts: subject %+v issuer %+v, want %+v", got.SubjectParts, got.IssuerParts, want)
	}
	if got.SerialDecimal != "1234567890123456789" || got.Serial != "112210F47DE98115" {
		t.Errorf("serial %s / %s", got.SerialDecimal, got.Serial)
	}
	// Leaves of one issuer share its parts.
	api, fp := byName(rep)["apiserver"], byName(rep)["apiserver-kubelet-client"]
	if api.IssuerParts != fp.IssuerParts || api.IssuerParts.CN != "kubernetes" {
		t.Errorf("issuer parts not shared: %p %p %+v", api.IssuerParts, fp.IssuerParts, api.IssuerParts)
	}
}

// TestClusterCAs: each kubeconfig's certificate-authority-data is reported
// under clusterCAs; bad data is a problem, never a panic.
func TestClusterCAs(t *testing.T) {
	dir, n := layout(t, pkitest.Layout{})
	rep := scan(t, dir, nil, now)
	var admin *Certificate
	for _, c := range rep.ClusterCAs {
		if c.Name == "admin.conf#cluster/kubernetes" {
			admin = c
		}
	}
	if admin == nil {
		t.Fatalf("no cluster CA for admin.conf in %v", names(rep.ClusterCAs))
	}
	if admin.Path != "/etc/kubernetes/admin.conf" || admin.Kubeconfig != admin.Path || admin.Cluster != "kubernetes" ||
		admin.SerialDecimal != n.CA.Cert.SerialNumber.String() || admin.RenewalPath != RenewNone || admin.State != StateOK {
		t.Errorf("admin.conf cluster CA: %+v", admin)
	}
	for _, c := range append(rep.Certificates, rep.Authorities...) {
		if strings.Contains(c.Name, "#cluster/") {
			t.Errorf("cluster CA %s listed among the certificates", c.Name)
		}
	}
	bad := "apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster: {server: 'https://x', certificate-authority-data: " +
		base64.StdEncoding.EncodeToString([]byte("not a certificate")) + "}\n"
	put(t, dir, "/etc/kubernetes/bad.conf", []byte(bad), 0o600)
	rep = scan(t, dir, mustConfig(t, "paths: [/etc/kubernetes/bad.conf]"), now)
	found := false
	for _, p := range rep.Problems {
		found = found || (p.Path == "/etc/kubernetes/bad.conf" && strings.Contains(p.Error, `cluster "x" certificate-authority-data`))
	}
	if !found {
		t.Errorf("no problem for bad cluster CA data: %+v", rep.Problems)
	}
}
