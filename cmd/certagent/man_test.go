package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra/doc"
)

// TestManPages renders a section-8 man page for every command from the
// cobra commands themselves. With CERTAGENT_MAN_DIR set (make package), it
// writes them there for the packages; otherwise into a temp dir, so that
// the unit tests prove the pages render. The generator lives in a test
// because the commands are built in package main, which nothing imports.
func TestManPages(t *testing.T) {
	dir := os.Getenv("CERTAGENT_MAN_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	root := newRootCommand()
	root.DisableAutoGenTag = true // reproducible pages: no generation date
	hdr := &doc.GenManHeader{Title: "CERTAGENT", Section: "8", Source: "certagent " + version, Manual: "System Administration"}
	if err := doc.GenManTree(root, hdr, dir); err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join(dir, "certagent.8"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), "certagent-check(8)") {
		t.Errorf("certagent.8 does not refer to certagent-check(8):\n%s", page)
	}
}
