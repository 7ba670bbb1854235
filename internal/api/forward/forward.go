// Package forward sends writes that reach a follower to the cluster's
// leader (as Vault's request forwarding does), or answers with a redirect
// when the client asks for one, and tells transports who a forwarded
// request really comes from. Reads are served where they arrive, except on
// a follower that has not caught up with the leader since it opened: its
// reads go to the leader too (it would answer with stale data). Where a
// request is served is a fact of its route (Facts.Placement), which the
// transports' route tables carry; requests about the node itself are never
// forwarded.
package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// Headers a forwarding node sets (trusted only from a node certificate).
const (
	HeaderClientCert = "X-Coffer-Forwarded-Client-Cert" // base64 DER of the client's verified certificate
	HeaderLocal      = "X-Coffer-Forwarded-Local"       // "1": the request came through the node's control socket
	HeaderBy         = "X-Coffer-Forwarded-By"          // the forwarding node's id
	// HeaderNodeCall "1": a node calls on its own behalf (promotion).
	HeaderNodeCall = "X-Coffer-Node-Call"
	// Clients that want a redirect to the leader instead of forwarding.
	HeaderNoForward      = "X-Coffer-No-Request-Forwarding"
	HeaderVaultNoForward = "X-Vault-No-Request-Forwarding"
	// HeaderConsistency "linearizable" asks for a read confirmed by the leader.
	HeaderConsistency = "X-Coffer-Consistency"
)

// Cluster is what forwarding needs from the node.
type Cluster interface {
	Clustered() bool
	LeaderAPI() (url string, self, ok bool)
	NodeID() string
	NodeTLS() *tls.Config
	AllowReadOnly() bool
	ReadOnlyRestricted() bool
	// CaughtUp is false on a follower that has not yet applied, since it
	// opened, what the leader had committed.
	CaughtUp() bool
	// VerifyLeader confirms with a quorum that this node still leads.
	VerifyLeader(ctx context.Context) error
	// CommitIndex is raft's commit index as this node knows it (on the
	// leader: everything it has acknowledged).
	CommitIndex() uint64
	// WaitApplied waits until this node has applied everything up to idx.
	WaitApplied(ctx context.Context, idx uint64) error
}

// readYourWritesWait bounds how long a follower holds the leader's answer
// to a forwarded write until it has applied that write itself.
const readYourWritesWait = 2 * time.Second

// Options of the middleware.
type Options struct {
	Logger *slog.Logger
	// IsLocal reports whether a request came through the control socket.
	IsLocal func(*http.Request) bool
	// Routes tells the facts of the route a request is for; a request no
	// route matches (or every request, when nil) is placed Leader.
	Routes Router
}

func isWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// Handler wraps next: on a follower, writes (and reads asking for
// linearizability) go to the leader, unless their route is NodeLocal;
// without quorum they are refused, and with allow_read_only_restricted_mode
// false everything is.
func Handler(next http.Handler, c Cluster, o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var (
		proxy     *httputil.ReverseProxy
		proxyOnce sync.Once
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.Clustered() {
			next.ServeHTTP(w, r)
			return
		}
		place := placement(o.Routes, r)
		if place == NodeLocal {
			next.ServeHTTP(w, r)
			return
		}
		if !c.AllowReadOnly() && c.ReadOnlyRestricted() {
			refuse(w, r, "read-only restricted mode is off (cluster.allow_read_only_restricted_mode: false) and this node has no quorum: every request is refused until it returns")
			return
		}
		linear := strings.EqualFold(r.Header.Get(HeaderConsistency), "linearizable")
		// A follower still catching up since it opened would answer reads
		// with stale data: they go to the leader like writes.
		behind := !isWrite(r) && !linear && place != NodeView && !c.CaughtUp()
		if !isWrite(r) && !linear && !behind {
			next.ServeHTTP(w, r)
			return
		}
		leader, self, ok := c.LeaderAPI()
		if behind && !ok {
			if c.ReadOnlyRestricted() {
				// No quorum, and read-only restricted mode allowed (checked
				// above): reads are served here, as they are in that mode.
				next.ServeHTTP(w, r)
				return
			}
			refuseCode(w, r, "not_caught_up", "this node has not caught up with the leader since it started and the leader's API address is not known yet: its data may be stale, so the read is not served here; send it to the leader or retry shortly")
			return
		}
		if self {
			if isWrite(r) && fromNode(r) {
				// A write another node forwarded: tell it how far to
				// apply before it answers, so that its client reads its
				// own write there next.
				cw := &commitWriter{ResponseWriter: w, c: c}
				defer func() {
					if !cw.done {
						cw.WriteHeader(http.StatusOK) // what net/http answers for a handler that wrote nothing
					}
				}()
				w = cw
			}
			if linear && !isWrite(r) {
				// Still the leader (a quorum says so), with everything
				// committed applied: the local read is linearizable.
				if err := c.VerifyLeader(r.Context()); err != nil {
					refuse(w, r, "could not confirm leadership for a linearizable read: "+err.Error())
					return
				}
			}
			next.ServeHTTP(w, r)
			return
		}
		if !ok {
			if linear && !isWrite(r) {
				refuse(w, r, "read-only restricted mode: no leader to confirm a linearizable read (this node has no quorum); a plain read is served here")
				return
			}
			// No leader: the service refuses the write with the
			// read-only restricted mode error.
			next.ServeHTTP(w, r)
			return
		}
		if r.Header.Get(HeaderNoForward) != "" || r.Header.Get(HeaderVaultNoForward) != "" {
			u := strings.TrimRight(leader, "/") + r.URL.RequestURI()
			w.Header().Set("Location", u)
			w.WriteHeader(http.StatusTemporaryRedirect)
			return
		}
		if fromNode(r) {
			// Another node forwarded this here, believing this node leads:
			// forwarding again could lose the caller or loop.
			refuseCode(w, r, "not_leader", "this node is not the leader any more: not applied, send it again")
			return
		}
		proxyOnce.Do(func() { proxy = newProxy(c, o) })
		target, err := url.Parse(leader)
		if err != nil {
			refuse(w, r, "the leader's address is not a URL: "+leader)
			return
		}
		// What the leader trusts from this node's certificate is set in the
		// proxy's Rewrite, on the outgoing request, after the hop-by-hop
		// headers a client may name in Connection are removed.
		var from []string
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			from = append(from, HeaderClientCert, base64.StdEncoding.EncodeToString(r.TLS.PeerCertificates[0].Raw))
		}
		if o.IsLocal != nil && o.IsLocal(r) {
			from = append(from, HeaderLocal, "1")
		}
		r = r.WithContext(context.WithValue(r.Context(), trustedKey{}, from))
		r.URL.Scheme, r.URL.Host = target.Scheme, target.Host
		r.Host = target.Host
		proxy.ServeHTTP(w, r)
	})
}

type trustedKey struct{}

// trustedHeaders is every header the leader believes from a node.
var trustedHeaders = []string{HeaderClientCert, HeaderLocal, HeaderBy, HeaderNodeCall}

