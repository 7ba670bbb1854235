package service

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// nodeCertAlertBefore: a node certificate is signed again from
// nodeCertRenewBefore before its end; one still this close to its end has
// outlived a month of hourly renewal rounds, and status warns of it.
const nodeCertAlertBefore = 30 * 24 * time.Hour

// certLogEvery: an expiry warning in the log is repeated this often, not
// at every hourly round.
const certLogEvery = 24 * time.Hour

// certWatch keeps the certificates of the TLS directory parsed for status
// (read again only when a file changes), whether the node certificate's
// last renewal failed, and when each expiry warning was last logged.
type certWatch struct {
	mu         sync.Mutex
	files      map[string]watchedCert
	nodeFailed bool
	lastLogged map[string]time.Time
}

type watchedCert struct {
	info os.FileInfo
	cert *x509.Certificate
	err  error
}

// cert returns the certificate in file, parsed again only when the file
// was replaced or changed (another inode, mtime or size).
func (w *certWatch) cert(file string) (*x509.Certificate, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if c, ok := w.files[file]; ok && os.SameFile(c.info, fi) && c.info.ModTime().Equal(fi.ModTime()) && c.info.Size() == fi.Size() {
		return c.cert, c.err
	}
	c, err := tlsutil.ReadCert(file)
	if w.files == nil {
		w.files = map[string]watchedCert{}
	}
	w.files[file] = watchedCert{info: fi, cert: c, err: err}
	return c, err
}

// setNodeRenewFailed records the outcome of the node certificate's last
// renewal attempt.
func (w *certWatch) setNodeRenewFailed(failed bool) {
	w.mu.Lock()
	w.nodeFailed = failed
	w.mu.Unlock()
}

func (w *certWatch) nodeRenewFailed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nodeFailed
}

// logDue reports whether the warning named key is to be logged now (not
// within certLogEvery), and if so records it as logged.
func (w *certWatch) logDue(key string, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if last, ok := w.lastLogged[key]; ok && now.Sub(last) < certLogEvery && now.Sub(last) >= 0 {
		return false
	}
	if w.lastLogged == nil {
		w.lastLogged = map[string]time.Time{}
	}
	w.lastLogged[key] = now
	return true
}

// certWarnings are status's certificate_expiring warnings, with Coffer's
// CA in use: the CA certificate within caWarnBefore of its end (nothing
// renews it); the node certificate within nodeCertAlertBefore of its end,
// or within nodeCertRenewBefore once its renewal failed; an operator's own
// server certificate (not the CA's, not the interim one, not another
// Coffer CA's, which signServerCertLocked replaces) within
// serverCertRenewBefore (Coffer never renews it).
func (s *core) certWarnings() []Alert {
	if !s.cfg.OwnCA || s.cfg.TLSDir == "" {
		return nil
	}
	now := s.now()
	dir := s.cfg.TLSDir
	var out []Alert
	warn := func(file string, c *x509.Certificate, before time.Duration, what string) {
		out = append(out, newAlert(AlertCertExpiring, "tls",
			fmt.Sprintf("%s %s ends %s (%s): %s", what, file, c.NotAfter.UTC().Format(time.RFC3339), untilEnd(c.NotAfter.Sub(now)), certAdvice[what]),
			c.NotAfter.Add(-before).UTC()))
	}
	caFile := filepath.Join(dir, tlsutil.CAFile)
	ca, caErr := s.certs.cert(caFile)
	if caErr == nil && ca.NotAfter.Sub(now) <= caWarnBefore {
		warn(caFile, ca, caWarnBefore, "the cluster CA certificate")
	}
	nodeFile := filepath.Join(dir, tlsutil.NodeCertFile)
	if c, err := s.certs.cert(nodeFile); err == nil {
		left := c.NotAfter.Sub(now)
		switch {
		case left <= nodeCertAlertBefore:
			warn(nodeFile, c, nodeCertAlertBefore, "the node certificate")
		case left <= nodeCertRenewBefore && s.certs.nodeRenewFailed():
			// Warned of since the renewal window opened, not from a
			// time still to come.
			warn(nodeFile, c, nodeCertRenewBefore, "the node certificate")
		}
	}
	srvFile := filepath.Join(dir, tlsutil.CertFile)
	// The date first: the signature check is left out of every status
	// call but those of the certificate's last days.
	if c, err := s.certs.cert(srvFile); err == nil && caErr == nil && c.NotAfter.Sub(now) <= serverCertRenewBefore &&
		ownServerCert(func(c *x509.Certificate) bool { return c.CheckSignatureFrom(ca) == nil }, c) {
		warn(srvFile, c, serverCertRenewBefore, "the server certificate")
	}
	return out
}

// ownServerCert reports whether c is the operator's own server
// certificate, which Coffer never replaces: not signed by Coffer's CA (ca
// says whether it signed c), not Coffer's interim one, not one another
// Coffer CA issued (a node's own before it joined). Renewal and status
// decide it the same way.
func ownServerCert(ca func(*x509.Certificate) bool, c *x509.Certificate) bool {
	return !ca(c) && !tlsutil.IsInterimServerCert(c) && !tlsutil.IsCofferServerCert(c)
}

// certAdvice is what each certificate_expiring message says to do.
var certAdvice = map[string]string{
	"the cluster CA certificate": "nothing renews it, and nothing it signed verifies after that; plan its replacement",
	"the node certificate":       "it was not renewed (the keystore must be open and the CA key usable); see the log",
	"the server certificate":     "it is not signed by Coffer's CA and Coffer does not renew it; replace server.crt and server.key and send SIGHUP",
}

// untilEnd shows the time d left to a certificate's end: whole days, a
// duration below a day, or that it has ended.
func untilEnd(d time.Duration) string {
	switch {
	case d <= 0:
		return "ended: clients refuse it"
	case d < 24*time.Hour:
		return "in " + d.Round(time.Minute).String()
	}
	return fmt.Sprintf("in %d days", int(d/(24*time.Hour)))
}
