// Command standin-kubelet stands in for the kubelet in certagent's tests on
// a real systemd node: it serves TLS on :10250 with a certificate and key
// read once at start-up, like the kubelet, and answers /healthz on
// 127.0.0.1:10248. A fault file makes certificates issued after a moment
// fatal (-check exits 1: the unit fails to start) or unhealthy.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	cert := flag.String("cert", "/var/lib/kubelet/pki/standin-serving.crt", "serving certificate")
	key := flag.String("key", "/var/lib/kubelet/pki/standin-serving.key", "serving key")
	fault := flag.String("fault", "/etc/standin/fault", `"fail <RFC3339>" or "unhealthy <RFC3339>": certificates issued after then are bad`)
	check := flag.Bool("check", false, "exit 1 if the certificate is bad under a fail fault (an ExecStartPre)")
	flag.Parse()
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatalf("load %s: %v", *cert, err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	mode, bad := faulty(*fault, leaf)
	if *check {
		if bad && mode == "fail" {
			fmt.Fprintf(os.Stderr, "refusing certificate %X\n", leaf.SerialNumber)
			os.Exit(1)
		}
		return
	}
	healthy := !(bad && mode == "unhealthy")
	log.Printf("serving certificate %X (healthy: %v)", leaf.SerialNumber, healthy)
	go func() {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if !healthy {
				http.Error(w, "unhealthy", http.StatusInternalServerError)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		log.Fatal(http.ListenAndServe("127.0.0.1:10248", mux))
	}()
	srv := &http.Server{Addr: ":10250", TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "standin") })}
	log.Fatal(srv.ListenAndServeTLS("", ""))
}

func faulty(file string, leaf *x509.Certificate) (string, bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", false
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return "", false
	}
	t, err := time.Parse(time.RFC3339, f[1])
	return f[0], err == nil && leaf.NotBefore.Add(5*time.Minute).After(t)
}
