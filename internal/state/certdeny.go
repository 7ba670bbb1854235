package state

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TypeEndpointRenew replaces an active endpoint's client certificate,
// keeping its token and grants; the old certificate is denied (body:
// EndpointRenew).
const TypeEndpointRenew Type = 136

// EndpointRenew is an endpoint's new certificate.
type EndpointRenew struct {
	Name            string    `json:"name"`
	CertFingerprint string    `json:"cert_fingerprint"`
	CertSerial      string    `json:"cert_serial,omitempty"`
	CertNotAfter    time.Time `json:"cert_not_after,omitzero"`
}

// DeniedCert is a client certificate refused at every TLS handshake: its
// endpoint was revoked, or the certificate was replaced by a renewal.
type DeniedCert struct {
	Endpoint string    `json:"endpoint"`
	Since    time.Time `json:"since"`
	Why      string    `json:"why"` // revoked, renewed
}

// bucketDeniedCerts: hex SHA-256 of a client certificate's DER -> DeniedCert.
var bucketDeniedCerts = []byte("denied_certs")

func init() {
	allBuckets = append(allBuckets, bucketDeniedCerts)
	typeNames[TypeEndpointRenew] = "endpoint-renew"
}

func denyCert(tx *bolt.Tx, fingerprint, endpoint, why string, now time.Time) error {
	if fingerprint == "" {
		return nil
	}
	return putJSON(tx.Bucket(bucketDeniedCerts), []byte(fingerprint), DeniedCert{Endpoint: endpoint, Since: now, Why: why})
}

func (s *Store) applyEndpointRenew(tx *bolt.Tx, now time.Time, c EndpointRenew) (any, error) {
	if err := checkHash("certificate fingerprint", c.CertFingerprint); err != nil {
		return err, nil
	}
	b := tx.Bucket(bucketEndpoints)
	e, err := load[Endpoint](b, c.Name, fmt.Sprintf("endpoint %q", c.Name))
	if err != nil {
		return resultOrIO(err)
	}
	if e.State != "active" {
		return fmt.Errorf("endpoint %q is revoked (enrol it again): %w", c.Name, ErrConflict), nil
	}
	certs := tx.Bucket(bucketCerts)
	if certs.Get([]byte(c.CertFingerprint)) != nil || tx.Bucket(bucketDeniedCerts).Get([]byte(c.CertFingerprint)) != nil {
		return fmt.Errorf("certificate %s is already known: %w", c.CertFingerprint, ErrExists), nil
	}
	if e.CertFingerprint != "" {
		if err := certs.Delete([]byte(e.CertFingerprint)); err != nil {
			return nil, err
		}
		if err := denyCert(tx, e.CertFingerprint, e.Name, "renewed", now); err != nil {
			return nil, err
		}
	}
	if err := certs.Put([]byte(c.CertFingerprint), []byte(e.Name)); err != nil {
		return nil, err
	}
	e.CertFingerprint, e.CertSerial, e.CertNotAfter = c.CertFingerprint, c.CertSerial, c.CertNotAfter
	return e, putJSON(b, []byte(e.Name), e)
}

// CertDenied reports whether a client certificate (hex SHA-256 of its DER)
// is on the deny-list. Errors reading the state deny (fail closed).
func (s *Store) CertDenied(fingerprint string) bool {
	denied := true
	s.View(func(tx *bolt.Tx) error { // #nosec G104 -- a View failure leaves denied true: the check fails closed
		denied = tx.Bucket(bucketDeniedCerts).Get([]byte(fingerprint)) != nil
		return nil
	})
	return denied
}
