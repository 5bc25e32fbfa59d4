package agent

import (
	"slices"
	"sort"
	"testing"

	"github.com/certagent/certagent/agent/inventory"
)

// TestCertDirsFollowChanges: the directories of the certificates are the
// previous ones only while every certificate is the previous one or has
// its paths; one moved elsewhere, added or gone is seen.
func TestCertDirsFollowChanges(t *testing.T) {
	a := &Agent{}
	certs := []*inventory.Certificate{{Path: "/a/x.pem"}, {Path: "/b/y.pem", ResolvedPath: "/c/y.pem"}}
	steps := []struct {
		name   string
		change func()
		want   []string
	}{
		{"first", func() {}, []string{"/a", "/b", "/c"}},
		{"a new Certificate, the same paths", func() { certs[0] = &inventory.Certificate{Path: "/a/x.pem", Serial: "2"} }, []string{"/a", "/b", "/c"}},
		{"a link now leads elsewhere", func() { certs[1] = &inventory.Certificate{Path: "/b/y.pem", ResolvedPath: "/d/y.pem"} }, []string{"/a", "/b", "/d"}},
		{"one added", func() { certs = append(certs, &inventory.Certificate{Path: "/e/z.pem"}) }, []string{"/a", "/b", "/d", "/e"}},
		{"one gone", func() { certs = certs[1:] }, []string{"/b", "/d", "/e"}},
	}
	for _, st := range steps {
		certs = slices.Clone(certs) // a report's list is never changed: each scan makes its own
		st.change()
		var got []string
		for d := range a.certDirs(certs) {
			got = append(got, d)
		}
		sort.Strings(got)
		if !slices.Equal(got, st.want) {
			t.Errorf("%s: %v, want %v", st.name, got, st.want)
		}
	}
}
