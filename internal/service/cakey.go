package service

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/state"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// The cluster CA's private key is never a plain file on a node once the
// keystore has opened: it lives in the replicated state, sealed by the
// barrier like object material, and is usable only on an open node. Each
// node keeps on disk what it needs while sealed: the CA certificate, its
// node certificate and its server certificate with their keys.

// caKeyObject is the barrier object id the CA key is sealed under.
const caKeyObject = "cluster-ca-key"

// clusterCA returns the cluster CA with its private key: unsealed from the
// replicated state, or read from the plain TLSDir/ca.key where it has not
// moved into the state yet. The barrier must be unsealed (lifecycle lock
// held by the caller, the keystore open or opening).
func (s *core) clusterCA() (*tlsutil.CA, error) {
	if rec, ok := s.st.ClusterCA(); ok {
		key, err := s.bar.DecryptValue(caKeyObject, rec.Version, rec.Sealed)
		if err != nil {
			return nil, fmt.Errorf("unseal the cluster CA key: %w", err)
		}
		defer clear(key)
		ca, err := tlsutil.ParseCA(rec.Cert, key)
		if err != nil {
			return nil, fmt.Errorf("the cluster CA in the replicated state: %w", err)
		}
		return ca, nil
	}
	ca, err := tlsutil.LoadCA(s.cfg.TLSDir)
	if err != nil {
		return nil, fmt.Errorf("%w: the cluster CA key is neither in the replicated state (yet) nor in %s: %v", ErrUnavailable, s.cfg.TLSDir, err)
	}
	return ca, nil
}

// endpointIssuer is what signs endpoint client certificates: the cluster
// CA (the keystore must be open) or the configured CertIssuer.
func (s *core) endpointIssuer() (CertIssuer, error) {
	if !s.cfg.OwnCA {
		if s.cfg.CertIssuer == nil {
			return nil, fmt.Errorf("%w: this server has no certificate authority to sign client certificates", ErrUnavailable)
		}
		return s.cfg.CertIssuer, nil
	}
	unlock, err := s.openForRead()
	if err != nil {
		return nil, err
	}
	defer unlock()
	ca, err := s.clusterCA()
	if err != nil {
		return nil, err
	}
	if s.cfg.ClientCertValid > 0 {
		ca.Valid = s.cfg.ClientCertValid
	}
	return ca, nil
}

// caFiles are the CA files a full backup carries. With Coffer's own CA the
// key goes only while it is a plain file: once in the state, the backup's
// copy of the state holds it, sealed.
func (s *core) caFiles() (cert, key string) {
	cert, key = s.cfg.CACert, s.cfg.CAKey
	if s.cfg.OwnCA && key != "" {
		if _, ok := s.st.ClusterCA(); ok {
			key = ""
		} else if _, err := os.Stat(key); err != nil {
			key = ""
		}
	}
	return cert, key
}

// tendCAKeyLocked runs at open: the CA key moves out of its plain file
// (tendCAKey), and a server certificate not signed by the cluster CA (the
// interim one a node makes when it starts without the key, e.g. after a
// restore) is replaced by one that is. Lifecycle lock held, keystore open.
func (s *core) tendCAKeyLocked(ctx context.Context) {
	if !s.cfg.OwnCA {
		return
	}
	s.moveCAKeyLocked(ctx, s.log.Warn)
	s.tendCertsLocked()
}

