package config

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// ParseDuration parses a duration in Go's syntax ("720h", "1h30m", "1.5h")
// or in Prometheus's, which adds days, weeks and years of 365 days ("30d",
// "1d12h", "2w", "1y"). A negative value, or one past what time.Duration
// holds (about 292 years), is an error: it never wraps around.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		var md model.Duration
		md, err = model.ParseDurationAllowNegative(s)
		d = time.Duration(md)
	}
	switch {
	case err != nil && strings.Contains(err.Error(), "out of range"):
		return 0, fmt.Errorf("invalid duration %q: out of range (at most %s)", s, human(math.MaxInt64))
	case err != nil:
		return 0, fmt.Errorf("invalid duration %q: want e.g. 720h, 30d or 1d12h", s)
	case d < 0:
		return 0, fmt.Errorf("%w, got %q", errNegative, s)
	}
	return d, nil
}

// errNegative: durations are never negative.
var errNegative = errors.New("must be positive")

// Bounds is the range a duration setting accepts.
type Bounds struct {
	// Min is the smallest value; values below it (and zero, when Min is
	// positive) are errors.
	Min time.Duration
	// Max is the largest value; 0 means no bound beyond ParseDuration's.
	Max time.Duration
}

// MaxValidity bounds renewal.validity and renewBefore: a century, far past
// any certificate Kubernetes uses (kubeadm: one year, ten for CAs) and
// well inside what time.Duration and X.509 dates hold.
const MaxValidity = 100 * 365 * 24 * time.Hour

// Bounds of the settings that flags can override too.
var (
	RenewBeforeBounds        = Bounds{Min: time.Nanosecond, Max: MaxValidity}
	ValidityBounds           = Bounds{Min: time.Hour, Max: MaxValidity}
	certificateTimeoutBounds = Bounds{Min: time.Second, Max: day}
)

const day = 24 * time.Hour

// Parse parses s with ParseDuration and checks it against b. Errors read
// well after a key or flag name: "must be at most 1d, got \"2d\"".
func (b Bounds) Parse(s string) (time.Duration, error) {
	d, err := ParseDuration(s)
	switch {
	case err != nil:
		return 0, err
	case d < b.Min && b.Min <= time.Nanosecond:
		return 0, fmt.Errorf("%w, got %q", errNegative, s)
	case d < b.Min:
		return 0, fmt.Errorf("must be at least %s, got %q", human(b.Min), s)
	case b.Max > 0 && d > b.Max:
		return 0, fmt.Errorf("must be at most %s, got %q", human(b.Max), s)
	}
	return d, nil
}

// human prints a bound the way ParseDuration reads it: 1d, 1w, 100y, 1ms.
func human(d time.Duration) string {
	if d < time.Millisecond {
		return d.String()
	}
	return model.Duration(d).String()
}
