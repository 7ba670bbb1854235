package service

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/cluster"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/state"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// DefaultFailoverThreshold is how long followers wait without hearing from
// the leader before electing another (Oracle Key Vault's "fast start
// failover threshold"); raft's timeouts are derived from it.
const DefaultFailoverThreshold = 3 * time.Second

// joinFile marks a data dir that joined a cluster: raft must not bootstrap
// a cluster of its own there.
const joinFile = "cluster-join.json"

// Clustered reports whether this node runs the network raft transport
// (cluster.listen is set).
func (s *Cluster) Clustered() bool { return s.clustered() }

// Role is this node's place in the cluster: standalone (no cluster
// transport), leader, follower, or read-only (no leader known: no quorum).
func (s *Cluster) Role() string {
	switch {
	case !s.Clustered():
		return "standalone"
	case s.node.IsLeader():
		return "leader"
	}
	if id, _ := s.node.Leader(); id != "" {
		return "follower"
	}
	return "read-only"
}

// ReadOnlyRestricted reports whether the node is open but without quorum.
func (s *Cluster) ReadOnlyRestricted() bool {
	return s.Clustered() && s.svc.State() == StateOpen && s.Role() == "read-only"
}

// noQuorumAlert is the alert of a node in read-only restricted mode,
// since it last heard from a leader (or since it started, if never).
func (s *Cluster) noQuorumAlert() Alert {
	msg := "no quorum: this node knows no leader (a majority of the voters cannot be reached, or an election is in progress): read-only restricted mode, reads are served from this node's copy and every write is refused until a majority is back"
	if !s.AllowReadOnly() {
		msg = "no quorum: this node knows no leader (a majority of the voters cannot be reached, or an election is in progress): every request is refused, reads too (cluster.allow_read_only_restricted_mode: false), until a majority is back"
	}
	servers, err := s.node.Servers()
	if err != nil {
		servers = nil
	}
	i := slices.IndexFunc(servers, func(sv cluster.Server) bool { return sv.ID == s.nodeID })
	adv := cmp.Or(s.cfg.ClusterAdvertise, s.cfg.ClusterBind)
	switch {
	case len(servers) > 0 && i < 0:
		// The cluster took this node out: no majority will come back here.
		serves := "it refuses writes and serves reads from its stale copy"
		if !s.AllowReadOnly() {
			serves = "it refuses every request (cluster.allow_read_only_restricted_mode: false)"
		}
		msg = "this node is not in its own raft configuration: it was removed from the cluster (coffer cluster remove) and no longer follows it; " +
			serves + ": stop it and wipe its data dir (then it may join again as a new node)"
	case i >= 0 && servers[i].Address != adv:
		// Restarted with another raft address: the leader dials the one in
		// the configuration, and while the others keep a leader this node
		// never wins an election to correct it.
		msg += fmt.Sprintf("; this node's raft address is %s but the cluster has it at %s, where the leader cannot reach it: if the other members have a leader, start this node again with cluster.advertise %s (and a cluster.listen that takes it), or remove it on the leader (coffer cluster remove %s), wipe its data dir and join it again as a new node", adv, servers[i].Address, servers[i].Address, s.nodeID)
	}
	since := s.node.LastContact()
	if since.IsZero() {
		since = s.started
	}
	return newAlert(AlertNoQuorum, "cluster", msg, since.UTC())
}

// unreachableWarnings, on the leader, are a warning per member its
// heartbeats do not reach: the cluster still works, but survives fewer
// failures (one of three down: none more).
func (s *Cluster) unreachableWarnings() []Alert {
	if !s.Clustered() || !s.node.IsLeader() {
		return nil
	}
	servers, err := s.node.Servers()
	if err != nil {
		return nil
	}
	voters, reached, gone := s.reach(servers, func(sv cluster.Server) bool { return sv.Voter })
	spare := reached - (voters/2 + 1)
	var out []Alert
	for _, g := range gone {
		kind := "non-voter"
		if g.sv.Voter {
			kind = "voter"
		}
		out = append(out, newAlert(AlertMemberUnreachable, "cluster", fmt.Sprintf("member %s (%s, raft address %s) does not answer this leader's heartbeats: %d of %d voters reachable, the cluster survives %d more voter failure(s); bring it back or replace it", g.sv.ID, kind, g.sv.Address, reached, voters, max(spare, 0)), g.since.UTC()))
	}
	return out
}

// AllowReadOnly is cluster.allow_read_only_restricted_mode: false means a
// node without quorum refuses every request, reads too.
func (s *Cluster) AllowReadOnly() bool { return !s.cfg.NoReadOnlyMode }

// LeaderAPI returns the leader's API URL for forwarding: self is true when
// this node leads; ok is false when no leader is known or it has no URL.
func (s *Cluster) LeaderAPI() (url string, self, ok bool) {
	if !s.Clustered() {
		return "", true, true
	}
	if s.node.IsLeader() {
		return s.cfg.APIURL, true, true
	}
	id, _ := s.node.Leader()
	if id == "" {
		return "", false, false
	}
	nodes, _ := s.st.Nodes()
	for _, n := range nodes {
		if n.ID == id && n.APIURL != "" {
			return n.APIURL, false, true
		}
	}
	return "", false, false
}

// NodeTLS is the node certificate configuration (forwarding uses it as a
// client to the leader). Nil when not clustered.
func (s *Cluster) NodeTLS() *tls.Config {
	if !s.Clustered() {
		return nil
	}
	c, err := tlsutil.NodeTLS(s.cfg.TLSDir)
	if err != nil {
		return nil
	}
	return c
}