// tendCAKey moves a plain CA key left on this node into the state (the
// leader) or removes it once the state holds it (every node). Run
// periodically: followers of a cluster made before the key moved into the
// state keep a plain copy until the leader's record reaches them.
func (s *core) tendCAKey() {
	if !s.cfg.OwnCA {
		return
	}
	if _, err := os.Stat(filepath.Join(s.cfg.TLSDir, tlsutil.CAKey)); err != nil {
		return
	}
	unlock, err := s.openForRead()
	if err != nil {
		return
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(WithIdentity(context.Background(), LocalRoot()), 5*time.Second)
	defer cancel()
	s.moveCAKeyLocked(ctx, s.log.Debug)
}

// moveCAKeyLocked seals a plain TLSDir/ca.key into the replicated state
// when this node leads and the state holds no CA key yet, then removes the
// plain file once the state holds the key of the CA in ca.crt. warn reports
// what keeps the file in place. Lifecycle lock held, keystore open.
func (s *core) moveCAKeyLocked(ctx context.Context, warn func(string, ...any)) {
	file := filepath.Join(s.cfg.TLSDir, tlsutil.CAKey)
	keyPEM, ok, err := tlsutil.LoadCAKeyPEM(s.cfg.TLSDir)
	if err != nil {
		warn("the plain CA key file is not readable; left in place", "file", file, "error", err)
		return
	}
	if !ok {
		return
	}
	defer clear(keyPEM)
	local, err := tlsutil.LoadCA(s.cfg.TLSDir)
	if err != nil {
		warn("the plain CA key file does not go with ca.crt; left in place", "file", file, "error", err)
		return
	}
	rec, have := s.st.ClusterCA()
	if !have {
		if !s.node.IsLeader() {
			return // the leader stores it; its record reaches this node
		}
		sealed, err := s.bar.EncryptValue(caKeyObject, 1, keyPEM)
		if err != nil {
			warn("seal the CA key", "error", err)
			return
		}
		if _, err := s.applyResult(ctx, state.TypeClusterCA, state.ClusterCA{Version: 1, Cert: local.CertPEM(), Sealed: sealed}); err != nil {
			warn("store the CA key sealed in the replicated state; the plain file stays until that succeeds", "error", err)
			return
		}
		if rec, have = s.st.ClusterCA(); !have {
			return
		}
	}
	held, err := tlsutil.ParseCA(rec.Cert, nil)
	if err != nil || !held.SameCert(local) {
		warn("the plain CA key file belongs to another CA than the cluster's; left in place", "file", file)
		return
	}
	if _, err := s.clusterCA(); err != nil {
		warn("the CA key in the replicated state is not usable here; the plain file stays", "error", err)
		return
	}
	if err := removeSecretFile(file); err != nil {
		warn("remove the plain CA key file", "file", file, "error", err)
		return
	}
	s.log.Info("the CA private key is held sealed in the replicated state; its plain file was removed", "file", file)
}

// serverCertRenewBefore: a server certificate the cluster CA signed is
// signed again when it expires within this long.
const serverCertRenewBefore = 30 * 24 * time.Hour

// signServerCertLocked replaces the interim server certificate (or a
// missing one), or one the cluster CA signed that expires within
// serverCertRenewBefore, or one another Coffer CA signed (a node's own
// before it joined), with one the CA signs, for the same names, and has
// the server reload it. A certificate from another CA is the operator's
// own (docs/reference/config.md): it is never replaced, only warned about
// once it expires within serverCertRenewBefore. Lifecycle lock held,
// keystore open.
func (s *core) signServerCertLocked() {
	dir := s.cfg.TLSDir
	cur, err := tlsutil.LoadCACert(dir)
	if err != nil {
		return
	}
	c, err := tlsutil.ServerCert(dir)
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		s.log.Warn("the server certificate is not readable; it is left as it is", "file", filepath.Join(dir, tlsutil.CertFile), "error", err)
		return
	case err == nil && ownServerCert(cur.Signs, c):
		// The operator's own certificate: never replaced.
		if c.NotAfter.Sub(s.now()) <= serverCertRenewBefore && s.certs.logDue("own server cert", s.now()) {
			s.log.Warn("the server certificate is not signed by Coffer's CA and is not renewed by Coffer; it expires soon: replace server.crt and server.key and send SIGHUP",
				"file", filepath.Join(dir, tlsutil.CertFile), "not_after", c.NotAfter)
		}
		return
	case err == nil && cur.Signs(c):
		if c.NotAfter.Sub(s.now()) > serverCertRenewBefore {
			return
		}
		if !c.NotAfter.Before(cur.NotAfter()) {
			// Ends with the CA: a new one would end there too.
			if s.certs.logDue("server cert ends with the CA", s.now()) {
				s.log.Warn("the cluster CA certificate expires soon; no certificate it signs verifies after that", "ca_not_after", cur.NotAfter(), "dir", dir)
			}
			return
		}
	}
	ca, err := s.clusterCA()
	if err != nil {
		s.log.Warn("the server certificate is not signed by the cluster CA, and the CA key is not usable here yet", "error", err)
		return
	}
	if !ca.SameCert(cur) {
		s.log.Warn("the CA certificate in the data dir is not the cluster's; the server certificate is left as it is", "dir", dir)
		return
	}
	if err := ca.ReissueServerCert(dir); err != nil {
		s.log.Error("sign the server certificate with the cluster CA", "error", err)
		return
	}
	if s.cfg.OnCAChanged != nil {
		if err := s.cfg.OnCAChanged(); err != nil {
			s.log.Error("reload the server certificate", "error", err)
			return
		}
	}
	s.log.Info("server certificate signed by the cluster CA", "dir", dir)
}

