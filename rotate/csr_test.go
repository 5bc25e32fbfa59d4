package rotate

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	certutil "k8s.io/client-go/util/cert"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// signLater plays the approver and signer on a fake clientset: it waits
// for the request, then approves or denies it, optionally issuing a
// certificate (for the requested key, or for another one).
func signLater(t *testing.T, client *fake.Clientset, ca *pkitest.CA, approve, wrongKey bool) {
	go func() {
		ctx := context.Background()
		for i := 0; i < 200; i++ {
			l, _ := client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
			if len(l.Items) == 0 {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			r := l.Items[0].DeepCopy()
			cond := certificatesv1.CertificateSigningRequestCondition{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "Nope"}
			if approve {
				cond.Type, cond.Reason = certificatesv1.CertificateApproved, "OK"
				csr, _ := x509.ParseCertificateRequest(pemBody(r.Spec.Request))
				pub := csr.PublicKey
				if wrongKey {
					k, _ := pkitest.NewKey(pkitest.ECDSA)
					pub = k.Public()
				}
				c, _ := ca.Sign(pkitest.Spec{CommonName: csr.Subject.CommonName, Organization: csr.Subject.Organization}, pub)
				r.Status.Certificate = pkitest.CertPEM(c)
			}
			r.Status.Conditions = append(r.Status.Conditions, cond)
			client.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, r, metav1.UpdateOptions{})
			return
		}
	}()
}

// fakeCSRs serves CSRs from client-go's fake clientset, which cannot
// stream a list: it says so, as the fake clientset itself does, so the
// wait lists and watches.
type fakeCSRs struct{ CSRClient }

func (fakeCSRs) IsWatchListSemanticsUnSupported() bool { return true }

func pemBody(b []byte) []byte {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil
	}
	return blk.Bytes
}

func TestCSRFlowOnFakeClientset(t *testing.T) {
	ca, _ := pkitest.NewCA("kubernetes", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), pkitest.ECDSA)
	spec := KubeletClientSpec("node1", false)
	tests := []struct {
		name              string
		approve, wrongKey bool
		signs             bool
		check             func(error) bool
	}{
		{"issued", true, false, true, func(err error) bool { return err == nil }},
		{"denied", false, false, true, func(err error) bool { var d *CSRDeniedError; return errors.As(err, &d) && d.Reason == "Nope" }},
		{"another key", true, true, true, func(err error) bool { return errors.Is(err, ErrWrongKey) }},
		{"never answered", false, false, false, func(err error) bool {
			var to *CSRTimeoutError
			return errors.As(err, &to) && strings.Contains(err.Error(), "kubectl certificate approve certagent-")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			key, _ := NewKey(nil, "ecdsa-p256")
			p, err := RequestCSR(context.Background(), fakeCSRs{client.CertificatesV1().CertificateSigningRequests()}, spec, key)
			if err != nil {
				t.Fatal(err)
			}
			if tc.signs {
				signLater(t, client, ca, tc.approve, tc.wrongKey)
			}
			certs, err := WaitCSR(context.Background(), fakeCSRs{client.CertificatesV1().CertificateSigningRequests()}, p, 2*time.Second)
			if !tc.check(err) {
				t.Fatalf("err = %v", err)
			}
			if err == nil && (len(certs) != 1 || certs[0].Subject.CommonName != "system:node:node1") {
				t.Errorf("certs %v", certs)
			}
		})
	}
}

func TestCSRReuseNeedsTheSameKey(t *testing.T) {
	client := fake.NewClientset()
	spec := KubeletServingSpec("node1", []string{"node1"}, nil, false)
	key, _ := NewKey(nil, "ecdsa-p256")
	csrs := fakeCSRs{client.CertificatesV1().CertificateSigningRequests()}
	p1, err := RequestCSR(context.Background(), csrs, spec, key)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := RequestCSR(context.Background(), csrs, spec, key)
	if err != nil || p2.Name != p1.Name {
		t.Fatalf("same key: %v %s %s", err, p1.Name, p2.Name)
	}
	l, _ := client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if len(l.Items) != 1 {
		t.Errorf("%d requests, want 1", len(l.Items))
	}
	other, _ := NewKey(nil, "ecdsa-p256")
	if CSRName(spec, other.Public()) == p1.Name {
		t.Error("another key maps to the same request name")
	}
	for _, u := range spec.Usages {
		if u == certificatesv1.UsageKeyEncipherment {
			t.Error("ECDSA requests must not ask for key encipherment")
		}
	}
}

