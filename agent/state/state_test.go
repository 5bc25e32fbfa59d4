package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoundTripAndCorruption(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	s, warn, err := Open(dir, now)
	if err != nil || warn != nil {
		t.Fatal(err, warn)
	}
	s.Put("apiserver", Cert{Serial: "AB", Failures: 2, LastError: "boom", NextAttempt: now.Add(time.Minute)})
	if err := s.Save(); err != nil {
		t.Fatal(err)
	}
	s2, warn, err := Open(dir, now)
	if err != nil || warn != nil {
		t.Fatal(err, warn)
	}
	if c := s2.Get("apiserver"); c.Failures != 2 || c.LastError != "boom" || !c.NextAttempt.Equal(now.Add(time.Minute)) {
		t.Fatalf("round trip: %+v", c)
	}
	if fi, _ := os.Stat(filepath.Join(dir, FileName)); fi.Mode().Perm() != 0o600 {
		t.Errorf("state mode %v", fi.Mode())
	}
	for _, junk := range []string{"{not json", `{"version": 7}`} {
		os.WriteFile(filepath.Join(dir, FileName), []byte(junk), 0o600)
		s3, warn, err := Open(dir, now)
		if err != nil || warn == nil || !strings.Contains(warn.Error(), "starting fresh") {
			t.Fatalf("corrupt %q: %v %v", junk, warn, err)
		}
		if c := s3.Get("apiserver"); c.Failures != 0 {
			t.Errorf("corrupt state was used: %+v", c)
		}
		if m, _ := filepath.Glob(filepath.Join(dir, FileName+".corrupt-*")); len(m) == 0 {
			t.Error("corrupt file not kept aside")
		}
	}
}

// TestSaveWritesWhatMustSurvive: a record that holds only a serial waits
// for Flush (a crash loses nothing a scan does not learn again); anything
// more is written by Save.
func TestSaveWritesWhatMustSurvive(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	s, _, err := Open(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(); err != nil { // a fresh state is written once
		t.Fatal(err)
	}
	onDisk := func() Cert {
		t.Helper()
		s2, _, err := Open(dir, now)
		if err != nil {
			t.Fatal(err)
		}
		return s2.Get("leaf")
	}
	s.Put("leaf", Cert{Serial: "01"})
	if err := s.Save(); err != nil || onDisk().Serial != "" {
		t.Fatalf("a bare serial was written by Save: %v %+v", err, onDisk())
	}
	if err := s.Flush(); err != nil || onDisk().Serial != "01" {
		t.Fatalf("Flush: %v %+v", err, onDisk())
	}
	s.Put("leaf", Cert{Serial: "01", Failures: 1, LastError: "boom"})
	if err := s.Save(); err != nil || onDisk().Failures != 1 {
		t.Fatalf("a failure was not written by Save: %v %+v", err, onDisk())
	}
	s.Put("leaf", Cert{Serial: "02"}) // renewed: the failure is cleared
	if err := s.Save(); err != nil || onDisk().Failures != 0 {
		t.Fatalf("a cleared failure was not written by Save: %v %+v", err, onDisk())
	}
}

// TestVersionAndGrown: every change to the records moves the version, and
// Grown says whether a record was added since the last Forget (which
// then may drop something the same names did not cover).
func TestVersionAndGrown(t *testing.T) {
	s, _, err := Open(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v := s.Version()
	steps := []struct {
		name  string
		do    func()
		moved bool
		grown bool
	}{
		{"a new record", func() { s.Put("a", Cert{Serial: "1"}) }, true, true},
		{"the same record again", func() { s.Put("a", Cert{Serial: "1"}) }, false, true},
		{"forget nothing", func() { s.Forget(map[string]bool{"a": true}) }, false, false},
		{"a record changed", func() { s.Put("a", Cert{Serial: "2"}) }, true, false},
		{"another new record", func() { s.Put("b", Cert{Serial: "3"}) }, true, true},
		{"forget one", func() { s.Forget(map[string]bool{"a": true}) }, true, false},
	}
	for _, st := range steps {
		st.do()
		if moved := s.Version() != v; moved != st.moved || s.Grown() != st.grown {
			t.Errorf("%s: version moved %v, grown %v; want %v, %v", st.name, moved, s.Grown(), st.moved, st.grown)
		}
		v = s.Version()
	}
}
