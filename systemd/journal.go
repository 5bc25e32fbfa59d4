package systemd

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/sirupsen/logrus"
)

// JournalHook sends logrus entries to journald with the native protocol,
// so that every field is a journal field: CERT_NAME=apiserver can be
// matched with `journalctl CERT_NAME=apiserver`.
type JournalHook struct {
	// Identifier is SYSLOG_IDENTIFIER.
	Identifier string
}

// Levels implements logrus.Hook.
func (h *JournalHook) Levels() []logrus.Level { return logrus.AllLevels }

// Fire implements logrus.Hook.
func (h *JournalHook) Fire(e *logrus.Entry) error {
	vars := make(map[string]string, len(e.Data)+1)
	for k, v := range e.Data {
		vars[FieldName(k)] = fmt.Sprint(v)
	}
	vars["SYSLOG_IDENTIFIER"] = h.Identifier
	prio := priority(e.Level)
	// A PRIORITY field raises an entry above what logrus levels can say
	// (2, critical, for a node cut off from its cluster).
	if p, ok := vars["PRIORITY"]; ok {
		if n, err := strconv.Atoi(p); err == nil && n >= 0 && n <= 7 {
			prio = journal.Priority(n)
		}
		delete(vars, "PRIORITY")
	}
	return journal.Send(e.Message, prio, vars)
}

// FieldName turns a logrus field name into a valid journal field name:
// upper case letters, digits and underscores, not starting with one.
func FieldName(k string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(k) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), "_0123456789")
	if s == "" {
		return "FIELD"
	}
	return s
}

func priority(l logrus.Level) journal.Priority {
	switch l {
	case logrus.PanicLevel:
		return journal.PriEmerg
	case logrus.FatalLevel:
		return journal.PriCrit
	case logrus.ErrorLevel:
		return journal.PriErr
	case logrus.WarnLevel:
		return journal.PriWarning
	case logrus.InfoLevel:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}

// SetupLogging sends log to journald natively when stderr is connected to
// the journal (JOURNAL_STREAM matches it, as under a systemd unit), and
// readable text on stderr otherwise. It reports which it chose.
func SetupLogging(log *logrus.Logger, identifier string) (native bool) {
	if ok, err := journal.StderrIsJournalStream(); err == nil && ok && journal.Enabled() {
		log.AddHook(&JournalHook{Identifier: identifier})
		log.SetOutput(io.Discard)
		return true
	}
	log.SetOutput(os.Stderr)
	log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	return false
}