// raftTimeouts maps the failover threshold onto raft: a follower starts an
// election after a heartbeat timeout (randomised up to twice it) and the
// election itself takes up to the election timeout, so both are a third.
func raftTimeouts(threshold time.Duration) (hb, el time.Duration) {
	if threshold <= 0 {
		threshold = DefaultFailoverThreshold
	}
	t := max(threshold/3, 100*time.Millisecond)
	return t, t
}

// nodeTLSLocked prepares the node certificate for the raft transport.
func (s *Cluster) nodeTLSLocked() (*tls.Config, error) {
	if err := tlsutil.EnsureNodeCertWith(s.cfg.TLSDir, s.nodeID, s.clusterCA); err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	return tlsutil.NodeTLS(s.cfg.TLSDir)
}

// clusterID is the cluster's id: the state's, or, on a node that has just
// joined and not yet received the cluster's first entries, the one the
// leader named in its answer to the join.
func (s *Cluster) clusterID() string {
	if id := s.st.ClusterID(); id != "" {
		return id
	}
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, joinFile))
	if err != nil {
		return ""
	}
	var m struct {
		ClusterID string `json:"cluster_id"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		s.log.Warn("the join marker does not decode; the cluster id shows once the state has it", "file", joinFile, "error", err)
	}
	return m.ClusterID
}

func (s *Cluster) joining() bool {
	_, err := os.Stat(filepath.Join(s.cfg.DataDir, joinFile))
	return err == nil
}

// afterOpenClustered runs once the keystore is open on a clustered node:
// the leader records its own addresses (and fixes raft's, if it started
// standalone); a node that joined asks to become a voter once caught up.
func (s *Cluster) afterOpenClustered(ctx context.Context) {
	if !s.Clustered() {
		return
	}
	if s.node.IsLeader() {
		adv := s.cfg.ClusterAdvertise
		if adv == "" {
			adv = s.cfg.ClusterBind
		}
		servers, _ := s.node.Servers()
		for _, sv := range servers {
			if sv.ID == s.nodeID && sv.Address != adv {
				if err := s.node.AddVoter(ctx, s.nodeID, adv); err != nil {
					s.log.Error("update this node's raft address", "error", err)
				}
			}
		}
		key, _ := tlsutil.NodeKeyFingerprint(s.cfg.TLSDir)
		if _, err := s.applyResult(ctx, state.TypeNodePut, state.Node{ID: s.nodeID, RaftAddr: adv, APIURL: s.cfg.APIURL, KeySHA256: key}); err != nil {
			s.log.Warn("record this node in the cluster", "error", err)
		}
	}
}

// JoinToken is a new one-time join token.
type JoinToken struct {
	Token   string    `json:"token" doc:"give it to coffer cluster join on the new node; shown once"`
	Expires time.Time `json:"expires"`
}

// CreateJoinToken makes a one-time token a new node presents to join
// (system administrators). It carries the CA's fingerprint, so the new node
// can trust the node it contacts.
func (s *Cluster) CreateJoinToken(ctx context.Context, ttl time.Duration) (JoinToken, error) {
	id, err := requireRole(ctx, RoleSystemAdmin, "creating a join token")
	if err != nil {
		return JoinToken{}, err
	}
	if !s.Clustered() {
		return JoinToken{}, fmt.Errorf("%w: this node has no cluster transport: set cluster.listen in its configuration and restart it", ErrConflict)
	}
	if ttl <= 0 {
		ttl = time.Hour
	}
	if ttl > 7*24*time.Hour {
		return JoinToken{}, fmt.Errorf("%w: a join token lives at most 7 days", ErrInvalid)
	}
	ca, err := tlsutil.LoadCACert(s.cfg.TLSDir)
	if err != nil {
		return JoinToken{}, fmt.Errorf("%w: the cluster CA is needed to admit nodes: %v", ErrConflict, err)
	}
	secret := randHex(32)
	sum := sha256.Sum256([]byte(secret))
	exp := s.now().Add(ttl).UTC()
	if _, err := s.applyOpen(ctx, state.TypeJoinToken, state.JoinToken{Hash: hex.EncodeToString(sum[:]), Expires: exp, CreatedBy: id.Actor()}); err != nil {
		return JoinToken{}, err
	}
	return JoinToken{Token: "cjt1." + secret + "." + ca.Fingerprint(), Expires: exp}, nil
}

// JoinRequest is what a joining node sends to the leader.
type JoinRequest struct {
	Token    string `json:"token"`
	NodeID   string `json:"node_id"`
	RaftAddr string `json:"raft_address"`
	APIURL   string `json:"api_url"`
	CSR      []byte `json:"csr" doc:"PKCS#10 DER, base64"`
	// ServerCSR asks for the node's HTTPS server certificate, for the
	// names it carries (PKCS#10 DER).
	ServerCSR []byte `json:"server_csr,omitempty" doc:"PKCS#10 DER, base64"`
}

// JoinResponse gives the new node what it needs to open: the CA
// certificate, its node and server certificates, and every master key
// generation. The CA's private key is not sent: it reaches the node sealed
// in the replicated state, usable only while its keystore is open. Sent
// only over TLS to a holder of a valid one-time token.
type JoinResponse struct {
	ClusterID    string `json:"cluster_id"`
	CACert       []byte `json:"ca_cert"`
	NodeCert     []byte `json:"node_cert"`
	ServerCert   []byte `json:"server_cert,omitempty"`
	MasterKeys   []byte `json:"master_keys"`
	AppliedIndex uint64 `json:"applied_index"`
}

// AdmitNode handles a join request on the leader: it consumes the token,
// signs the node certificate, adds the node as a non-voter (it is promoted
// once it has caught up) and records it.
func (s *Cluster) AdmitNode(ctx context.Context, req JoinRequest) (JoinResponse, error) {
	if !s.Clustered() {
		return JoinResponse{}, fmt.Errorf("%w: this node has no cluster transport", ErrConflict)
	}
	var source string
	if c := CallFrom(ctx); c != nil {
		source = c.Source
	}
	if err := s.joins.attempt(source, time.Now()); err != nil {
		return JoinResponse{}, err
	}
	if err := ValidLabel("node", req.NodeID); err != nil {
		return JoinResponse{}, err
	}
	parts := strings.Split(req.Token, ".")
	if len(parts) != 3 || parts[0] != "cjt1" {
		return JoinResponse{}, fmt.Errorf("%w: malformed join token", ErrUnauthenticated)
	}
	if req.RaftAddr == "" || req.APIURL == "" {
		return JoinResponse{}, fmt.Errorf("%w: raft_address and api_url are required", ErrInvalid)
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		return JoinResponse{}, fmt.Errorf("%w: certificate request: %v", ErrInvalid, err)
	}
	var serverCSR *x509.CertificateRequest
	if len(req.ServerCSR) > 0 {
		serverCSR, err = x509.ParseCertificateRequest(req.ServerCSR)
		if err == nil {
			err = serverCSR.CheckSignature()
		}
		if err != nil {
			return JoinResponse{}, fmt.Errorf("%w: server certificate request: %v", ErrInvalid, err)
		}
	}
	if err := s.checkOpen(); err != nil {
		// Raft runs only while the keystore is open.
		return JoinResponse{}, fmt.Errorf("%w: this node takes part in the cluster only while its keystore is open: nothing was done; send the join to another member", err)
	}
	if !s.node.IsLeader() {
		// A follower forwards joins to the leader; it gets here only when
		// it does not know the leader's address yet (it is catching up).
		return JoinResponse{}, fmt.Errorf("%w: not the leader, and the leader's address is not known here yet to forward the join: nothing was done; retry shortly or send it to the leader", ErrUnavailable)
	}
	// Everything is checked before the token is used, and the token against
	// the local state first: an unknown, used or expired token costs no
	// raft write.
	sum := sha256.Sum256([]byte(parts[1]))
	hash := hex.EncodeToString(sum[:])
	if t, err := s.st.JoinToken(hash); err != nil || t.UsedBy != "" || !t.Expires.After(s.now()) {
		why := "unknown"
		switch {
		case err == nil && t.UsedBy != "":
			why = "already used"
		case err == nil:
			why = "expired"
		}
		return JoinResponse{}, fmt.Errorf("%w: join token refused: %s", ErrUnauthenticated, why)
	}
	servers, err := s.node.Servers()
	if err != nil {
		return JoinResponse{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	for _, sv := range servers {
		if sv.ID == req.NodeID || sv.Address == req.RaftAddr {
			return JoinResponse{}, fmt.Errorf("%w: node %s or raft address %s is already a member (a copied data dir? remove the old node first)", ErrConflict, req.NodeID, req.RaftAddr)
		}
	}
	unlock, err := s.openForRead()
	if err != nil {
		return JoinResponse{}, err
	}
	defer unlock()
	ca, err := s.clusterCA()
	if err != nil {
		return JoinResponse{}, err
	}
	var serverCert []byte
	if serverCSR != nil {
		der, err := ca.IssueServerCert(serverCSR.PublicKey, serverCSR.DNSNames, serverCSR.IPAddresses)
		if err != nil {
			return JoinResponse{}, fmt.Errorf("%w: server certificate: %v", ErrInvalid, err)
		}
		serverCert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	ctx = WithIdentity(ctx, Identity{Kind: KindRoot, Name: "join:" + req.NodeID, Roles: AllRoles})
	if _, err := s.applyResult(ctx, state.TypeJoinTokenUse, state.JoinTokenUse{Hash: hash, Node: req.NodeID}); err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
			// The state refused it: unknown, used or expired meanwhile.
			return JoinResponse{}, fmt.Errorf("%w: join token refused: %v", ErrUnauthenticated, err)
		}
		// Not refused: the write failed or its outcome is unknown (the
		// leadership was lost), and the error says which.
		return JoinResponse{}, fmt.Errorf("use the join token (nothing else was done for the join): %w", err)
	}
	cert, err := ca.IssueNodeCert(csr.PublicKey, req.NodeID)
	if err != nil {
		return JoinResponse{}, err
	}
	meks, err := s.ring.ExportMEKs()
	if err != nil {
		return JoinResponse{}, err
	}
	// The record, with the key the node certificate binds, goes first:
	// peers accept the node on raft and the API only with that key.
	leaf, err := x509.ParseCertificate(cert)
	if err != nil {
		clear(meks)
		return JoinResponse{}, fmt.Errorf("parse the new node certificate: %w", err)
	}
	if _, err := s.applyResult(ctx, state.TypeNodePut, state.Node{ID: req.NodeID, RaftAddr: req.RaftAddr, APIURL: req.APIURL, KeySHA256: tlsutil.KeyFingerprint(leaf)}); err != nil {
		clear(meks)
		return JoinResponse{}, fmt.Errorf("record the new node %s: %w", req.NodeID, err)
	}
	if err := s.node.AddNonvoter(ctx, req.NodeID, req.RaftAddr); err != nil {
		clear(meks)
		return JoinResponse{}, fmt.Errorf("add %s to the raft configuration: %w", req.NodeID, err)
	}
	s.joins.succeed(source)
	s.log.Info("node admitted to the cluster (non-voter until it has caught up)", "node", req.NodeID, "raft_address", req.RaftAddr)
	return JoinResponse{ClusterID: s.st.ClusterID(), CACert: ca.CertPEM(), NodeCert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}),
		ServerCert: serverCert, MasterKeys: meks, AppliedIndex: s.st.AppliedIndex()}, nil
}

// Promote makes a caught-up non-voter a voter (called by the node itself,
// authenticated by its node certificate, or by a system administrator).
func (s *Cluster) Promote(ctx context.Context, nodeID string) error {
	id, err := caller(ctx)
	if err != nil {
		return err
	}
	if id.Kind != KindNode && !id.Has(RoleSystemAdmin) {
		return fmt.Errorf("%w: promoting a node", ErrForbidden)
	}
	if id.Kind == KindNode && id.Name != nodeID {
		return fmt.Errorf("%w: node %s may promote only itself", ErrForbidden, id.Name)
	}
	// Only a member that replicates (a non-voter that joined) is promoted:
	// a record without a raft member behind it is a join that failed or a
	// removal cut short, and a voter that never answers would take the
	// majority away.
	servers, err := s.node.Servers()
	if err != nil {
		return fmt.Errorf("%w: read the raft configuration: %v", ErrUnavailable, err)
	}
	if !inConfiguration(servers, nodeID) {
		return fmt.Errorf("%w: node %s is not in the cluster's raft configuration: a node is added by coffer cluster join, then promoted", ErrNotFound, nodeID)
	}
	if err := s.keepsMajority(servers, nodeID, true, "promoting "+nodeID); err != nil {
		return err
	}
	nodes, _ := s.st.Nodes()
	for _, n := range nodes {
		if n.ID == nodeID {
			if err := s.node.AddVoter(ctx, nodeID, n.RaftAddr); err != nil {
				return fmt.Errorf("%w: promote %s: %v", ErrUnavailable, nodeID, err)
			}
			s.log.Info("node promoted to voter", "node", nodeID)
			return nil
		}
	}
	return fmt.Errorf("%w: node %s", ErrNotFound, nodeID)
}

// JoinCluster joins this uninitialised node to the cluster whose leader
// (or any member) is at url, with a join token from coffer cluster token
// create. The node keystore is sealed under passphrase. Local only.
func (s *Cluster) JoinCluster(ctx context.Context, id Identity, url, token string, passphrase []byte) error {
	if !id.Local {
		return fmt.Errorf("%w: join through the local control socket: coffer cluster join --data-dir DIR", ErrForbidden)
	}
	if !s.Clustered() {
		return fmt.Errorf("%w: set cluster.listen in this node's configuration and restart it first", ErrConflict)
	}
	if err := keystore.CheckPassphrase(passphrase); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != "cjt1" || len(parts[2]) != 64 {
		return fmt.Errorf("%w: malformed join token (cjt1.<secret>.<CA fingerprint>)", ErrInvalid)
	}
	defer s.awaitWorkers() // those of a failed open, after the lock is released
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != StateUninitialized {
		return fmt.Errorf("%w: only an uninitialised node joins a cluster (this one has a keystore)", ErrAlreadyInit)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: s.nodeID}}, key)
	if err != nil {
		return err
	}
	// The server certificate, for the names of the one this node has, is
	// signed by the cluster's CA too: no node holds its key while sealed.
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvCSR, err := tlsutil.ServerCSR(s.cfg.TLSDir, srvKey)
	if err != nil {
		return fmt.Errorf("server certificate request: %w", err)
	}
	adv := s.cfg.ClusterAdvertise
	if adv == "" {
		adv = s.cfg.ClusterBind
	}
	jr, err := s.joinAt(ctx, url, parts[2], JoinRequest{Token: token, NodeID: s.nodeID, RaftAddr: adv, APIURL: s.cfg.APIURL, CSR: csr, ServerCSR: srvCSR})
	if err != nil {
		return err
	}
	defer clear(jr.MasterKeys)
	ring, err := keystore.ImportMEKs(jr.MasterKeys)
	if err != nil {
		return err
	}
	defer ring.Wipe()
	kder, _ := x509.MarshalECPrivateKey(key)
	defer clear(kder)
	dir := s.cfg.TLSDir
	// The key of the CA this node made for itself before it joined goes:
	// from now on the cluster's CA is the one.
	if err := removeSecretFile(filepath.Join(dir, tlsutil.CAKey)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove this node's own CA key: %w", err)
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{
		{tlsutil.CAFile, jr.CACert},
		{tlsutil.NodeKeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})}, {tlsutil.NodeCertFile, jr.NodeCert},
	} {
		if err := fsutil.WriteFile(filepath.Join(dir, f.name), f.b); err != nil {
			return err
		}
	}
	if blk, _ := pem.Decode(jr.ServerCert); blk != nil && blk.Type == "CERTIFICATE" {
		if err := tlsutil.WriteServerPair(dir, srvKey, blk.Bytes); err != nil {
			return fmt.Errorf("store the server certificate: %w", err)
		}
	}
	if s.cfg.OnCAChanged != nil {
		if err := s.cfg.OnCAChanged(); err != nil {
			return fmt.Errorf("install the cluster CA: %w", err)
		}
	}
	marker, _ := json.Marshal(map[string]any{"url": url, "applied_index": jr.AppliedIndex, "cluster_id": jr.ClusterID})
	if err := fsutil.WriteFile(filepath.Join(s.cfg.DataDir, joinFile), marker); err != nil {
		return err
	}
	// With ErrNotDurable keystore.ks is in place (only its directory sync
	// failed): the node opens with the keyring handed back.
	k, err := s.ks.InitFrom(passphrase, ring)
	if k == nil {
		return mapKeystoreErr(err)
	}
	s.setStateLocked(StateSealed)
	if err := s.openLocked(ctx, k); err != nil {
		return fmt.Errorf("joined, but opening failed (coffer keystore open retries): %w", err)
	}
	// The open started the promotion to voter (promoteLoop).
	s.log.Info("joined the cluster", "cluster_id", jr.ClusterID, "via", url)
	return notDurableErr(s.log, "joined the cluster and open", err)
}

// promoteLoop runs, from every open of a node that joined a cluster, until
// the node is a voter (or the keystore is sealed): once this node is a
// non-voter in the raft configuration and has caught up with the leader, it
// asks the leader (or, while it does not know the leader's address, the
// member it joined through) to make it a voter, again after a failure. A
// promotion cut by a seal or a restart is so asked for at the next open.
func (s *Cluster) promoteLoop(ctx context.Context) {
	if !s.joining() {
		return
	}
	wait, failures := time.Second, 0
	for !s.closed.Load() {
		isVoter, member := s.selfInConfiguration()
		if isVoter {
			return
		}
		if member && s.CaughtUp() {
			target := s.joinedVia()
			if u, self, ok := s.LeaderAPI(); ok && !self {
				target = u
			}
			if target != "" {
				err := s.promoteAt(ctx, target)
				if err == nil {
					s.log.Info("promoted to voter", "via", target)
					return
				}
				if ctx.Err() != nil {
					return
				}
				failures++
				if failures == 1 || failures%20 == 0 {
					s.log.Warn("promotion to voter not done yet; retrying", "attempts", failures, "error", err)
				}
				wait = min(2*wait, 30*time.Second)
			}
		}
		if sleepCtx(ctx, wait) != nil {
			return
		}
	}
}

// selfInConfiguration reports whether this node is in its latest raft
// configuration (member) and whether as a voter.
func (s *Cluster) selfInConfiguration() (voter, member bool) {
	servers, err := s.node.Servers()
	if err != nil {
		return false, false
	}
	for _, sv := range servers {
		if sv.ID == s.nodeID {
			return sv.Voter, true
		}
	}
	return false, false
}

// joinedVia is the URL of the member this node joined through, from the
// join marker ("" if it cannot be read).
func (s *Cluster) joinedVia() string {
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, joinFile))
	if err != nil {
		return ""
	}
	var m struct {
		URL string `json:"url"`
	}
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	return m.URL
}

// CACertPEM is the cluster CA certificate (public), for joining nodes.
func (s *Cluster) CACertPEM() ([]byte, error) {
	return os.ReadFile(filepath.Join(s.cfg.TLSDir, tlsutil.CAFile))
}

func verifyChain(raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		if c, err := x509.ParseCertificate(r); err == nil {
			inter.AddCert(c)
		}
	}
	// A server (or node) certificate: an endpoint's client certificate from
	// the same CA must not pass as another node.
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// ClusterNode is one member as cluster status shows it.
type ClusterNode struct {
	ID          string     `json:"id"`
	RaftAddress string     `json:"raft_address"`
	APIURL      string     `json:"api_url,omitempty"`
	Voter       bool       `json:"voter"`
	Leader      bool       `json:"leader"`
	Self        bool       `json:"self"`
	Applied     *uint64    `json:"applied_index,omitempty" doc:"raft index the node has applied, as it reports it (unknown if unreachable)"`
	Lag         *uint64    `json:"lag,omitempty" doc:"entries behind the leader's commit index (unknown if the node or the leader cannot be reached)"`
	CaughtUp    *bool      `json:"caught_up,omitempty" doc:"the node has applied, since it opened, what the leader had committed; until then its reads go to the leader"`
	LastContact *time.Time `json:"last_contact,omitempty" doc:"this node: when it last heard from the leader"`
	Reachable   bool       `json:"reachable" doc:"the node answered its health"`
	State       string     `json:"state,omitempty" doc:"the node's keystore state as it answered (open, sealed, uninitialized); a node not open takes no part in raft"`
}

// ClusterStatus is the cluster as this node sees it.
type ClusterStatus struct {
	ClusterID    string  `json:"cluster_id"`
	Role         string  `json:"role" doc:"standalone, leader, follower or read-only"`
	Leader       string  `json:"leader,omitempty"`
	LeaderCommit *uint64 `json:"leader_commit_index,omitempty" doc:"the leader's commit index, which lag is counted from (unknown if the leader cannot be reached)"`
	// FailoverThreshold is how long followers wait without hearing from the
	// leader before they elect another (cluster.failover_threshold).
	FailoverThreshold string        `json:"failover_threshold,omitempty" doc:"how long followers wait without the leader before electing another (a Go duration)"`
	Nodes             []ClusterNode `json:"nodes"`
}

// ClusterStatus reports members, roles, last contact, applied index and
// lag: how far each node's applied index is behind the leader's commit
// index (asking every member's health for its applied index, and the
// leader's for its commit index).
func (s *Cluster) ClusterStatus(ctx context.Context) (ClusterStatus, error) {
	if _, err := requireAdmin(ctx, "reading the cluster status"); err != nil {
		return ClusterStatus{}, err
	}
	st := ClusterStatus{ClusterID: s.clusterID(), Role: s.Role()}
	if s.clustered() {
		st.FailoverThreshold = cmp.Or(s.cfg.FailoverThreshold, DefaultFailoverThreshold).String()
	}
	leaderID, _ := s.node.Leader()
	st.Leader = leaderID
	servers, err := s.node.Servers()
	if err != nil {
		if oerr := s.checkOpen(); oerr != nil {
			// Raft runs only while the keystore is open.
			return st, fmt.Errorf("%w: this node takes part in the cluster only while its keystore is open (coffer keystore open); ask another node for the cluster status", oerr)
		}
		return st, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	reg := map[string]state.Node{}
	if nodes, err := s.st.Nodes(); err == nil {
		for _, n := range nodes {
			reg[n.ID] = n
		}
	}
	var commit uint64
	haveCommit := false
	for _, sv := range servers {
		cn := ClusterNode{ID: sv.ID, RaftAddress: sv.Address, APIURL: reg[sv.ID].APIURL, Voter: sv.Voter, Leader: sv.ID == leaderID, Self: sv.ID == s.nodeID}
		var cu CatchUp
		ok := false
		if cn.Self {
			cu, ok = s.CatchUpStatus(), true
			cn.State, cn.Reachable = s.svc.State(), true
			if lc := s.node.LastContact(); !lc.IsZero() && !cn.Leader {
				cn.LastContact = &lc
			}
		} else if cn.APIURL != "" {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			h, err := s.peerHealth(pctx, cn.APIURL)
			cancel()
			// A node that answers sealed is reachable, but has no raft
			// position to show: it takes no part until it is opened.
			cu, ok = h.CatchUp, err == nil && h.Role != ""
			if err == nil {
				cn.State, cn.Reachable = h.State, h.State != "" || ok
			}
		}
		if ok {
			a, c := cu.RaftApplied, cu.CaughtUp
			cn.Applied, cn.CaughtUp = &a, &c
			if cn.Leader {
				commit, haveCommit = cu.LeaderCommit, true
			}
		}
		st.Nodes = append(st.Nodes, cn)
	}
	if haveCommit {
		st.LeaderCommit = &commit
		for i := range st.Nodes {
			if a := st.Nodes[i].Applied; a != nil {
				lag := commit - min(commit, *a)
				st.Nodes[i].Lag = &lag
			}
		}
	}
	return st, nil
}

// Switchover hands leadership to another voter (Oracle Key Vault's
// "switch roles"); to "" picks the most up-to-date one. Leader only.
func (s *Cluster) Switchover(ctx context.Context, to string) (string, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "switching the leader"); err != nil {
		return "", err
	}
	if !s.node.IsLeader() {
		return "", fmt.Errorf("%w: not the leader", ErrUnavailable)
	}
	addr := ""
	if to != "" {
		servers, _ := s.node.Servers()
		for _, sv := range servers {
			if sv.ID == to {
				if !sv.Voter {
					return "", fmt.Errorf("%w: %s is not a voter yet", ErrConflict, to)
				}
				if since, down := s.node.Unreachable(to); down {
					return "", fmt.Errorf("%w: %s does not answer this leader's heartbeats (since %s): it cannot take over; bring it back, or switch over to another voter", ErrConflict, to, since.UTC().Format(time.RFC3339))
				}
				addr = sv.Address
			}
		}
		if addr == "" {
			return "", fmt.Errorf("%w: node %s is not in the cluster", ErrNotFound, to)
		}
		if to == s.nodeID {
			return to, nil
		}
	}
	if err := s.node.Transfer(ctx, to, addr); err != nil {
		return "", fmt.Errorf("%w: leadership transfer: %v", ErrUnavailable, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for wctx.Err() == nil {
		if id, _ := s.node.Leader(); id != "" && id != s.nodeID {
			s.log.Info("leadership transferred", "to", id)
			return id, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("%w: no new leader after the transfer", ErrUnavailable)
}

// RemoveNode takes a member out of the cluster (Oracle Key Vault's
// "unpair"): replacing a failed node is removing it and joining a fresh
// one. The leader cannot remove itself: switch over first.
func (s *Cluster) RemoveNode(ctx context.Context, id string) error {
	if _, err := requireRole(ctx, RoleSystemAdmin, "removing a node"); err != nil {
		return err
	}
	if !s.node.IsLeader() {
		return fmt.Errorf("%w: not the leader", ErrUnavailable)
	}
	if id == s.nodeID {
		return fmt.Errorf("%w: the leader cannot remove itself: coffer cluster switchover first", ErrConflict)
	}
	servers, err := s.node.Servers()
	if err != nil {
		return fmt.Errorf("%w: read the raft configuration: %v", ErrUnavailable, err)
	}
	if !inConfiguration(servers, id) {
		// Raft removes an unknown id without a word; a record left by a
		// removal cut short after the raft step is still forgotten below.
		if _, err := s.st.Node(id); err != nil {
			return fmt.Errorf("%w: node %s is not a member of the cluster (coffer cluster status lists them)", ErrNotFound, id)
		}
	} else {
		if err := s.keepsMajority(servers, id, false, "removing "+id); err != nil {
			return err
		}
		if err := s.node.Remove(ctx, id); err != nil {
			return fmt.Errorf("%w: remove %s: %v", ErrUnavailable, id, err)
		}
	}
	unlock, err := s.openForRead()
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.applyResult(ctx, state.TypeNodeDelete, state.NodeDelete{ID: id}); err != nil {
		return err
	}
	s.log.Warn("node removed from the cluster", "node", id)
	return nil
}

// inConfiguration reports whether id is a member of the raft
// configuration servers.
func inConfiguration(servers []cluster.Server, id string) bool {
	return slices.ContainsFunc(servers, func(sv cluster.Server) bool { return sv.ID == id })
}

// downMember is a member this leader's heartbeats do not reach, and since
// when.
type downMember struct {
	sv    cluster.Server
	since time.Time
}

// reach counts the voters among servers (as voter says) and those this
// leader's heartbeats reach, and lists every member they do not reach.
func (s *Cluster) reach(servers []cluster.Server, voter func(cluster.Server) bool) (voters, reached int, down []downMember) {
	for _, sv := range servers {
		since, unreachable := s.node.Unreachable(sv.ID)
		unreachable = unreachable && sv.ID != s.nodeID
		if voter(sv) {
			voters++
			if !unreachable {
				reached++
			}
		}
		if unreachable {
			down = append(down, downMember{sv, since})
		}
	}
	return voters, reached, down
}

// keepsMajority refuses a configuration change that makes id a voter
// (becomesVoter) or takes it out, when the voters after it would not have
// a majority this leader reaches: the change would commit nowhere, the
// leader would step down and every write would stop until the unreachable
// voters return. A member is unreachable while the leader's heartbeats to
// it fail; what names the change for the error.
func (s *Cluster) keepsMajority(servers []cluster.Server, id string, becomesVoter bool, what string) error {
	voter := func(sv cluster.Server) bool {
		if sv.ID == id {
			return becomesVoter
		}
		return sv.Voter
	}
	left, reached, gone := s.reach(servers, voter)
	var down []string
	for _, g := range gone {
		if voter(g.sv) {
			down = append(down, fmt.Sprintf("%s (unreachable since %s)", g.sv.ID, g.since.UTC().Format(time.RFC3339)))
		}
	}
	if left == 0 || 2*reached > left {
		return nil
	}
	return fmt.Errorf("%w: %s would leave %d voters of which only %d can be reached (%s): no majority, every write would stop until they return; bring them back first", ErrConflict, what, left, reached, strings.Join(down, ", "))
}

// NodeID is this node's id.
func (s *Cluster) NodeID() string { return s.nodeID }

// RecoverStandalone makes a stopped node the only voter of its cluster
// (offline; the data dir must not be in use). The operator confirms that
// the other members are gone for good: if they come back they form a
// second cluster with the same history — split brain.
func RecoverStandalone(dataDir string) error {
	id, err := os.ReadFile(datadir.NodeIDPath(dataDir))
	if err != nil {
		return err
	}
	return cluster.RecoverStandalone(cluster.Config{Dir: datadir.RaftDir(dataDir), NodeID: strings.TrimSpace(string(id))})
}

// AppliedIndex is the last raft index applied to this node's state.
func (s *Cluster) AppliedIndex() uint64 { return s.st.AppliedIndex() }

// SetAPIURL sets this node's https address (known once the listener is up).
func (s *Cluster) SetAPIURL(u string) {
	if s.cfg.APIURL == "" {
		s.cfg.APIURL = u
	}
}

// VerifyLeader confirms with a quorum that this node leads and that every
// committed entry is applied (linearizable reads).
func (s *Cluster) VerifyLeader(ctx context.Context) error {
	if !s.Clustered() {
		return nil
	}
	return s.node.ReadIndex(ctx)
}

// syncGenerations adds to this node's keystore the master key generations
// another node created (replicated wrapped under an earlier generation).
func (s *Cluster) syncGenerations(ring *keystore.Keyring) (*keystore.Keyring, error) {
	gens, err := s.st.MEKGens()
	if err != nil || len(gens) == 0 {
		return ring, err
	}
	have := map[uint32]bool{}
	for _, g := range ring.Generations() {
		have[g.Number] = true
	}
	var missing []keystore.WrappedGen
	for _, g := range gens {
		if !have[g.Gen] {
			missing = append(missing, g)
		}
	}
	if len(missing) == 0 {
		return ring, nil
	}
	nr, err := s.ks.AddGenerations(ring, missing)
	if nr == nil {
		return nil, fmt.Errorf("add the cluster's master key generations to this node's keystore: %w", err)
	}
	if err != nil {
		// keystore.ks holds them (only its directory sync failed): the
		// keyring handed back is the one to hold.
		logNotDurable(s.log, "master key generations from the cluster added to this node's keystore", err)
	}
	s.log.Info("master key generations from the cluster added to this node's keystore", "current", nr.Current())
	return nr, nil
}

// syncKeysLoop keeps a follower's keystore up to date with the leader's
// master key rotations while it runs (it needs them at its next open), and
// its journal mirror attached as the replicated destinations say.
func (s *Cluster) syncKeysLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	var mirrorErr string
	var mirrorRetry time.Time // after a failed attach: not before then
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.recordSelfIfLeader()
		s.bindNodeKeys()
		s.tendCAKey()
		s.mu.RLock()
		ring, open := s.ring, s.state == StateOpen
		if open && !time.Now().Before(mirrorRetry) {
			// A mirror destination added, changed or removed through
			// another node reaches this one in the replicated state.
			msg := ""
			if err := s.svc.Backups.attachMirrorLocked(); err != nil {
				msg = err.Error()
				mirrorRetry = time.Now().Add(30 * time.Second) // a hung mount: do not pile up
			}
			if msg != mirrorErr && msg != "" {
				s.log.Error("journal mirror not attached", "error", msg)
			}
			mirrorErr = msg
		}
		s.mu.RUnlock()
		if rec, ok := s.st.KeystorePassphrase(); open && ok && rec.Version > s.localPassphraseVersion() {
			s.mu.Lock()
			if s.state == StateOpen {
				s.syncPassphraseLocked()
			}
			s.mu.Unlock()
			continue
		}
		if !open || ring == nil || !s.lacksGenerations(ring) {
			continue
		}
		s.mu.Lock()
		if s.state == StateOpen && s.ring != nil {
			if nr, err := s.syncGenerations(s.ring); err != nil {
				s.log.Error("master key generations not synchronised", "error", err)
			} else if nr != s.ring {
				s.bar.SetKeyring(nr)
				s.ring = replaceRing(s.ring, nr)
			}
		}
		s.mu.Unlock()
	}
}

// lacksGenerations reports whether the state carries a master key
// generation ring does not hold.
func (s *Cluster) lacksGenerations(ring *keystore.Keyring) bool {
	gens, err := s.st.MEKGens()
	if err != nil {
		return false
	}
	have := map[uint32]bool{}
	for _, g := range ring.Generations() {
		have[g.Number] = true
	}
	for _, g := range gens {
		if !have[g.Gen] {
			return true
		}
	}
	return false
}

// InitCluster is "coffer cluster init" on the first node: it checks that the
// node runs the cluster transport and leads, records its raft and API
// addresses (again, if they changed), and returns the status. A node with
// cluster.listen set is a cluster of one from its first start; init makes
// that explicit and is safe to repeat.
func (s *Cluster) InitCluster(ctx context.Context) (ClusterStatus, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "initialising the cluster"); err != nil {
		return ClusterStatus{}, err
	}
	if !s.Clustered() {
		return ClusterStatus{}, fmt.Errorf("%w: set cluster.listen (and cluster.advertise if others reach this node at another address) in the configuration and restart the server", ErrConflict)
	}
	if err := s.checkOpen(); err != nil {
		return ClusterStatus{}, err
	}
	if !s.node.IsLeader() {
		return ClusterStatus{}, fmt.Errorf("%w: this node is a member already (run init on the first node only)", ErrConflict)
	}
	unlock, err := s.openForRead()
	if err != nil {
		return ClusterStatus{}, err
	}
	s.afterOpenClustered(ctx)
	unlock()
	return s.ClusterStatus(ctx)
}

// recordSelfIfLeader keeps the leader's own addresses current in the node
// registry (followers forward to the API address found there): a node that
// restarted on another address and then won an election corrects it.
func (s *Cluster) recordSelfIfLeader() {
	if !s.node.IsLeader() {
		return
	}
	adv := s.cfg.ClusterAdvertise
	if adv == "" {
		adv = s.cfg.ClusterBind
	}
	nodes, err := s.st.Nodes()
	if err != nil {
		return
	}
	for _, n := range nodes {
		if n.ID == s.nodeID && n.APIURL == s.cfg.APIURL && n.RaftAddr == adv {
			return
		}
	}
	unlock, err := s.openForRead()
	if err != nil {
		return
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(WithIdentity(context.Background(), LocalRoot()), 5*time.Second)
	defer cancel()
	key, _ := tlsutil.NodeKeyFingerprint(s.cfg.TLSDir)
	if _, err := s.applyResult(ctx, state.TypeNodePut, state.Node{ID: s.nodeID, RaftAddr: adv, APIURL: s.cfg.APIURL, KeySHA256: key}); err != nil {
		s.log.Warn("record this node's addresses", "error", err)
	} else {
		s.log.Info("this node's addresses recorded for the cluster", "api_url", s.cfg.APIURL, "raft_address", adv)
	}
}

// passphraseVersionFile records which replicated keystore passphrase this
// node's keystore is sealed under.
const passphraseVersionFile = "keystore-passphrase-version"

func (s *Cluster) localPassphraseVersion() uint64 {
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, passphraseVersionFile))
	if err != nil {
		return 0
	}
	var v uint64
	if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &v); err != nil {
		s.log.Warn("the keystore passphrase version file does not parse; taken as 0", "file", passphraseVersionFile, "error", err)
		return 0
	}
	return v
}

func (s *Cluster) setLocalPassphraseVersion(v uint64) error {
	return fsutil.WriteFile(filepath.Join(s.cfg.DataDir, passphraseVersionFile), fmt.Appendf(nil, "%d\n", v))
}

// replicatePassphraseLocked sends a passphrase change made on the leader to
// the other nodes, sealed under the current data key (the same protection
// as every secret in the state). Lifecycle lock held.
func (s *Cluster) replicatePassphraseLocked(ctx context.Context, p []byte) error {
	cur, _ := s.st.KeystorePassphrase()
	v := cur.Version + 1
	sealed, err := s.bar.EncryptValue("keystore-passphrase", v, p)
	if err != nil {
		return err
	}
	if err := s.applyLocked(ctx, state.TypeKeystorePassphrase, state.KeystorePassphrase{Version: v, Sealed: sealed}); err != nil {
		return err
	}
	return s.setLocalPassphraseVersion(v)
}

// syncPassphrase re-seals this node's keystore under a passphrase the
// leader changed to. Lifecycle lock held for writing.
func (s *Cluster) syncPassphraseLocked() {
	rec, ok := s.st.KeystorePassphrase()
	if !ok || rec.Version <= s.localPassphraseVersion() || s.ring == nil {
		return
	}
	p, err := s.bar.DecryptValue("keystore-passphrase", rec.Version, rec.Sealed)
	if err != nil {
		s.log.Error("the cluster's new keystore passphrase does not decrypt here", "error", err)
		return
	}
	defer clear(p)
	nr, err := s.ks.ResetPassphrase(s.ring, p)
	if nr == nil {
		s.log.Error("re-seal this node's keystore under the cluster's new passphrase", "error", err)
		return
	}
	if err != nil {
		// Re-sealed (only the directory sync failed): hold the new keyring.
		logNotDurable(s.log, "keystore re-sealed under the cluster's new passphrase", err)
	}
	s.bar.SetKeyring(nr)
	s.ring = replaceRing(s.ring, nr)
	if err := s.setLocalPassphraseVersion(rec.Version); err != nil {
		s.log.Error("record the keystore passphrase version", "error", err)
	}
	s.log.Info("keystore re-sealed under the passphrase changed on the leader", "version", rec.Version)
}
