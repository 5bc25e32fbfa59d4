package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
)

const kubeadmConfig = `apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint: {advertiseAddress: 10.0.0.10, bindPort: 6443}
nodeRegistration: {name: node1}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: v1.37.2
certificatesDir: /etc/kubernetes/pki
certificateValidityPeriod: %VALIDITY%
caCertificateValidityPeriod: 87600h
encryptionAlgorithm: %ALGORITHM%
`

// kubeadmPKI makes a node root with the real kubeadm: every certificate
// and kubeconfig of `kubeadm init`, leaves valid for validity.
func kubeadmPKI(t testing.TB, validity string) string {
	return kubeadmPKIWith(t, validity, "RSA-2048")
}

// kubeadmPKIWith also chooses kubeadm's encryptionAlgorithm (RSA-2048,
// ECDSA-P256, ...).
func kubeadmPKIWith(t testing.TB, validity, algorithm string) string {
	t.Helper()
	requireKube(t, "kubeadm")
	root := t.TempDir()
	if err := makeKubeadmPKI(root, validity, algorithm); err != nil {
		t.Fatal(err)
	}
	return root
}

// makeKubeadmPKI runs the real kubeadm's certs and kubeconfig phases below root.
func makeKubeadmPKI(root, validity, algorithm string) error {
	return makeKubeadmNode(root, validity, algorithm, "node1", "10.0.0.10")
}

// makeKubeadmNode is makeKubeadmPKI for the node name at address; CAs
// already below root are kept (kubeadm's way for a joining control plane).
func makeKubeadmNode(root, validity, algorithm, node, address string) error {
	cfg := filepath.Join(root, "etc/kubernetes/kubeadm.yaml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		return err
	}
	body := []byte(strings.NewReplacer("%VALIDITY%", validity, "%ALGORITHM%", algorithm,
		"name: node1", "name: "+node, "10.0.0.10", address).Replace(kubeadmConfig))
	if err := os.WriteFile(cfg, body, 0o600); err != nil {
		return err
	}
	for _, phase := range [][]string{{"init", "phase", "certs", "all"}, {"init", "phase", "kubeconfig", "all"}} {
		args := append(phase, "--config", "/etc/kubernetes/kubeadm.yaml", "--rootfs", root)
		if out, err := exec.Command(filepath.Join(kubeBin, "kubeadm"), args...).CombinedOutput(); err != nil {
			return fmt.Errorf("kubeadm %v: %v\n%s", phase, err, out)
		}
	}
	// kubeadm needs a non-loopback advertise address, but nothing a test
	// runs may try to reach it: point every kubeconfig at loopback.
	confs, _ := filepath.Glob(filepath.Join(root, "etc/kubernetes/*.conf"))
	for _, p := range confs {
		cfg, err := clientcmd.LoadFromFile(p)
		if err != nil {
			return err
		}
		for _, cl := range cfg.Clusters {
			cl.Server = "https://127.0.0.1:6443"
		}
		if err := clientcmd.WriteToFile(*cfg, p); err != nil {
			return err
		}
	}
	return nil
}

// kubeadmExpiration is the part of `kubeadm certs check-expiration -o json`
// that is compared.
type kubeadmExpiration struct {
	Certificates []struct {
		Name              string    `json:"name"`
		ExpirationDate    time.Time `json:"expirationDate"`
		ExternallyManaged bool      `json:"externallyManaged"`
		CAName            string    `json:"caName"`
		Missing           bool      `json:"missing"`
	} `json:"certificates"`
	CertificateAuthorities []struct {
		Name              string    `json:"name"`
		ExpirationDate    time.Time `json:"expirationDate"`
		ExternallyManaged bool      `json:"externallyManaged"`
		Missing           bool      `json:"missing"`
	} `json:"certificateAuthorities"`
}

// certagentReport is the part of `certagent check -o json` compared here.
type certagentReport struct {
	Certificates []reportCert `json:"certificates"`
	Authorities  []reportCert `json:"authorities"`
	KeyPairs     []struct {
		Name    string `json:"name"`
		Matches bool   `json:"matches"`
	} `json:"keyPairs"`
	Problems []struct {
		Path  string `json:"path"`
		Error string `json:"error"`
	} `json:"problems"`
}

type reportCert struct {
	Name              string    `json:"name"`
	Serial            string    `json:"serial"`
	Path              string    `json:"path"`
	NotAfter          time.Time `json:"notAfter"`
	CAName            string    `json:"caName"`
	State             string    `json:"state"`
	ExternallyManaged bool      `json:"externallyManaged"`
	RenewalPath       string    `json:"renewalPath"`
	DNSNames          []string  `json:"dnsNames"`
	Key               *struct {
		Present bool `json:"present"`
		Matches bool `json:"matches"`
	} `json:"key"`
}

