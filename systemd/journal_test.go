package systemd

import "testing"

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"CERT_NAME": "CERT_NAME", "error": "ERROR", "cert.path": "CERT_PATH", "_x": "X", "9lives": "LIVES", "": "FIELD",
	} {
		if got := FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}
