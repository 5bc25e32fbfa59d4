package rotate

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/certificate/csr"

	"github.com/certagent/certagent/rotate/pki"
)

// Signers of the kubelet's certificates.
const (
	SignerKubeletClient  = "kubernetes.io/kube-apiserver-client-kubelet"
	SignerKubeletServing = "kubernetes.io/kubelet-serving"
)

// CSRSpec is what to ask the cluster for.
type CSRSpec struct {
	Subject    pkix.Name
	DNSNames   []string
	IPs        []net.IP
	SignerName string
	Usages     []certificatesv1.KeyUsage
	// Duration becomes spec.expirationSeconds; 0 leaves it to the signer.
	Duration time.Duration
}

// KubeletClientSpec is the kubelet client certificate of node: the shape
// the csrapproving controller auto-approves.
func KubeletClientSpec(node string, rsa bool) CSRSpec {
	return CSRSpec{
		Subject:    pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		SignerName: SignerKubeletClient,
		Usages:     usages(rsa, certificatesv1.UsageClientAuth),
	}
}

// KubeletServingSpec is the kubelet serving certificate of node.
func KubeletServingSpec(node string, dns []string, ips []net.IP, rsa bool) CSRSpec {
	return CSRSpec{
		Subject:    pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		DNSNames:   dns,
		IPs:        ips,
		SignerName: SignerKubeletServing,
		Usages:     usages(rsa, certificatesv1.UsageServerAuth),
	}
}

// usages: digital signature and the given one; key encipherment only for
// RSA keys, as the kubelet asks.
func usages(rsa bool, u certificatesv1.KeyUsage) []certificatesv1.KeyUsage {
	out := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature}
	if rsa {
		out = append(out, certificatesv1.UsageKeyEncipherment)
	}
	return append(out, u)
}

// CSRDeniedError: the request was denied or failed.
type CSRDeniedError struct {
	Name, Type, Reason, Message string
}

func (e *CSRDeniedError) Error() string {
	return fmt.Sprintf("CSR %s %s: %s %s", e.Name, strings.ToLower(e.Type), e.Reason, e.Message)
}

// CSRTimeoutError: nobody approved (or signed) the request in time. The
// request stays; the next attempt waits for the same one.
type CSRTimeoutError struct {
	Name string
	Wait time.Duration
}

func (e *CSRTimeoutError) Error() string {
	return fmt.Sprintf("CSR %s not issued after %s; approve it with: kubectl certificate approve %s", e.Name, e.Wait, e.Name)
}

// ErrWrongKey: the signer returned a certificate that is not for our key.
var ErrWrongKey = errors.New("the issued certificate is not for the requested key")

// ErrCSRGone: the request was deleted (garbage-collected) before it was issued.
var ErrCSRGone = errors.New("CSR deleted before it was issued")

// Pending is a CSR in flight with the key it was made for.
type Pending struct {
	Name string
	UID  types.UID
	Key  crypto.Signer
}

// CSRName derives the request's name from what it asks for and its key,
// so that asking again with the same key finds the same request (client-go
// then checks it was made with our key) and never floods the cluster.
func CSRName(spec CSRSpec, pub crypto.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	h := sha256.New()
	h.Write(der)
	fmt.Fprintf(h, "\x00%s\x00%s\x00%s\x00%v", spec.Subject.String(), spec.SignerName, strings.Join(spec.DNSNames, ","), spec.IPs)
	u := make([]string, len(spec.Usages))
	for i, x := range spec.Usages {
		u[i] = string(x)
	}
	sort.Strings(u)
	fmt.Fprintf(h, "\x00%s", strings.Join(u, ","))
	return "certagent-" + hex.EncodeToString(h.Sum(nil))[:24]
}

// RequestCSR creates (or finds, for the same key) the request, with
// client-go's csr helpers.
func RequestCSR(ctx context.Context, client kubernetes.Interface, spec CSRSpec, key crypto.Signer) (Pending, error) {
	der, err := certutil.MakeCSRFromTemplate(key, &x509.CertificateRequest{Subject: spec.Subject, DNSNames: spec.DNSNames, IPAddresses: spec.IPs})
	if err != nil {
		return Pending{}, fmt.Errorf("make CSR: %w", err)
	}
	var d *time.Duration
	if spec.Duration > 0 {
		d = &spec.Duration
	}
	name, uid, err := csr.RequestCertificateWithContext(ctx, client, der, CSRName(spec, key.Public()), spec.SignerName, d, spec.Usages, key)
	if err != nil {
		return Pending{}, fmt.Errorf("create CSR: %w", err)
	}
	return Pending{Name: name, UID: uid, Key: key}, nil
}

// WaitCSR waits until the request is issued, denied or failed, or ctx
// ends, and checks that what was issued is for our key.
func WaitCSR(ctx context.Context, client kubernetes.Interface, p Pending, wait time.Duration) ([]*x509.Certificate, error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	data, err := csr.WaitForCertificate(wctx, client, p.Name, p.UID)
	if err != nil {
		// Tell a denial from a timeout by looking at the request.
		gctx, gcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer gcancel()
		obj, gerr := client.CertificatesV1().CertificateSigningRequests().Get(gctx, p.Name, metav1.GetOptions{})
		if gerr == nil {
			for _, c := range obj.Status.Conditions {
				if c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
					return nil, &CSRDeniedError{Name: p.Name, Type: string(c.Type), Reason: c.Reason, Message: c.Message}
				}
			}
		} else if apierrors.IsNotFound(gerr) {
			return nil, fmt.Errorf("%s: %w", p.Name, ErrCSRGone)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if wctx.Err() != nil {
			return nil, &CSRTimeoutError{Name: p.Name, Wait: wait}
		}
		return nil, fmt.Errorf("CSR %s: %w", p.Name, err)
	}
	certs, err := certutil.ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("CSR %s: issued certificate: %w", p.Name, err)
	}
	if !pki.KeyMatches(certs[0], p.Key) {
		return nil, fmt.Errorf("CSR %s: %w", p.Name, ErrWrongKey)
	}
	return certs, nil
}