func kubeadmCheck(t testing.TB, root string) kubeadmExpiration {
	t.Helper()
	r := run(t, requireKube(t, "kubeadm"), "certs", "check-expiration", "--config", "/etc/kubernetes/kubeadm.yaml", "--rootfs", root, "-o", "json")
	if r.code != 0 {
		t.Fatalf("kubeadm certs check-expiration: exit %d\n%s", r.code, r.stderr)
	}
	var ke kubeadmExpiration
	if err := json.Unmarshal([]byte(r.stdout), &ke); err != nil {
		t.Fatalf("kubeadm json: %v\n%s", err, r.stdout)
	}
	return ke
}

func certagentCheck(t testing.TB, root string, args ...string) (certagentReport, int) {
	t.Helper()
	r := run(t, certagentBin, append([]string{"check", "--root", root, "-o", "json"}, args...)...)
	var rep certagentReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("certagent json (exit %d): %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	return rep, r.code
}

func index(l []reportCert) map[string]reportCert {
	m := map[string]reportCert{}
	for _, c := range l {
		m[c.Name] = c
	}
	return m
}

// TestCheckMatchesKubeadm: on PKIs made by the real kubeadm, every name,
// expiry, CA and externally-managed flag kubeadm reports is reported the
// same by certagent, and certagent reports more.
func TestCheckMatchesKubeadm(t *testing.T) {
	for _, tc := range []struct {
		name, validity string
		externalCA     bool
	}{
		{"short validity", "2h", false},
		{"normal validity", "8760h", false},
		{"external CA", "8760h", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := kubeadmPKI(t, tc.validity)
			if tc.externalCA {
				if err := os.Remove(filepath.Join(root, "etc/kubernetes/pki/ca.key")); err != nil {
					t.Fatal(err)
				}
			}
			ke := kubeadmCheck(t, root)
			rep, code := certagentCheck(t, root)
			certs, cas := index(rep.Certificates), index(rep.Authorities)
			if len(ke.Certificates) < 11 || len(ke.CertificateAuthorities) != 3 {
				t.Fatalf("kubeadm reported %d certificates and %d CAs", len(ke.Certificates), len(ke.CertificateAuthorities))
			}
			for _, k := range ke.Certificates {
				if k.Missing {
					continue
				}
				c, ok := certs[k.Name]
				if !ok {
					t.Errorf("kubeadm reports %s, certagent does not", k.Name)
					continue
				}
				if !c.NotAfter.Equal(k.ExpirationDate) || c.CAName != k.CAName || c.ExternallyManaged != k.ExternallyManaged {
					t.Errorf("%s: certagent notAfter=%s ca=%s external=%v; kubeadm %s %s %v",
						k.Name, c.NotAfter, c.CAName, c.ExternallyManaged, k.ExpirationDate, k.CAName, k.ExternallyManaged)
				}
				if want := map[bool]string{false: "local-ca", true: "external"}[k.ExternallyManaged]; c.RenewalPath != want {
					t.Errorf("%s: renewal path %s, want %s", k.Name, c.RenewalPath, want)
				}
			}
			for _, k := range ke.CertificateAuthorities {
				c, ok := cas[k.Name]
				if !ok || !c.NotAfter.Equal(k.ExpirationDate) {
					t.Errorf("CA %s: certagent %+v, kubeadm %s", k.Name, c, k.ExpirationDate)
					continue
				}
				// More than kubeadm: whether each CA key is present and matches.
				if c.Key == nil || c.Key.Present == k.ExternallyManaged || (c.Key.Present && !c.Key.Matches) {
					t.Errorf("CA %s key: %+v (kubeadm externallyManaged=%v)", k.Name, c.Key, k.ExternallyManaged)
				}
			}
			// More than kubeadm: kubelet.conf and the service-account keys.
			if kc, ok := certs["kubelet.conf"]; !ok || kc.CAName != "ca" || kc.Key == nil || !kc.Key.Matches {
				t.Errorf("kubelet.conf: %+v", kc)
			}
			if len(rep.KeyPairs) != 1 || !rep.KeyPairs[0].Matches {
				t.Errorf("sa key pair: %+v", rep.KeyPairs)
			}
			if len(rep.Problems) != 0 || code != 0 {
				t.Errorf("exit %d, problems %+v", code, rep.Problems)
			}
		})
	}
}