// tendServerCert is tendCertsLocked for the hourly round of an open node:
// a server that stays open for the years its certificates last gets new
// ones before clients and peers refuse them.
func (s *core) tendServerCert() {
	if !s.cfg.OwnCA {
		return
	}
	unlock, err := s.openForRead()
	if err != nil {
		return
	}
	defer unlock()
	s.tendCertsLocked()
}

// tendCertsLocked renews the server and node certificates the cluster CA
// signed before they expire, and warns of the CA certificate's end, which
// nothing renews. Lifecycle lock held, keystore open.
func (s *core) tendCertsLocked() {
	s.signServerCertLocked()
	s.renewNodeCertLocked()
	s.warnCAExpiry()
}

// nodeCertRenewBefore: a node certificate (five years) is signed again,
// with the same key, when it expires within this long. caWarnBefore: the
// CA certificate (ten years), which nothing renews, is warned about from
// this long before its end (replacing it means giving every client and
// endpoint the new ca.crt).
const (
	nodeCertRenewBefore = 60 * 24 * time.Hour
	caWarnBefore        = 180 * 24 * time.Hour
)

// renewNodeCertLocked signs this node's certificate again, for the same
// node id and key (members are bound to their key), once it expires within
// nodeCertRenewBefore; the node's TLS configuration presents the new one
// from its next handshake. A node certificate that ends with the CA is left
// (warnCAExpiry speaks of it). Lifecycle lock held, keystore open.
func (s *core) renewNodeCertLocked() {
	dir := s.cfg.TLSDir
	c, err := tlsutil.NodeCert(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return // not a cluster node
	}
	if err != nil {
		s.log.Warn("the node certificate is not readable", "file", filepath.Join(dir, tlsutil.NodeCertFile), "error", err)
		return
	}
	cur, err := tlsutil.LoadCACert(dir)
	if err != nil || c.NotAfter.Sub(s.now()) > nodeCertRenewBefore {
		return
	}
	warn := func(msg string, args ...any) {
		s.certs.setNodeRenewFailed(true)
		if s.certs.logDue("node cert", s.now()) {
			s.log.Warn(msg, append([]any{"file", filepath.Join(dir, tlsutil.NodeCertFile), "not_after", c.NotAfter}, args...)...)
		}
	}
	if !cur.Signs(c) {
		warn("the node certificate expires soon and is not signed by the CA in ca.crt; it is not renewed (docs/runbooks/certificates-expiring.md)")
		return
	}
	if !c.NotAfter.Before(cur.NotAfter()) {
		return // ends with the CA: a new one would end there too
	}
	ca, err := s.clusterCA()
	if err == nil && !ca.SameCert(cur) {
		err = errors.New("the CA certificate in the data dir is not the cluster's")
	}
	if err == nil {
		err = ca.ReissueNodeCert(dir)
	}
	if err != nil {
		warn("the node certificate expires soon and could not be renewed (docs/runbooks/certificates-expiring.md)", "error", err)
		return
	}
	s.certs.setNodeRenewFailed(false)
	s.log.Info("node certificate renewed with the same key", "file", filepath.Join(dir, tlsutil.NodeCertFile), "previous_not_after", c.NotAfter)
}

// warnCAExpiry logs a warning, from caWarnBefore before the end of the CA
// certificate in the data dir, that nothing it signed verifies after that.
func (s *core) warnCAExpiry() {
	cur, err := tlsutil.LoadCACert(s.cfg.TLSDir)
	if err != nil || cur.NotAfter().Sub(s.now()) > caWarnBefore || !s.certs.logDue("CA cert", s.now()) {
		return
	}
	s.log.Warn("the cluster CA certificate expires soon: after that no server, node or endpoint certificate it signed verifies, and the cluster stops; replace it as docs/runbooks/certificates-expiring.md says",
		"ca_not_after", cur.NotAfter(), "file", filepath.Join(s.cfg.TLSDir, tlsutil.CAFile))
}

// removeSecretFile overwrites a key file with zeros, syncs it and removes
// it. The overwrite is best effort: copy-on-write and flash storage may
// keep the old blocks.
func removeSecretFile(file string) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err == nil {
		_, err = f.Write(make([]byte, st.Size()))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("overwrite %s: %w", file, err)
	}
	if err := os.Remove(file); err != nil {
		return err
	}
	return fsutil.SyncDir(filepath.Dir(file))
}
