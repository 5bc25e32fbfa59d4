package inventory

import (
	"slices"
	"time"
)

// SameButResidual reports whether a and b say the same about a
// certificate, every field compared but ResidualSeconds (which moves with
// the scan time). The same pointer is the same certificate: a scan with a
// Cache hands out a previous scan's *Certificate again when nothing in it
// changed, and no one changes a Certificate once a scan returned it.
func SameButResidual(a, b *Certificate) bool {
	if a == b {
		return true
	}
	return a.Name == b.Name && a.Path == b.Path && a.ResolvedPath == b.ResolvedPath && a.Kind == b.Kind &&
		a.Kubeconfig == b.Kubeconfig && a.User == b.User && slices.Equal(a.UsedBy, b.UsedBy) && a.Cluster == b.Cluster &&
		a.Subject == b.Subject && a.Issuer == b.Issuer && slices.Equal(a.DNSNames, b.DNSNames) &&
		slices.Equal(a.IPAddresses, b.IPAddresses) && slices.Equal(a.URIs, b.URIs) &&
		slices.Equal(a.EmailAddresses, b.EmailAddresses) && a.Serial == b.Serial && a.SerialDecimal == b.SerialDecimal &&
		a.SubjectParts == b.SubjectParts && samePtr(a.IssuerParts, b.IssuerParts) &&
		sameTime(a.NotBefore, b.NotBefore) && sameTime(a.NotAfter, b.NotAfter) &&
		a.KeyAlgorithm == b.KeyAlgorithm && a.KeySize == b.KeySize && a.IsCA == b.IsCA &&
		a.CAName == b.CAName && a.CAPath == b.CAPath && a.CAKeyPresent == b.CAKeyPresent &&
		a.ExternallyManaged == b.ExternallyManaged && samePtr(a.Key, b.Key) && a.RenewalPath == b.RenewalPath &&
		a.LeftAlone == b.LeftAlone && sameTime(a.RenewalWindowStart, b.RenewalWindowStart) && a.State == b.State &&
		slices.Equal(a.Warnings, b.Warnings)
}

// sameTime: the same instant in the same zone, so the same text.
func sameTime(a, b time.Time) bool { return a.Equal(b) && a.Location() == b.Location() }

func samePtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
