package inventory

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// Exit codes of `certagent check`, part of the public contract.
const (
	ExitOK     = 0 // every certificate healthy
	ExitDue    = 1 // at least one inside its renewal window (or a CA expiring)
	ExitBroken = 2 // expired, not yet valid, key mismatch/missing, or a file that could not be read
)

// ExitCode folds the report into check's exit code.
func (r *Report) ExitCode() int {
	code := ExitOK
	bump := func(c int) {
		if c > code {
			code = c
		}
	}
	for _, c := range r.Certificates {
		bump(c.State.Severity())
	}
	for _, c := range r.Authorities {
		bump(c.State.Severity())
	}
	for _, k := range r.KeyPairs {
		if k.Error != "" {
			bump(ExitBroken)
		}
	}
	if len(r.Problems) > 0 {
		bump(ExitBroken)
	}
	return code
}

// WriteJSON prints the report as indented JSON. It streams one list item
// at a time, so printing 10,000 certificates does not hold a second copy
// of the report in memory.
func (r *Report) WriteJSON(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	head, err := json.MarshalIndent(struct {
		Kind       string    `json:"kind"`
		APIVersion string    `json:"apiVersion"`
		ScannedAt  time.Time `json:"scannedAt"`
		Root       string    `json:"root"`
	}{r.Kind, r.APIVersion, r.ScannedAt, r.Root}, "", "  ")
	if err != nil {
		return err
	}
	bw.Write(bytes.TrimSuffix(head, []byte("\n}"))) // the lists follow
	writeList(bw, "certificates", r.Certificates)
	writeList(bw, "authorities", r.Authorities)
	writeList(bw, "keyPairs", r.KeyPairs)
	writeList(bw, "problems", r.Problems)
	bw.WriteString("\n}\n")
	return bw.Flush()
}

// writeList writes `,\n  "key": [ items ]` with each item indented as
// json.MarshalIndent would.
func writeList[T any](bw *bufio.Writer, key string, items []T) {
	fmt.Fprintf(bw, ",\n  %q: [", key)
	for i, it := range items {
		b, err := json.MarshalIndent(it, "    ", "  ")
		if err != nil {
			b = []byte(strconv.Quote(err.Error()))
		}
		if i > 0 {
			bw.WriteByte(',')
		}
		bw.WriteString("\n    ")
		bw.Write(b)
	}
	if len(items) > 0 {
		bw.WriteString("\n  ")
	}
	bw.WriteByte(']')
}

const dateFmt = "Jan 02, 2006 15:04 MST"

// WriteTable prints the report for a person: certificates, authorities,
// key pairs, then problems and warnings.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tEXPIRES\tRESIDUAL\tCA\tRENEWAL\tSTATE")
	for _, c := range r.Certificates {
		ca := c.CAName
		if ca == "" {
			ca = "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.NotAfter.Format(dateFmt),
			Human(time.Duration(c.ResidualSeconds)*time.Second), ca, c.RenewalPath, c.State)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "CERTIFICATE AUTHORITY\tEXPIRES\tRESIDUAL\tKEY\tSTATE\t")
	for _, c := range r.Authorities {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", c.Name, c.NotAfter.Format(dateFmt),
			Human(time.Duration(c.ResidualSeconds)*time.Second), keyWord(c.Key), c.State)
	}
	if len(r.KeyPairs) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "KEY PAIR\tALGORITHM\tMODE\tMATCHES\t\t")
		for _, k := range r.KeyPairs {
			fmt.Fprintf(tw, "%s\t%s-%d\t%s\t%t\t\t\n", k.Name, k.KeyAlgorithm, k.KeySize, k.Mode, k.Matches)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "\nPROBLEMS (%d)\n", len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s: %s\n", p.Path, p.Error)
		}
	}
	var warn []string
	for _, list := range [][]*Certificate{r.Certificates, r.Authorities} {
		for _, c := range list {
			for _, m := range c.Warnings {
				warn = append(warn, c.Name+": "+m)
			}
		}
	}
	for _, k := range r.KeyPairs {
		if k.Error != "" {
			warn = append(warn, k.Name+": "+k.Error)
		}
	}
	if len(warn) > 0 {
		fmt.Fprintf(w, "\nWARNINGS (%d)\n", len(warn))
		for _, m := range warn {
			fmt.Fprintf(w, "  %s\n", m)
		}
	}
	_, err := fmt.Fprintf(w, "\n%d certificates, %d authorities, %d problems; exit %d\n",
		len(r.Certificates), len(r.Authorities), len(r.Problems), r.ExitCode())
	return err
}

func keyWord(k *KeyInfo) string {
	switch {
	case k == nil:
		return "-"
	case !k.Present:
		return "external"
	case !k.Matches:
		return "MISMATCH"
	default:
		return "present"
	}
}
