package csrrenew

import (
	"crypto/x509"
	"encoding/pem"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/certagent/certagent/rotate/pki/pkitest"
)

// answerCSRs makes the fake clientset answer every CSR as it is created:
// "approve" signs it with ca (the requested subject and names; server auth
// for the kubelet-serving signer, client auth otherwise), "deny" denies it,
// anything else leaves it pending. The answered request is stored, so the
// waiter sees it at its first list and nothing sleeps. seen, when not nil,
// gets each request and its signer.
func answerCSRs(client *fake.Clientset, ca *pkitest.CA, answer string, seen func(req *x509.CertificateRequest, signer string)) {
	client.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest).DeepCopy()
		blk, _ := pem.Decode(r.Spec.Request)
		req, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil {
			return true, nil, err
		}
		if seen != nil {
			seen(req, r.Spec.SignerName)
		}
		switch answer {
		case "approve":
			usage := x509.ExtKeyUsageClientAuth
			if r.Spec.SignerName == certificatesv1.KubeletServingSignerName {
				usage = x509.ExtKeyUsageServerAuth
			}
			c, err := ca.Sign(pkitest.Spec{CommonName: req.Subject.CommonName, Organization: req.Subject.Organization,
				DNSNames: req.DNSNames, IPs: req.IPAddresses, ExtKeyUsage: []x509.ExtKeyUsage{usage}}, req.PublicKey)
			if err != nil {
				return true, nil, err
			}
			r.Status.Certificate = pkitest.CertPEM(c)
			r.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "TestApproved"}}
		case "deny":
			r.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "TestDenied"}}
		default:
			return false, nil, nil
		}
		if err := client.Tracker().Create(certificatesv1.SchemeGroupVersion.WithResource("certificatesigningrequests"), r, ""); err != nil {
			return true, nil, err
		}
		return true, r, nil
	})
}
