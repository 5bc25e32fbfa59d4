package pki_test

import (
	"testing"

	"github.com/certagent/certagent/rotate/pki"
)

// FuzzParseBundle: no input may panic, and a parse that succeeds returns
// at least one certificate. Seeds live in testdata/fuzz/FuzzParseBundle.
func FuzzParseBundle(f *testing.F) {
	ca := testCA(f)
	f.Add(ca.Cert.Raw)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := pki.ParseBundle(data)
		if err == nil && (b == nil || len(b.Certs) == 0) {
			t.Fatalf("success without a certificate: %+v", b)
		}
	})
}

// FuzzParseKubeconfig: no input may panic.
func FuzzParseKubeconfig(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: Config\nusers: [{name: a, user: {client-certificate-data: AAAA}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		creds, err := pki.ParseKubeconfig(data, "/etc/kubernetes")
		if err != nil && creds != nil {
			t.Fatal("credentials returned with an error")
		}
	})
}
