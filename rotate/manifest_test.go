package rotate

import (
	"strings"
	"testing"
)

// TestFlagEdit: only the named flag's file changes, and only from the
// file expected; anything else is refused, not guessed at.
func TestFlagEdit(t *testing.T) {
	e := FlagEdit{Flag: "cluster-signing-cert-file", From: "ca.crt", To: "ca.signer.crt"}
	in := "    - --cluster-signing-cert-file=/x/pki/ca.crt\n    - --root-ca-file=/x/pki/ca.crt\n"
	out, err := e.Edit([]byte(in))
	if err != nil || string(out) != strings.Replace(in, "pki/ca.crt", "pki/ca.signer.crt", 1) {
		t.Fatalf("edit: %v\n%s", err, out)
	}
	if again, err := e.Edit(out); err != nil || again != nil {
		t.Errorf("an edited manifest is edited again: %v %s", err, again)
	}
	for _, bad := range []string{"- --root-ca-file=/x/ca.crt\n", "- --cluster-signing-cert-file=/x/other.crt\n",
		"- --cluster-signing-cert-file=/x/ca.crt\n- --cluster-signing-cert-file=/x/ca.crt\n"} {
		if out, err := e.Edit([]byte(bad)); err == nil {
			t.Errorf("%q edited: %s", bad, out)
		}
	}
	// With Dir: a file of the same name in another directory is not the
	// one certagent writes next to.
	e.Dir = "/x/pki"
	if _, err := e.Edit([]byte(in)); err != nil {
		t.Errorf("in Dir: %v", err)
	}
	if out, err := e.Edit([]byte("    - --cluster-signing-cert-file=/other/ca.crt\n")); err == nil {
		t.Errorf("another directory's ca.crt edited: %s", out)
	}
}
