package rotate

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/utils/ptr"

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

// ErrCSRNotOurs: a request of this renewal's name exists that it cannot
// use: made with another key, asking for something else, or holding a
// certificate that has expired. A renewal that finds it starts over with
// a new key (and so a new name).
var ErrCSRNotOurs = errors.New("exists and is not this renewal's")

// ErrCSRGone: the request was deleted (garbage-collected) before it was issued.
var ErrCSRGone = errors.New("CSR deleted before it was issued")

// Pending is a CSR in flight with the key it was made for.
type Pending struct {
	Name string
	UID  types.UID
	Key  crypto.Signer
}

// CSRName derives the request's name from what it asks for and its key,
// so that asking again with the same key finds the same request
// (RequestCSR then checks it was made with our key, for the same thing)
// and never floods the cluster.
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

// CSRClient is what a renewal does with CertificateSigningRequests
// (certificates.k8s.io/v1): certagent's own client and client-go's typed
// client both serve it.
type CSRClient interface {
	Create(ctx context.Context, obj *certificatesv1.CertificateSigningRequest, opts metav1.CreateOptions) (*certificatesv1.CertificateSigningRequest, error)
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*certificatesv1.CertificateSigningRequest, error)
	List(ctx context.Context, opts metav1.ListOptions) (*certificatesv1.CertificateSigningRequestList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// RequestCSR creates the request, or finds the one made before for the
// same key: its name comes from the key and what it asks for
// (CSRName). A request of that name made with another key, or asking for
// something else, is refused, never waited for.
func RequestCSR(ctx context.Context, csrs CSRClient, spec CSRSpec, key crypto.Signer) (Pending, error) {
	der, err := certutil.MakeCSRFromTemplate(key, &x509.CertificateRequest{Subject: spec.Subject, DNSNames: spec.DNSNames, IPAddresses: spec.IPs})
	if err != nil {
		return Pending{}, fmt.Errorf("make CSR: %w", err)
	}
	want := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: CSRName(spec, key.Public())},
		Spec:       certificatesv1.CertificateSigningRequestSpec{Request: der, SignerName: spec.SignerName, Usages: spec.Usages},
	}
	if spec.Duration > 0 {
		want.Spec.ExpirationSeconds = ptr.To(int32(spec.Duration / time.Second))
	}
	got, err := csrs.Create(ctx, want, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		if got, err = csrs.Get(ctx, want.Name, metav1.GetOptions{}); err != nil {
			return Pending{}, fmt.Errorf("CSR %s exists: %w", want.Name, err)
		}
		if err := sameRequest(got, want, spec, key.Public(), time.Now()); err != nil {
			return Pending{}, fmt.Errorf("CSR %s %w: %w", want.Name, ErrCSRNotOurs, err)
		}
	} else if err != nil {
		return Pending{}, fmt.Errorf("create CSR: %w", err)
	}
	return Pending{Name: got.Name, UID: got.UID, Key: key}, nil
}

