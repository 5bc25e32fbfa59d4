// Command floor is what a certificate scan is measured against: it reads
// every file of one directory and parses the PEM certificates in it with
// x509.ParseCertificate, on one thread, and prints how many it parsed.
// BenchmarkCheck10k builds and runs it next to `certagent check`.
package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	dir := os.Args[1]
	ents, err := os.ReadDir(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	n := 0
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		for {
			var blk *pem.Block
			if blk, data = pem.Decode(data); blk == nil {
				break
			}
			if _, err := x509.ParseCertificate(blk.Bytes); err == nil {
				n++
			}
		}
	}
	fmt.Println(n)
}