// leaderTransport is the node-to-node client side: this node's
// certificate, and the leader verified against the cluster CA.
func leaderTransport(c Cluster) *http.Transport {
	conf := c.NodeTLS()
	if conf == nil {
		conf = &tls.Config{}
	}
	conf = conf.Clone()
	roots := conf.RootCAs
	conf.InsecureSkipVerify = true                                                   // #nosec G402 -- the leader is verified against the cluster CA in VerifyPeerCertificate, whatever name its URL uses
	conf.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error { // #nosec G123 -- a client config without a ClientSessionCache: sessions are never resumed, the callback runs on every handshake
		if len(raw) == 0 {
			return errNoCert
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		// A server certificate (or a node's): an endpoint's client
		// certificate from the same CA must not pass as the leader.
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	}
	return &http.Transport{TLSClientConfig: conf, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 60 * time.Second}
}

// fromNode reports whether another cluster node sent r (its verified
// client certificate is a node certificate).
func fromNode(r *http.Request) bool {
	return r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && tlsutil.IsNodeCert(r.TLS.PeerCertificates[0])
}

// commitWriter puts the leader's commit index on a successful answer to a
// write another node forwarded, when the answer's header is written: by
// then the write is applied here (a write is acknowledged after it is
// applied).
type commitWriter struct {
	http.ResponseWriter
	c    Cluster
	done bool
}

func (w *commitWriter) WriteHeader(code int) {
	if !w.done {
		w.done = true
		if code < 400 {
			// A refused write committed nothing to wait for.
			w.Header().Set(HeaderCommitIndex, strconv.FormatUint(w.c.CommitIndex(), 10))
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *commitWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes of a
// streamed answer).
func (w *commitWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush passes on a flush of a streamed answer.
func (w *commitWriter) Flush() {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// readYourWrites, on the forwarding node, holds the leader's answer to a
// write until this node has applied what the leader had committed when it
// answered (at most readYourWritesWait; the answer is right either way),
// so that the client's next read here sees its write.
func readYourWrites(c Cluster, log *slog.Logger) func(*http.Response) error {
	return func(resp *http.Response) error {
		v := resp.Header.Get(HeaderCommitIndex)
		resp.Header.Del(HeaderCommitIndex)
		if v == "" || !isWrite(resp.Request) {
			return nil
		}
		idx, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(resp.Request.Context(), readYourWritesWait)
		defer cancel()
		if err := c.WaitApplied(ctx, idx); err != nil {
			log.Warn("a forwarded write is not applied here yet; answering anyway", "index", idx, "error", err)
		}
		return nil
	}
}

func newProxy(c Cluster, o Options) *httputil.ReverseProxy {
	tr := leaderTransport(c)
	return &httputil.ReverseProxy{
		ModifyResponse: readYourWrites(c, o.Logger),
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL, pr.Out.Host = pr.In.URL, pr.In.Host
			pr.SetXForwarded()
			for _, h := range trustedHeaders {
				pr.Out.Header.Del(h) // a client's own are never passed on
			}
			from, _ := pr.In.Context().Value(trustedKey{}).([]string)
			for i := 0; i+1 < len(from); i += 2 {
				pr.Out.Header.Set(from[i], from[i+1])
			}
			pr.Out.Header.Set(HeaderBy, c.NodeID())
		},
		Transport: tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			o.Logger.Warn("forwarding to the leader failed", "error", err)
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				// Never reached the leader: certainly not applied.
				refuseCode(w, r, "not_leader", "the leader could not be reached to forward this request (a failover may be in progress): not applied, send it again")
				return
			}
			// It may have reached the leader: the outcome is unknown.
			refuseCode(w, r, "outcome_unknown", "outcome unknown: the connection to the leader broke while it handled this request: it may or may not have been applied; check before sending it again")
		},
	}
}

type errString string

func (e errString) Error() string { return string(e) }

const errNoCert = errString("no certificate from the leader")

// refuse answers 503 read_only_restricted in the transport's error shape.
func refuse(w http.ResponseWriter, r *http.Request, msg string) {
	refuseCode(w, r, "read_only_restricted", msg)
}

func refuseCode(w http.ResponseWriter, r *http.Request, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(http.StatusServiceUnavailable)
	if strings.HasPrefix(r.URL.Path, "/v1/") {
		json.NewEncoder(w).Encode(map[string]any{"errors": []string{msg}}) // #nosec G104 -- these types always encode, so an error is a failed write: the client has gone; nothing to tell it
		return
	}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message = code, msg
	json.NewEncoder(w).Encode(body) // #nosec G104 -- these types always encode, so an error is a failed write: the client has gone; nothing to tell it
}

// From is who a request comes from, as a transport must see it.
type From struct {
	// ClientCert is the DER of the client certificate to authenticate (the
	// peer's own, or the one a forwarding node verified); nil if none.
	ClientCert []byte
	// Node is the peer node's id when a node calls for itself (no
	// forwarded client); "" otherwise.
	Node string
	// Local: a forwarding node received the request on its control socket.
	Local bool
	// Peer is the node certificate's id when the peer is a node (forwarding
	// or calling for itself), and PeerKey its certificate's key fingerprint
	// (tlsutil.KeyFingerprint): the transport checks both name a member.
	Peer    string
	PeerKey string
	// ClientAddr is the forwarded client's IP (X-Forwarded-For as the
	// forwarding node set it; never a client's own); "" if not forwarded.
	ClientAddr string
}

// Caller sorts out a request's peer: an endpoint's certificate, or a node
// calling for itself or forwarding a client's request.
func Caller(r *http.Request) From {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return From{}
	}
	peer := r.TLS.PeerCertificates[0]
	if !tlsutil.IsNodeCert(peer) {
		return From{ClientCert: peer.Raw}
	}
	cn, key := peer.Subject.CommonName, tlsutil.KeyFingerprint(peer)
	if r.Header.Get(HeaderNodeCall) == "1" && r.Header.Get(HeaderBy) == "" {
		return From{Node: cn, Peer: cn, PeerKey: key}
	}
	if r.Header.Get(HeaderBy) == "" {
		return From{Peer: cn, PeerKey: key} // a node with neither marker: no identity from it
	}
	f := From{Local: r.Header.Get(HeaderLocal) == "1", Peer: cn, PeerKey: key}
	// The forwarding proxy drops what the client sent and sets the
	// client's IP alone (httputil.ProxyRequest.SetXForwarded).
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		parts := strings.Split(xff[len(xff)-1], ",")
		if ip := net.ParseIP(strings.TrimSpace(parts[len(parts)-1])); ip != nil {
			f.ClientAddr = ip.String()
		}
	}
	if v := r.Header.Get(HeaderClientCert); v != "" {
		if der, err := base64.StdEncoding.DecodeString(v); err == nil {
			f.ClientCert = der
		}
	}
	return f
}
