package carotate

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/certagent/certagent/rotate/pki"
)

// PhaseProofKey is the ConfigMap key that holds a phase's proof: it is
// named in the errors a node and the command give.
const PhaseProofKey = "phaseProof"

// phaseMessage is what a phase proof signs: the CA rotated, the rotation
// (the new CA's fingerprint) and the phase, each on a line of its own so
// that no field can run into another.
func phaseMessage(caName, id, phase string) []byte {
	return []byte("certagent CA rotation phase v1\nca=" + caName + "\nid=" + id + "\nphase=" + phase + "\n")
}

// phaseAlgorithm is the signature algorithm of a phase proof, fixed by
// the new CA's key type (never read from the proof, so a proof cannot
// choose a weaker one); ok is false for a key type certagent does not sign
// with.
func phaseAlgorithm(pub crypto.PublicKey) (alg x509.SignatureAlgorithm, hash crypto.Hash, ok bool) {
	switch pub.(type) {
	case *rsa.PublicKey:
		return x509.SHA256WithRSA, crypto.SHA256, true
	case *ecdsa.PublicKey:
		return x509.ECDSAWithSHA256, crypto.SHA256, true
	case ed25519.PublicKey:
		return x509.PureEd25519, 0, true
	}
	return 0, 0, false
}

// ProvePhase signs, with the new CA's key, that the rotation id of the CA
// caName is at phase: the only one who may move a rotation's phase is the
// holder of the key the rotation installs (the `certagent ca rotate`
// command, which made or was given it). The proof is the signature,
// base64; it names nothing else, so it authorises that one phase of that
// one rotation and nothing more.
func ProvePhase(next *x509.Certificate, newKey crypto.Signer, caName, id, phase string) (string, error) {
	if newKey == nil || !pki.KeyMatches(next, newKey) {
		return "", errors.New("the phase proof needs the new CA's key")
	}
	_, hash, ok := phaseAlgorithm(next.PublicKey)
	if !ok {
		return "", fmt.Errorf("the new CA's key (%T) cannot sign a phase proof", next.PublicKey)
	}
	msg := phaseMessage(caName, id, phase)
	digest := msg
	if hash != 0 {
		sum := sha256.Sum256(msg)
		digest = sum[:]
	}
	sig, err := newKey.Sign(rand.Reader, digest, hash)
	if err != nil {
		return "", fmt.Errorf("sign the phase proof: %w", err)
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// CheckPhaseProof checks that proof (ProvePhase) was signed by next's key
// for the rotation id of caName at phase. Its errors name the ConfigMap
// key (PhaseProofKey).
func CheckPhaseProof(proof string, next *x509.Certificate, caName, id, phase string) error {
	if strings.TrimSpace(proof) == "" {
		return fmt.Errorf("no %s (phase %s signed by the new CA's key): a phase without it is not the operator's; a rotation begun by an older certagent cannot go on: delete the ConfigMap and run certagent ca rotate again", PhaseProofKey, phase)
	}
	sig, err := base64.StdEncoding.DecodeString(strings.TrimSpace(proof))
	if err != nil {
		return fmt.Errorf("%s is not base64: %w", PhaseProofKey, err)
	}
	alg, _, ok := phaseAlgorithm(next.PublicKey)
	if !ok {
		return fmt.Errorf("%s: the new CA's key (%T) signs no phase proof", PhaseProofKey, next.PublicKey)
	}
	if err := next.CheckSignature(alg, phaseMessage(caName, id, phase), sig); err != nil {
		return fmt.Errorf("%s is not the new CA key's signature of rotation %s of %s at phase %s: the phase was not set by the holder of the new CA's key (the certagent ca rotate command); refused", PhaseProofKey, shortID(id), caName, phase)
	}
	return nil
}

// shortID is the first 16 hex digits of a rotation id, for messages.
func shortID(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}
