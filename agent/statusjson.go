package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
)

// statusEncoder encodes the status document as json.MarshalIndent(s, "",
// "  ") would, byte for byte, at the cost of what changed: each
// certificate's JSON is kept from the previous encoding and encoded again
// only when the certificate or its renewal status differ. Its residual
// seconds, which move with every scan, are written in at assembly, from
// its NotAfter and the document's scan time (a certificate a cached scan
// handed out again holds the residual of the scan that made it). With
// 10,000 certificates the encoding is most of what a change costs; one
// certificate's is a few microseconds.
type statusEncoder struct {
	frags map[fragKey]*fragment // the previous encoding's certificates
	list  []*fragment           // the same, in the previous document's order
	gen   uint64                // the current encoding
}

// fragKey names a certificate in the document.
type fragKey struct{ name, path string }

// fragment is one certificate's JSON as it sits in the document's list,
// after the separator from the previous one (",\n    "), with what it
// was encoded from.
type fragment struct {
	cert    *inventory.Certificate // never changed once a scan returned it
	renewal api.RenewalStatus
	data    []byte
	at, end int    // data[at:end] is the residualSeconds value
	gen     uint64 // the latest encoding that used it
}

// certsKey is the document's list of certificates, which the encoder
// fills in: the first one at two spaces of indentation is the top level's.
var certsKey = []byte("\n  \"certificates\": []")

// residualKey precedes a certificate's residual seconds in its fragment.
var residualKey = []byte("\n      \"residualSeconds\": ")

// statusDoc is an encoded status document in pieces: the parts of the
// document around the certificates, and each certificate's kept JSON
// around its residual seconds. It is never changed once made.
type statusDoc struct {
	pieces [][]byte
	size   int
}

// WriteTo writes the document to w.
func (d *statusDoc) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, p := range d.pieces {
		m, err := w.Write(p)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// bytes returns the document in one piece.
func (d *statusDoc) bytes() []byte {
	out := make([]byte, 0, d.size)
	for _, p := range d.pieces {
		out = append(out, p...)
	}
	return out
}

// encode returns the document for s, keeping the certificates' JSON for
// the next call.
func (e *statusEncoder) encode(s *api.Status) (*statusDoc, error) {
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
	if e.frags == nil {
		e.frags = make(map[fragKey]*fragment, len(s.Certificates))
	}
	e.gen++
	list := make([]*fragment, len(s.Certificates))
	used := 0
	for i, c := range s.Certificates {
		if i < len(e.list) && e.list[i].cert == c.Certificate && sameRenewal(&e.list[i].renewal, &c.Renewal) {
			// In its place in the previous document: no look-up.
			list[i] = e.list[i]
			if list[i].gen != e.gen {
				list[i].gen = e.gen
				used++
			}
			continue
		}
		k := fragKey{c.Name, c.Path}
		f := e.frags[k]
		if f == nil || !sameCert(f.cert, c.Certificate) || !sameRenewal(&f.renewal, &c.Renewal) {
			if f, err = newFragment(c); err != nil {
				return nil, err
			}
			e.frags[k] = f
		}
		if f.gen != e.gen {
			f.gen = e.gen
			used++
		}
		list[i] = f
	}
	e.list = list
	if used < len(e.frags) { // drop the certificates gone
		for k, f := range e.frags {
			if f.gen != e.gen {
				delete(e.frags, k)
			}
		}
	}
	// Every residual's digits in one buffer, made before the pieces
	// point into it.
	nums := make([]byte, 0, 21*len(list))
	ends := make([]int, len(list))
	for i, c := range s.Certificates {
		nums = strconv.AppendInt(nums, inventory.Residual(c.NotAfter, s.ScannedAt), 10)
		ends[i] = len(nums)
	}
	d := &statusDoc{pieces: make([][]byte, 0, 3*len(list)+3)}
	d.add(head[:cut])
	start := 0
	for i, f := range list {
		from := 0
		if i == 0 {
			from = 1 // no comma before the first
		}
		d.add(f.data[from:f.at])
		d.add(nums[start:ends[i]])
		d.add(f.data[f.end:])
		start = ends[i]
	}
	if len(list) > 0 {
		d.add([]byte("\n  "))
	}
	d.add(head[cut:])
	d.add([]byte("\n"))
	return d, nil
}

func (d *statusDoc) add(p []byte) {
	d.pieces = append(d.pieces, p)
	d.size += len(p)
}

// newFragment encodes one certificate at its depth in the document.
// Its data begins with the separator from the previous one.
func newFragment(c *api.CertStatus) (*fragment, error) {
	data, err := json.MarshalIndent(c, "    ", "  ")
	if err != nil {
		return nil, err
	}
	data = append([]byte(",\n    "), data...)
	at := bytes.Index(data, residualKey)
	if at < 0 {
		return nil, errors.New("status encoding: no residualSeconds in a certificate")
	}
	at += len(residualKey)
	end := at
	for end < len(data) && (data[end] == '-' || data[end] >= '0' && data[end] <= '9') {
		end++
	}
	return &fragment{cert: c.Certificate, renewal: c.Renewal, data: data, at: at, end: end}, nil
}

// sameCert reports whether a and b encode alike but for their residual
// seconds. Every field is compared (TestSameCertComparesEveryField).
func sameCert(a, b *inventory.Certificate) bool { return inventory.SameButResidual(a, b) }

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
