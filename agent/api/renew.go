package api

import "fmt"

// RenewRequest is what `certagent renew` asks for (POST /v1/renew).
type RenewRequest struct {
	Names  []string `json:"names,omitempty"`
	All    bool     `json:"all,omitempty"`
	Force  bool     `json:"force,omitempty"`
	DryRun bool     `json:"dryRun,omitempty"`
	// TimeoutSeconds, when positive, is how long a renewal through a CSR
	// waits for approval (default: the configured timeout).
	TimeoutSeconds int64 `json:"timeoutSeconds,omitempty"`
}

// RenewResponse is the answer to a renew request: the lines
// `certagent renew` prints, and whether any requested certificate failed.
type RenewResponse struct {
	Lines []Line `json:"lines"`
	// Failed is set when any requested certificate was not renewed.
	Failed bool `json:"failed"`
}

// Add appends a line.
func (o *RenewResponse) Add(kind, name, format string, a ...any) {
	o.Lines = append(o.Lines, Line{Kind: kind, Name: name, Message: fmt.Sprintf(format, a...)})
}

// Line is one line of a renewal's output. Kind is one of interrupted,
// repaired, repair-failed, would-renew, skipped, warning, requested (a
// CSR was made), renewed, failed, converted, nothing.
type Line struct {
	Kind    string `json:"kind"`
	Name    string `json:"name,omitempty"`
	Message string `json:"message"`
}

// String formats the line as `certagent renew` prints it.
func (l Line) String() string {
	switch {
	case l.Kind == "nothing":
		return l.Message
	case l.Name == "":
		return fmt.Sprintf("%-9s %s", l.Kind, l.Message)
	}
	return fmt.Sprintf("%-9s %-26s %s", l.Kind, l.Name, l.Message)
}
