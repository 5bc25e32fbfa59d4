package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// TestCompletion: renew completes the node's certificate names (from a
// scan under --root), -o completes its formats, and the completion
// scripts are generated for every shell.
func TestCompletion(t *testing.T) {
	dir := t.TempDir()
	if _, err := (pkitest.Layout{}).Write(dir); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		args      []string
		want, not []string
		wantCode  int
	}{
		{name: "certificate names", args: []string{"__complete", "renew", "--root", dir, ""},
			want: []string{"apiserver\tlocal-ca, ok", "kubelet-client-current\tcsr, ok", ":4"}, not: []string{"ca\t"}},
		{name: "names already given are left out", args: []string{"__complete", "renew", "--root", dir, "apiserver", ""},
			want: []string{"etcd-server"}, not: []string{"apiserver\t"}},
		{name: "-o of check", args: []string{"__complete", "check", "-o", ""}, want: []string{"table", "json", "yaml", ":4"}},
		{name: "-o of status", args: []string{"__complete", "status", "-o", ""}, want: []string{"yaml"}},
		{name: "bash script", args: []string{"completion", "bash"}, want: []string{"__start_certagent"}},
		{name: "zsh script", args: []string{"completion", "zsh"}, want: []string{"#compdef certagent"}},
		{name: "fish script", args: []string{"completion", "fish"}, want: []string{"complete -c certagent"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, code := execute(t, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit %d:\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out, "\n"+n) || strings.HasPrefix(out, n) {
					t.Errorf("has %q:\n%s", n, out)
				}
			}
		})
	}
}

// TestManPages: the hidden man command writes a page per command.
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	out, code := execute(t, "man", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, page := range []string{"certagent.8", "certagent-renew.8", "certagent-check.8", "certagent-status.8"} {
		data, err := os.ReadFile(filepath.Join(dir, page))
		if err != nil || !strings.Contains(string(data), ".TH \"CERTAGENT\"") {
			t.Errorf("%s: %v\n%.300s", page, err, data)
		}
	}
}
