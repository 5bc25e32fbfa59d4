package agent

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/api"
	"github.com/certagent/certagent/agent/inventory"
)

// TestStatusEncodingMatchesMarshalIndent: the document the encoder
// assembles from the certificates it kept is, after every kind of change,
// byte for byte what encoding the whole status gives.
func TestStatusEncodingMatchesMarshalIndent(t *testing.T) {
	h := newHarness(t, "", testingclock.NewFakeClock(t0), "")
	h.stop()
	h.a.mu.Lock()
	base := h.a.status
	h.a.mu.Unlock()
	if len(base.Certificates) < 3 {
		t.Fatalf("%d certificates: the layout should have more", len(base.Certificates))
	}
	var enc statusEncoder
	steps := []struct {
		name   string
		change func(s *api.Status)
		shared bool // the step keeps the previous one's Certificate pointers
	}{
		{"as published", func(*api.Status) {}, false},
		{"nothing changed", func(*api.Status) {}, false},
		{"a later scan: every residual moved", func(s *api.Status) {
			// The certificates hold the residual of an earlier scan, as
			// a cached scan hands them out: the document has the new.
			s.ScannedAt = s.ScannedAt.Add(time.Hour + 500*time.Millisecond)
		}, false},
		{"a new serial", func(s *api.Status) { s.Certificates[0].Serial = "0ABC" }, false},
		{"a renewal status", func(s *api.Status) {
			at := t0.Add(time.Minute)
			s.Certificates[1].Renewal.State, s.Certificates[1].Renewal.NextActionAt = api.StateFailed, &at
			s.Certificates[1].Renewal.LastError = "a <failure> & more"
		}, false},
		{"only a renewal status, the certificates as they were", func(s *api.Status) {
			s.Certificates[1].Renewal.Failures++
			s.Certificates[0].Renewal.State = api.StateFailed
		}, true},
		{"a warning and an expired one", func(s *api.Status) {
			s.Certificates[2].Warnings = append(s.Certificates[2].Warnings, "ünïcode \u2028 warning")
			s.Certificates[2].State, s.Certificates[2].NotAfter = inventory.StateExpired, s.ScannedAt.Add(-5*time.Second)
		}, false},
		{"one removed", func(s *api.Status) { s.Certificates = s.Certificates[1:] }, false},
		{"one added", func(s *api.Status) {
			c := *s.Certificates[0]
			info := *c.Certificate
			info.Name, info.Path, info.Subject = "/opt/new.pem", "/opt/new.pem", `CN="quoted",O=x`
			c.Certificate = &info
			s.Certificates = append(s.Certificates, &c)
		}, false},
		{"none", func(s *api.Status) { s.Certificates = []*api.CertStatus{} }, false},
		{"all back", func(*api.Status) {}, false},
	}
	prev := base
	for _, step := range steps {
		if step.name == "all back" {
			prev = base
		}
		// Published documents are never changed: each step changes a copy.
		s := copyStatus(prev)
		if step.shared {
			s = shareCertificates(prev)
		}
		step.change(s)
		doc, err := enc.encode(s)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		var got bytes.Buffer
		if _, err := doc.WriteTo(&got); err != nil || got.Len() != doc.size || !bytes.Equal(got.Bytes(), doc.bytes()) {
			t.Fatalf("%s: written %d bytes (%v), the document says %d", step.name, got.Len(), err, doc.size)
		}
		want, err := json.MarshalIndent(withResiduals(s), "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if want = append(want, '\n'); !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("%s: the document differs from the whole status encoded:\n%s\nwant:\n%s", step.name, got.Bytes(), want)
		}
		prev = s
	}
}

// shareCertificates copies s and its certificates' statuses, the copies
// pointing at the same Certificates, as a pass that changed only renewal
// statuses builds them.
func shareCertificates(s *api.Status) *api.Status {
	out := *s
	out.Certificates = make([]*api.CertStatus, len(s.Certificates))
	for i, c := range s.Certificates {
		cs := *c
		out.Certificates[i] = &cs
	}
	return &out
}

// withResiduals is a copy of s whose certificates' residual seconds are
// those at its scan time, as a scan without a cache makes them.
func withResiduals(s *api.Status) *api.Status {
	out := copyStatus(s)
	for _, c := range out.Certificates {
		c.ResidualSeconds = inventory.Residual(c.NotAfter, s.ScannedAt)
	}
	return out
}

// copyStatus copies s deep enough that changing a certificate of the copy
// leaves s as it was.
func copyStatus(s *api.Status) *api.Status {
	out := *s
	out.Certificates = make([]*api.CertStatus, len(s.Certificates))
	for i, c := range s.Certificates {
		cs := *c
		info := *c.Certificate
		info.Warnings = append([]string(nil), info.Warnings...)
		cs.Certificate = &info
		out.Certificates[i] = &cs
	}
	return &out
}

// TestSameCertComparesEveryField: a change to any field of a certificate
// or of its renewal status, but the residual seconds, makes the encoder
// encode it again (a field added without its comparison fails here).
func TestSameCertComparesEveryField(t *testing.T) {
	eachFieldChanged(t, sameCert, "ResidualSeconds")
	eachFieldChanged(t, sameRenewal, "")
}

// eachFieldChanged checks that same tells a T from the same T with any one
// field changed, but the field exempt.
func eachFieldChanged[T any](t *testing.T, same func(a, b *T) bool, exempt string) {
	var a T
	fill(t, reflect.ValueOf(&a).Elem(), 0)
	typ := reflect.TypeOf(a)
	for i := range typ.NumField() {
		b := a
		fill(t, reflect.ValueOf(&b).Elem().Field(i), 1)
		if name := typ.Field(i).Name; same(&a, &b) != (name == exempt) {
			t.Errorf("%s.%s changed: same says %v", typ.Name(), name, same(&a, &b))
		}
	}
}

// fill sets v (and, for a struct, each of its fields) to a value that
// depends on n: fill(v, 0) and fill(v, 1) always differ.
func fill(t *testing.T, v reflect.Value, n int) {
	t.Helper()
	if v.Type() == reflect.TypeOf(time.Time{}) {
		v.Set(reflect.ValueOf(t0.Add(time.Duration(n) * time.Second)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(string(rune('a' + n)))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(n + 1))
	case reflect.Bool:
		v.SetBool(n == 1)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(t, s.Index(0), n)
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(t, p.Elem(), n)
		v.Set(p)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(t, v.Field(i), n)
		}
	default:
		t.Fatalf("fill: no value for a %s", v.Type())
	}
}
