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
