// Package forward sends writes that reach a follower to the cluster's
// leader (as Vault's request forwarding does), or answers with a redirect
// when the client asks for one, and tells transports who a forwarded
// request really comes from. Reads are served where they arrive.
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
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/cluster"
)

// Headers a forwarding node sets (trusted only from a node certificate).
const (
	HeaderClientCert = "X-Coffer-Forwarded-Client-Cert" // base64 DER of the client's verified certificate
	HeaderLocal      = "X-Coffer-Forwarded-Local"       // "1": the request came through the node's control socket
	HeaderBy         = "X-Coffer-Forwarded-By"          // the forwarding node's id
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
	// VerifyLeader confirms with a quorum that this node still leads.
	VerifyLeader(ctx context.Context) error
}

// Options of the middleware.
type Options struct {
	Logger *slog.Logger
	// IsLocal reports whether a request came through the control socket.
	IsLocal func(*http.Request) bool
}

// nodeLocal are requests about this node itself: never forwarded.
func nodeLocal(r *http.Request) bool {
	p := r.URL.Path
	for _, pre := range []string{
		"/api/v1/sys/init", "/api/v1/sys/open", "/api/v1/sys/seal", "/api/v1/sys/stop", "/api/v1/sys/root-token",
		"/api/v1/sys/keystore/change-passphrase", "/api/v1/sys/keystore/enable-auto-open", "/api/v1/sys/keystore/disable-auto-open",
		"/api/v1/sys/keystore/reset-passphrase", "/api/v1/sys/freeze", "/api/v1/sys/thaw", "/api/v1/sys/journal/rotate",
		"/api/v1/sys/cluster/", "/api/v1/audit/verify", "/api/v1/sys/health", "/v1/sys/health", "/v1/sys/seal-status",
		"/api/v1/cluster/ca", "/metrics",
	} {
		if p == pre || strings.HasPrefix(p, pre) && strings.HasSuffix(pre, "/") {
			return true
		}
	}
	return false
}

func isWrite(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// Handler wraps next: on a follower, writes (and reads asking for
// linearizability) go to the leader; without quorum they are refused, and
// with allow_read_only_restricted_mode false everything is.
func Handler(next http.Handler, c Cluster, o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var proxy *httputil.ReverseProxy
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.Clustered() || nodeLocal(r) {
			next.ServeHTTP(w, r)
			return
		}
		if !c.AllowReadOnly() && c.ReadOnlyRestricted() {
			refuse(w, r, "read-only restricted mode is off (cluster.allow_read_only_restricted_mode: false) and this node has no quorum: every request is refused until it returns")
			return
		}
		linear := strings.EqualFold(r.Header.Get(HeaderConsistency), "linearizable")
		if !isWrite(r) && !linear {
			next.ServeHTTP(w, r)
			return
		}
		leader, self, ok := c.LeaderAPI()
		if self {
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
		if proxy == nil {
			proxy = newProxy(c, o)
		}
		target, err := url.Parse(leader)
		if err != nil {
			refuse(w, r, "the leader's address is not a URL: "+leader)
			return
		}
		r = r.Clone(r.Context())
		// Only what this node verified is passed on, in headers the leader
		// trusts from a node certificate alone.
		r.Header.Del(HeaderClientCert)
		r.Header.Del(HeaderLocal)
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && !cluster.IsNodeCert(r.TLS.PeerCertificates[0]) {
			r.Header.Set(HeaderClientCert, base64.StdEncoding.EncodeToString(r.TLS.PeerCertificates[0].Raw))
		}
		if o.IsLocal != nil && o.IsLocal(r) {
			r.Header.Set(HeaderLocal, "1")
		}
		r.Header.Set(HeaderBy, c.NodeID())
		r.URL.Scheme, r.URL.Host = target.Scheme, target.Host
		r.Host = target.Host
		proxy.ServeHTTP(w, r)
	})
}

func newProxy(c Cluster, o Options) *httputil.ReverseProxy {
	conf := c.NodeTLS()
	if conf == nil {
		conf = &tls.Config{}
	}
	conf = conf.Clone()
	roots := conf.RootCAs
	conf.InsecureSkipVerify = true // the leader is verified against the cluster CA below, whatever name its URL uses
	conf.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errNoCert
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	tr := &http.Transport{TLSClientConfig: conf, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, ResponseHeaderTimeout: 60 * time.Second}
	return &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.Out.URL = pr.In.URL; pr.Out.Host = pr.In.Host; pr.SetXForwarded() },
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
			refuseCode(w, r, "leader_unreachable", "the connection to the leader broke while it handled this request: it may or may not have been applied; check before sending it again")
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
		json.NewEncoder(w).Encode(map[string]any{"errors": []string{msg}})
		return
	}
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	body.Error.Code, body.Error.Message = code, msg
	json.NewEncoder(w).Encode(body)
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
}

// Caller sorts out a request's peer: an endpoint's certificate, or a node
// calling for itself or forwarding a client's request.
func Caller(r *http.Request) From {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return From{}
	}
	peer := r.TLS.PeerCertificates[0]
	if !cluster.IsNodeCert(peer) {
		return From{ClientCert: peer.Raw}
	}
	if r.Header.Get(HeaderBy) == "" {
		return From{Node: peer.Subject.CommonName}
	}
	f := From{Local: r.Header.Get(HeaderLocal) == "1"}
	if v := r.Header.Get(HeaderClientCert); v != "" {
		if der, err := base64.StdEncoding.DecodeString(v); err == nil {
			f.ClientCert = der
		}
	}
	return f
}
