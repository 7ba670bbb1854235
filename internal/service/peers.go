package service

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
)

// Peers is how this node calls another node's API. The service says what it
// asks for and whom it trusts (a *tls.Config it builds); the implementation
// (internal/api/peer, injected through Config.Peers) knows the routes, the
// headers and HTTP. A cluster member must have one (New refuses a
// ClusterBind without it). Each call is bounded by ctx and by the implementation's
// own timeout. Errors are the service's sentinels where the answer says
// something (ErrUnavailable: the node could not be reached or could not do
// it now; ErrConflict: it refused).
type Peers interface {
	// FetchCA returns the CA certificate (DER) the node at url serves. The
	// answer is not authenticated: the caller checks it against a pin.
	FetchCA(ctx context.Context, url string) ([]byte, error)
	// Join asks the node at url to admit this one, trusting its server
	// certificate as conf says.
	Join(ctx context.Context, url string, conf *tls.Config, req JoinRequest) (JoinResponse, error)
	// Promote asks the leader at url to make nodeID a voter. The call is
	// this node's own (not one it forwards for a client), made with its
	// node certificate in conf.
	Promote(ctx context.Context, url string, conf *tls.Config, nodeID string) error
	// Health reads another node's health over the node-to-node channel.
	Health(ctx context.Context, url string, conf *tls.Config) (PeerHealth, error)
}

// PeerHealth is what this node reads from another node's health.
type PeerHealth struct {
	State        string `json:"state"`
	Role         string `json:"role"`
	AppliedIndex uint64 `json:"applied_index"`
	CatchUp
}

// peerTLS is the client side of a node-to-node call: this node's
// certificate, and the peer verified against the cluster CA whatever name
// its URL uses.
func (s *Cluster) peerTLS() (*tls.Config, error) {
	conf := s.NodeTLS()
	if conf == nil {
		return nil, errors.New("no node certificate")
	}
	conf.InsecureSkipVerify = true // #nosec G402 -- verified against the cluster CA in VerifyPeerCertificate, whatever name the URL uses
	roots := conf.RootCAs
	conf.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error { // #nosec G123 -- a client config without a ClientSessionCache: sessions are never resumed, the callback runs on every handshake
		return verifyChain(raw, roots)
	}
	return conf, nil
}

// promoteAt asks the leader at url to make this node a voter.
func (s *Cluster) promoteAt(ctx context.Context, url string) error {
	conf, err := s.peerTLS()
	if err != nil {
		return err
	}
	return s.cfg.Peers.Promote(ctx, url, conf, s.nodeID)
}

// peerHealth reads another node's health over the node-to-node channel
// (the peer is verified against the cluster CA).
func (s *Cluster) peerHealth(ctx context.Context, url string) (PeerHealth, error) {
	conf, err := s.peerTLS()
	if err != nil {
		return PeerHealth{}, err
	}
	return s.cfg.Peers.Health(ctx, url, conf)
}

// joinAt sends the join request to the node at url. The token names the
// CA's fingerprint (hex SHA-256 of its DER): the CA is fetched, checked
// against it, and only it is trusted for the join itself.
func (s *Cluster) joinAt(ctx context.Context, url, fingerprint string, req JoinRequest) (JoinResponse, error) {
	der, err := s.cfg.Peers.FetchCA(ctx, url)
	if err != nil {
		return JoinResponse{}, err
	}
	sum := sha256.Sum256(der)
	if hex.EncodeToString(sum[:]) != fingerprint {
		return JoinResponse{}, fmt.Errorf("%w: the CA of %s is not the one named in the join token: refusing to join", ErrUnauthenticated, url)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return JoinResponse{}, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	conf := &tls.Config{
		InsecureSkipVerify: true, // #nosec G402 -- verified against the pinned CA in VerifyPeerCertificate, whatever name the URL uses
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error { // #nosec G123 -- a client config without a ClientSessionCache: sessions are never resumed, the callback runs on every handshake
			return verifyChain(raw, roots)
		}}
	return s.cfg.Peers.Join(ctx, url, conf, req)
}