// sameRequest tells whether obj is the request want, made with the key
// pub: its request signed by that key, for the same subject, names and
// addresses, and the same signer, usages and lifetime (these last are
// not under the signature). A certificate it already holds must not have
// expired.
func sameRequest(obj, want *certificatesv1.CertificateSigningRequest, spec CSRSpec, pub crypto.PublicKey, now time.Time) error {
	got, err := parseRequest(obj.Spec.Request)
	if err != nil {
		return fmt.Errorf("its request: %w", err)
	}
	if err := got.CheckSignature(); err != nil {
		return fmt.Errorf("its request: %w", err)
	}
	if k, ok := got.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(pub) {
		return errors.New("it was made with another key")
	}
	if got.Subject.String() != spec.Subject.String() || !slices.Equal(got.DNSNames, spec.DNSNames) ||
		!slices.EqualFunc(got.IPAddresses, spec.IPs, net.IP.Equal) {
		return fmt.Errorf("it asks for %q %v %v", got.Subject, got.DNSNames, got.IPAddresses)
	}
	if obj.Spec.SignerName != want.Spec.SignerName || !sameUsages(obj.Spec.Usages, want.Spec.Usages) ||
		!reflect.DeepEqual(obj.Spec.ExpirationSeconds, want.Spec.ExpirationSeconds) {
		return fmt.Errorf("it asks %s for usages %v", obj.Spec.SignerName, obj.Spec.Usages)
	}
	if len(obj.Status.Certificate) > 0 {
		certs, err := certutil.ParseCertsPEM(obj.Status.Certificate)
		if err != nil {
			return fmt.Errorf("its certificate: %w", err)
		}
		if now.After(certs[0].NotAfter) {
			return fmt.Errorf("its certificate expired at %s", certs[0].NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

func parseRequest(data []byte) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("not a PEM certificate request")
	}
	return x509.ParseCertificateRequest(b.Bytes)
}

func sameUsages(a, b []certificatesv1.KeyUsage) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// WaitCSR waits until the request is issued, denied or failed, or ctx
// ends, and checks that what was issued is for our key. One GET answers
// for a request already issued (the kubelet signers often are by then)
// or already gone; otherwise it watches the one request by name through
// client-go's informer-backed wait, which lists again when a watch breaks.
func WaitCSR(ctx context.Context, csrs CSRClient, p Pending, wait time.Duration) ([]*x509.Certificate, error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	issued, err := waitIssued(wctx, csrs, p)
	switch {
	case err == nil:
	case errors.Is(err, ErrCSRGone) || errors.As(err, new(*CSRDeniedError)):
		return nil, err
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case wctx.Err() != nil:
		return nil, &CSRTimeoutError{Name: p.Name, Wait: wait}
	default:
		return nil, fmt.Errorf("CSR %s: %w", p.Name, err)
	}
	certs, err := certutil.ParseCertsPEM(issued)
	if err != nil {
		return nil, fmt.Errorf("CSR %s: issued certificate: %w", p.Name, err)
	}
	if !pki.KeyMatches(certs[0], p.Key) {
		return nil, fmt.Errorf("CSR %s: %w", p.Name, ErrWrongKey)
	}
	return certs, nil
}

// waitIssued is the request's certificate, once issued.
func waitIssued(ctx context.Context, csrs CSRClient, p Pending) ([]byte, error) {
	check := func(obj *certificatesv1.CertificateSigningRequest) ([]byte, error) {
		if obj.UID != p.UID {
			return nil, fmt.Errorf("%s: %w (made again since)", p.Name, ErrCSRGone)
		}
		return issuedCertificate(obj)
	}
	obj, err := csrs.Get(ctx, p.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%s: %w", p.Name, ErrCSRGone)
	}
	if err == nil {
		if issued, err := check(obj); issued != nil || err != nil {
			return issued, err
		}
	}
	byName := fields.OneTermEqualSelector("metadata.name", p.Name).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = byName
			return csrs.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = byName
			return csrs.Watch(ctx, o)
		},
	}
	var issued []byte
	_, err = watchtools.UntilWithSync(ctx, cache.ToListWatcherWithWatchListSemantics(lw, csrs),
		&certificatesv1.CertificateSigningRequest{}, nil, func(ev watch.Event) (bool, error) {
			obj, ok := ev.Object.(*certificatesv1.CertificateSigningRequest)
			switch {
			case ev.Type == watch.Deleted:
				return false, fmt.Errorf("%s: %w", p.Name, ErrCSRGone)
			case !ok || (ev.Type != watch.Added && ev.Type != watch.Modified):
				return false, nil
			}
			var err error
			issued, err = check(obj)
			return issued != nil, err
		})
	return issued, err
}

// issuedCertificate is the request's certificate once it is approved and
// signed (nil before), or why it never will be.
func issuedCertificate(obj *certificatesv1.CertificateSigningRequest) ([]byte, error) {
	approved := false
	for _, c := range obj.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			return nil, &CSRDeniedError{Name: obj.Name, Type: string(c.Type), Reason: c.Reason, Message: c.Message}
		case certificatesv1.CertificateApproved:
			approved = true
		}
	}
	if !approved || len(obj.Status.Certificate) == 0 {
		return nil, nil
	}
	return obj.Status.Certificate, nil
}
