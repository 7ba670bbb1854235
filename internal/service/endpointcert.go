package service

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// RenewEndpoint issues an active endpoint a new client certificate for csr
// (PEM or DER) and keeps its token and grants; the old certificate is put
// on the deny-list, refused at every TLS handshake from then on (key
// administrators).
func (s *Access) RenewEndpoint(ctx context.Context, name string, csr []byte) (Enrollment, error) {
	note(ctx, "endpoint:"+name)
	id, err := requireRole(ctx, RoleKeyAdmin, "renewing an endpoint's certificate")
	if err != nil {
		return Enrollment{}, err
	}
	if len(csr) == 0 {
		return Enrollment{}, fmt.Errorf("%w: csr: a certificate request is required", ErrInvalid)
	}
	if old, err := s.st.Endpoint(name); err != nil {
		return Enrollment{}, mapStateErr(err)
	} else if old.State != "active" {
		return Enrollment{}, fmt.Errorf("%w: endpoint %q is revoked: enrol it again", ErrConflict, name)
	}
	c, err := s.signEndpointCSR(name, csr)
	if err != nil {
		return Enrollment{}, err
	}
	res, err := s.applyOpen(ctx, state.TypeEndpointRenew, state.EndpointRenew{Name: name, CertFingerprint: c.fingerprint,
		CertSerial: c.serial, CertNotAfter: c.notAfter})
	if err != nil {
		return Enrollment{}, fmt.Errorf("renew endpoint %q: %w", name, err)
	}
	got, ok := res.(state.Endpoint)
	if !ok {
		return Enrollment{}, fmt.Errorf("renew endpoint %q: the state machine did not confirm the write", name)
	}
	s.log.Info("endpoint certificate renewed; the previous one is denied", "endpoint", name, "by", id.Actor())
	return Enrollment{Endpoint: endpointOf(got), Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der})), CA: string(c.ca)}, nil
}

// issuedCert is a client certificate signed for an endpoint.
type issuedCert struct {
	der, ca             []byte
	fingerprint, serial string // SHA-256 of the DER (hex), serial (hex)
	notAfter            time.Time
}

// signEndpointCSR checks a certificate request (PEM or DER) and signs a
// client certificate for the endpoint name with the CA.
func (s *Access) signEndpointCSR(name string, csr []byte) (issuedCert, error) {
	if b, _ := pem.Decode(csr); b != nil {
		if b.Type != "CERTIFICATE REQUEST" {
			return issuedCert{}, fmt.Errorf("%w: csr: PEM block is %q, want CERTIFICATE REQUEST", ErrInvalid, b.Type)
		}
		csr = b.Bytes
	}
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return issuedCert{}, fmt.Errorf("%w: csr: %v", ErrInvalid, err)
	}
	if err := req.CheckSignature(); err != nil {
		return issuedCert{}, fmt.Errorf("%w: csr signature: %v", ErrInvalid, err)
	}
	issuer, err := s.endpointIssuer()
	if err != nil {
		return issuedCert{}, err
	}
	der, ca, err := issuer.IssueClientCert(req, name)
	if err != nil {
		return issuedCert{}, fmt.Errorf("sign client certificate for %q: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return issuedCert{}, fmt.Errorf("sign client certificate for %q: %w", name, err)
	}
	fp := sha256.Sum256(der)
	return issuedCert{der: der, ca: ca, fingerprint: hex.EncodeToString(fp[:]), serial: cert.SerialNumber.Text(16), notAfter: cert.NotAfter.UTC()}, nil
}

// ClientCertDenied reports whether a client certificate (its DER) was
// revoked or replaced: the TLS listeners refuse it at the handshake.
func (s *Access) ClientCertDenied(der []byte) bool {
	fp := sha256.Sum256(der)
	return s.st.CertDenied(hex.EncodeToString(fp[:]))
}
