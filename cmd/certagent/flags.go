package main

import (
	"time"

	"github.com/certagent/certagent/agent/config"
)

// durationFlag is a duration flag read by config.ParseDuration, like every
// duration in the config file (Go's syntax plus d, w and y), and checked
// against bounds, so that no flag can overflow or go negative. Text keeps
// what was typed, for flags that override a config key.
type durationFlag struct {
	d      *time.Duration
	text   *string
	bounds config.Bounds
}

func newDurationFlag(d *time.Duration, text *string, b config.Bounds) *durationFlag {
	return &durationFlag{d: d, text: text, bounds: b}
}

// Set parses and checks a value; an error becomes a usage error (exit 4).
func (f *durationFlag) Set(s string) error {
	d, err := f.bounds.Parse(s)
	if err != nil {
		return err
	}
	*f.d = d
	if f.text != nil {
		*f.text = s
	}
	return nil
}

// String is the value shown as the default in --help.
func (f *durationFlag) String() string {
	if f.d == nil || (*f.d == 0 && f.text != nil) {
		return ""
	}
	return f.d.String()
}

// Type names the value in --help.
func (f *durationFlag) Type() string { return "duration" }