// A request already made under this renewal's name, with another key or
// for another subject, is refused: its certificate could not be used,
// and waiting for it would wait for nothing.
func TestCSRSquattedNameIsRefused(t *testing.T) {
	spec := KubeletClientSpec("node1", false)
	key, _ := NewKey(nil, "ecdsa-p256")
	other, _ := NewKey(nil, "ecdsa-p256")
	ca, _ := pkitest.NewCA("kubernetes", time.Now().Add(-48*time.Hour), time.Now().Add(24*time.Hour), pkitest.ECDSA)
	expired, _ := ca.Sign(pkitest.Spec{CommonName: "system:node:node1", NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}, key.Public())
	for _, tc := range []struct {
		name   string
		spec   CSRSpec
		key    crypto.Signer
		change func(*certificatesv1.CertificateSigningRequest)
		want   string
	}{
		{"another key", spec, other, nil, "another key"},
		{"another subject", KubeletClientSpec("node2", false), key, nil, "asks for"},
		{"a bad signature", spec, key, func(c *certificatesv1.CertificateSigningRequest) {
			blk, _ := pem.Decode(c.Spec.Request)
			blk.Bytes[len(blk.Bytes)-3] ^= 0xff
			c.Spec.Request = pem.EncodeToMemory(blk)
		}, "its request"},
		{"other usages", spec, key, func(c *certificatesv1.CertificateSigningRequest) {
			c.Spec.Usages = append(c.Spec.Usages, certificatesv1.UsageServerAuth)
		}, "usages"},
		{"another lifetime", spec, key, func(c *certificatesv1.CertificateSigningRequest) {
			d := int32(600)
			c.Spec.ExpirationSeconds = &d
		}, "usages"},
		{"an expired certificate", spec, key, func(c *certificatesv1.CertificateSigningRequest) {
			c.Status.Certificate = pkitest.CertPEM(expired)
		}, "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset()
			csrs := fakeCSRs{client.CertificatesV1().CertificateSigningRequests()}
			der, err := certutil.MakeCSRFromTemplate(tc.key, &x509.CertificateRequest{Subject: tc.spec.Subject})
			if err != nil {
				t.Fatal(err)
			}
			squat := &certificatesv1.CertificateSigningRequest{
				ObjectMeta: metav1.ObjectMeta{Name: CSRName(spec, key.Public())},
				Spec:       certificatesv1.CertificateSigningRequestSpec{Request: der, SignerName: spec.SignerName, Usages: spec.Usages},
			}
			if tc.change != nil {
				tc.change(squat)
			}
			if _, err := csrs.Create(context.Background(), squat, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			_, err = RequestCSR(context.Background(), csrs, spec, key)
			if !errors.Is(err, ErrCSRNotOurs) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrCSRNotOurs that says %q", err, tc.want)
			}
		})
	}
}

// The wait ends on what the request becomes: a request made again under
// the same name (another UID) is not ours; an approval with no
// certificate yet is not the end.
func TestCSRWaitFollowsTheRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*certificatesv1.CertificateSigningRequest)
		check  func(error) bool
	}{
		{"made again", func(c *certificatesv1.CertificateSigningRequest) { c.UID = "another" },
			func(err error) bool { return errors.Is(err, ErrCSRGone) }},
		{"approved, not signed", func(c *certificatesv1.CertificateSigningRequest) {
			c.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue}}
		}, func(err error) bool { var to *CSRTimeoutError; return errors.As(err, &to) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, csrs, p, obj, fw := requestOnFakeWatch(t)
			done := make(chan error, 1)
			go func() { _, err := WaitCSR(context.Background(), csrs, p, 300*time.Millisecond); done <- err }()
			tc.change(obj)
			fw.Modify(obj) // blocks until the waiter's watch takes it
			if err := <-done; !tc.check(err) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

// requestOnFakeWatch makes a request on a fake clientset whose watches
// are fw, for the test to send the request's events on.
func requestOnFakeWatch(t *testing.T) (*fake.Clientset, fakeCSRs, Pending, *certificatesv1.CertificateSigningRequest, *watch.FakeWatcher) {
	t.Helper()
	client := fake.NewClientset()
	csrs := fakeCSRs{client.CertificatesV1().CertificateSigningRequests()}
	key, _ := NewKey(nil, "ecdsa-p256")
	p, err := RequestCSR(context.Background(), csrs, KubeletClientSpec("node1", false), key)
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := csrs.Get(context.Background(), p.Name, metav1.GetOptions{})
	fw := watch.NewFake()
	client.PrependWatchReactor("certificatesigningrequests", func(k8stesting.Action) (bool, watch.Interface, error) {
		return true, fw, nil
	})
	return client, csrs, p, obj, fw
}

// A request deleted before or while it is waited for ends the wait at
// once, not at its timeout.
func TestCSRDeletedEndsTheWait(t *testing.T) {
	for _, before := range []bool{true, false} {
		t.Run(map[bool]string{true: "before", false: "while"}[before], func(t *testing.T) {
			client, csrs, p, obj, fw := requestOnFakeWatch(t)
			if before {
				if err := client.CertificatesV1().CertificateSigningRequests().Delete(context.Background(), p.Name, metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() { _, err := WaitCSR(context.Background(), csrs, p, time.Hour); done <- err }()
			if !before {
				fw.Delete(obj) // blocks until the waiter's watch takes it
			}
			if err := <-done; !errors.Is(err, ErrCSRGone) {
				t.Fatalf("err = %v, want ErrCSRGone", err)
			}
		})
	}
}
