package carotate

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/certagent/certagent/rotate/pki"
)

// ProofPolicy marks a rotation proof: a certificate policy OID of
// certagent's (a UUID arc, ITU-T X.667), in no other certificate.
var ProofPolicy = mustOID("2.25.232662511731460228765505053580118039508")

func mustOID(s string) x509.OID {
	o, err := x509.ParseOID(s)
	if err != nil {
		panic(err)
	}
	return o
}

// Prove makes the proof that the holder of old's key chose next as its
// successor: a certificate of next's subject and public key, signed by
// oldKey, marked with ProofPolicy. It is valid for no time at all
// (notBefore = notAfter), so it proves and never authenticates; it goes
// in no trust bundle.
func Prove(old *x509.Certificate, oldKey crypto.Signer, next *x509.Certificate, now time.Time) ([]byte, error) {
	if oldKey == nil || !pki.KeyMatches(old, oldKey) {
		return nil, errors.New("the proof needs the old CA's key")
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	at := now.UTC().Truncate(time.Second)
	t := &x509.Certificate{SerialNumber: serial.Add(serial, big.NewInt(1)), RawSubject: next.RawSubject,
		NotBefore: at, NotAfter: at, BasicConstraintsValid: true, Policies: []x509.OID{ProofPolicy}}
	der, err := x509.CreateCertificate(rand.Reader, t, old, next.PublicKey, oldKey)
	if err != nil {
		return nil, fmt.Errorf("sign the rotation proof: %w", err)
	}
	return pki.EncodeCertPEM(&x509.Certificate{Raw: der}), nil
}

// CheckProof checks that proofPEM is a proof (Prove) that old's key chose
// next: one certificate marked ProofPolicy, of next's subject and public
// key, issued and validly signed by old.
func CheckProof(proofPEM []byte, old, next *x509.Certificate) error {
	b, err := pki.ParseBundle(proofPEM)
	if err != nil {
		return fmt.Errorf("newCAProof: %w", err)
	}
	if b.Format != pki.FormatPEM || len(b.Certs) != 1 || b.Key != nil {
		return errors.New("newCAProof: not exactly one PEM certificate")
	}
	p := b.Certs[0]
	switch {
	case !slices.ContainsFunc(p.Policies, ProofPolicy.Equal):
		return errors.New("newCAProof is not a certagent rotation proof")
	case !bytes.Equal(p.RawSubject, next.RawSubject) || !pki.PublicKeyMatches(p.PublicKey, next.PublicKey):
		return errors.New("newCAProof is not for newCA (another subject or key)")
	case !bytes.Equal(p.RawIssuer, old.RawSubject) || p.CheckSignatureFrom(old) != nil:
		return fmt.Errorf("newCAProof is not signed by the old CA (%s, serial %X): only the old CA key's holder may choose its successor", old.Subject, old.SerialNumber)
	}
	return nil
}

// MinLifetime is the least a new CA must have left when a node trusts
// it: a year (kubeadm's leaves live a year), or half of the old CA's
// whole lifetime when that is shorter.
func MinLifetime(old *x509.Certificate) time.Duration {
	return min(365*24*time.Hour, old.NotAfter.Sub(old.NotBefore)/2)
}

// CheckLifetime checks that next may be trusted at now in place of old:
// valid now, with MinLifetime(old) left, and a key no weaker than old's
// (nor than RSA 2048).
func CheckLifetime(old, next *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(next.NotBefore):
		return fmt.Errorf("the new CA is not valid yet (from %s)", next.NotBefore.UTC().Format(time.RFC3339))
	case now.After(next.NotAfter):
		return fmt.Errorf("the new CA expired %s", next.NotAfter.UTC().Format(time.RFC3339))
	case next.NotAfter.Sub(now) < MinLifetime(old):
		return fmt.Errorf("the new CA ends %s: less than %s left (at least a year, or half the old CA's lifetime when shorter)",
			next.NotAfter.UTC().Format(time.RFC3339), MinLifetime(old).Round(time.Hour))
	}
	ns, olds := strength(next.PublicKey), strength(old.PublicKey)
	if ns < max(olds, 112) {
		a, bits := pki.DescribeKey(next.PublicKey)
		oa, obits := pki.DescribeKey(old.PublicKey)
		return fmt.Errorf("the new CA's key (%s %d) is weaker than the old CA's (%s %d) or than RSA 2048", a, bits, oa, obits)
	}
	return nil
}

// strength is a public key's security strength in bits (NIST SP 800-57).
func strength(pub crypto.PublicKey) int {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch n := k.N.BitLen(); {
		case n >= 15360:
			return 256
		case n >= 7680:
			return 192
		case n >= 3072:
			return 128
		case n >= 2048:
			return 112
		}
		return 0
	case *ecdsa.PublicKey:
		return k.Curve.Params().BitSize / 2
	case ed25519.PublicKey:
		return 128
	}
	return 0
}
