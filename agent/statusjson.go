package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
)

// statusEncoder encodes the status document as json.MarshalIndent(s, "",
// "  ") would, byte for byte, at the cost of what changed: each
// certificate's JSON is kept from the previous encoding and encoded again
// only when the certificate or its renewal status differ. Its residual
// seconds, which move with every scan, are written in at assembly. With
// 10,000 certificates the encoding is most of what a change costs; one
// certificate's is a few microseconds.
type statusEncoder struct {
	frags map[fragKey]*fragment // the previous encoding's certificates
}

// fragKey names a certificate in the document.
type fragKey struct{ name, path string }

// fragment is one certificate's JSON as it sits in the document's list,
// with what it was encoded from.
type fragment struct {
	cert    inventory.Certificate
	renewal api.RenewalStatus
	data    []byte
	at, end int // data[at:end] is the residualSeconds value
}

// certsKey is the document's list of certificates, which the encoder
// fills in: the first one at two spaces of indentation is the top level's.
var certsKey = []byte("\n  \"certificates\": []")

// residualKey precedes a certificate's residual seconds in its fragment.
var residualKey = []byte("\n      \"residualSeconds\": ")

// encode returns the document for s, keeping the certificates' JSON for
// the next call.
func (e *statusEncoder) encode(s *api.Status) ([]byte, error) {
	shell := *s
	shell.Certificates = []*api.CertStatus{}
	head, err := json.MarshalIndent(&shell, "", "  ")
	if err != nil {
		return nil, err
	}
	cut := bytes.Index(head, certsKey)
	if cut < 0 {
		return nil, errors.New("status encoding: no certificates list")
	}
	cut += len(certsKey) - 1 // before the list's "]"
	frags := make(map[fragKey]*fragment, len(s.Certificates))
	list := make([]*fragment, len(s.Certificates))
	size := len(head) + 1
	for i, c := range s.Certificates {
		k := fragKey{c.Name, c.Path}
		f := e.frags[k]
		if f == nil || !sameCert(&f.cert, c.Certificate) || !sameRenewal(&f.renewal, &c.Renewal) {
			if f, err = newFragment(c); err != nil {
				return nil, err
			}
		}
		frags[k], list[i] = f, f
		size += len(f.data) + 8
	}
	e.frags = frags
	out := make([]byte, 0, size)
	out = append(out, head[:cut]...)
	for i, f := range list {
		if i == 0 {
			out = append(out, "\n    "...)
		} else {
			out = append(out, ",\n    "...)
		}
		out = append(out, f.data[:f.at]...)
		out = strconv.AppendInt(out, s.Certificates[i].ResidualSeconds, 10)
		out = append(out, f.data[f.end:]...)
	}
	if len(list) > 0 {
		out = append(out, "\n  "...)
	}
	out = append(out, head[cut:]...)
	return append(out, '\n'), nil
}

// newFragment encodes one certificate at its depth in the document.
func newFragment(c *api.CertStatus) (*fragment, error) {
	data, err := json.MarshalIndent(c, "    ", "  ")
	if err != nil {
		return nil, err
	}
	at := bytes.Index(data, residualKey)
	if at < 0 {
		return nil, errors.New("status encoding: no residualSeconds in a certificate")
	}
	at += len(residualKey)
	end := at
	for end < len(data) && (data[end] == '-' || data[end] >= '0' && data[end] <= '9') {
		end++
	}
	return &fragment{cert: *c.Certificate, renewal: c.Renewal, data: data, at: at, end: end}, nil
}

// sameCert reports whether a and b encode alike but for their residual
// seconds. Every field is compared (TestSameCertComparesEveryField).
func sameCert(a, b *inventory.Certificate) bool {
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

// sameRenewal reports whether a and b encode alike.
func sameRenewal(a, b *api.RenewalStatus) bool {
	return a.State == b.State && a.NextAction == b.NextAction && a.PendingCSR == b.PendingCSR &&
		sameTimePtr(a.NextActionAt, b.NextActionAt) && a.Reason == b.Reason && a.Failures == b.Failures &&
		sameTimePtr(a.LastAttempt, b.LastAttempt) && a.LastError == b.LastError &&
		sameTimePtr(a.LastRenewal, b.LastRenewal) && a.LastResult == b.LastResult
}

// sameTime: the same instant in the same zone, so the same text.
func sameTime(a, b time.Time) bool { return a.Equal(b) && a.Location() == b.Location() }

func sameTimePtr(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return sameTime(*a, *b)
}

func samePtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
