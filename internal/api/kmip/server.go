// Package kmip is Coffer's KMIP transport: KMIP 1.0-1.4 TTLV over mutual
// TLS (port 5696 by convention). Clients are enrolled endpoints: the client
// certificate names the endpoint, and the endpoint's wallet grants are its
// permissions. TTLV encoding, batch handling and the request/response types
// come from github.com/ovh/kmip-go; this package owns the connection loop
// (deadlines, size limit, connection limit, shutdown), authentication,
// auditing and the mapping of KMIP operations onto the service. It holds no
// domain logic. docs/reference/kmip.md describes the protocol surface.
package kmip

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/coffer-kms/coffer/internal/api/forward"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// Defaults of Options.
const (
	// DefaultMaxMessageSize bounds one request (TTLV header included): a
	// 64 KiB secret plus attributes fits many times over.
	DefaultMaxMessageSize = 1 << 20
	// DefaultIdleTimeout closes a connection that sends nothing for this long.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultMessageTimeout bounds the TLS handshake and reading the rest of
	// a message once its first byte arrived (slow senders are cut off).
	DefaultMessageTimeout = 30 * time.Second
	// DefaultHandshakeTimeout bounds the TLS handshake of a new connection.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxConns bounds concurrent connections; more are closed at once.
	DefaultMaxConns = 1024
	// DefaultMaxBatchItems bounds the batch items of one request message.
	// KMIP sets no limit; every item is a service call (a Locate scans
	// every object), so one message of many items would make one request
	// cost as much as that many requests.
	DefaultMaxBatchItems = 1000
)

// Options of a Server. Zero values take the defaults above.
type Options struct {
	Logger         *slog.Logger
	MaxMessageSize int
	IdleTimeout    time.Duration
	MessageTimeout time.Duration
	// HandshakeTimeout bounds a new connection's TLS handshake (default
	// DefaultHandshakeTimeout): a client that connects and says nothing
	// holds a slot no longer than this.
	HandshakeTimeout time.Duration
	MaxConns         int
	// MaxBatchItems bounds the batch items of one message (default
	// DefaultMaxBatchItems); a message with more is refused whole.
	MaxBatchItems int
}

// Server serves KMIP on listeners handed to Serve.
type Server struct {
	svc  *service.Service
	log  *slog.Logger
	opts Options
	exec *kmipserver.BatchExecutor
	h    *handler // the executor's handlers, for the direct Get (serveGet)
	sem  chan struct{}
	// relay sends messages that must be served by the leader there.
	relay *forward.Relay

	mu sync.Mutex
	// closing is set under mu but read without it: a connection checks it
	// while holding its own lock, and Shutdown takes mu before a
	// connection's lock, so reading it under mu there would deadlock.
	closing  atomic.Bool
	lns      map[net.Listener]struct{}
	conns    map[*conn]struct{}
	wg       sync.WaitGroup
	shutdown chan struct{}
}

// New returns a KMIP server calling svc.
func New(svc *service.Service, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxMessageSize <= 0 {
		opts.MaxMessageSize = DefaultMaxMessageSize
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MessageTimeout <= 0 {
		opts.MessageTimeout = DefaultMessageTimeout
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = min(DefaultHandshakeTimeout, opts.MessageTimeout)
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	if opts.MaxBatchItems <= 0 {
		opts.MaxBatchItems = DefaultMaxBatchItems
	}
	s := &Server{svc: svc, log: opts.Logger, opts: opts, sem: make(chan struct{}, opts.MaxConns),
		lns: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}, shutdown: make(chan struct{}),
		relay: forward.NewRelay(svc.Cluster)}
	s.exec = newExecutor(s)
	return s
}

// TLSConfig derives the KMIP listener's TLS configuration from the API's:
// same server certificate, TLS 1.2 or later, and a client certificate
// signed by clientCAs required at the handshake.
func TLSConfig(base *tls.Config) (*tls.Config, error) {
	if base == nil {
		return nil, errors.New("kmip: needs TLS (tls.disable is set)")
	}
	if base.ClientCAs == nil {
		return nil, errors.New("kmip: needs a CA for client certificates (the generated CA, or tls.client_ca_file)")
	}
	c := base.Clone()
	harden := func(c *tls.Config) {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		if c.MinVersion < tls.VersionTLS12 {
			c.MinVersion = tls.VersionTLS12
		}
		c.CipherSuites = tlsutil.AEADSuites()
		c.NextProtos = nil
	}
	harden(c)
	if g := c.GetConfigForClient; g != nil {
		// The server picks the current CA per connection (it can change
		// when a node joins a cluster): keep the KMIP requirements on it.
		c.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			cc, err := g(h)
			if cc != nil {
				cc = cc.Clone()
				cc.GetConfigForClient = nil
				harden(cc)
			}
			return cc, err
		}
	}
	return c, nil
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("kmip: server closed")

// Serve accepts TLS connections on ln (a plain TCP listener; tlsConf from
// TLSConfig) until Shutdown.
func (s *Server) Serve(ln net.Listener, tlsConf *tls.Config) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close() // #nosec G104 -- the server is stopping: the listener it was handed is closed unused
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		select {
		case s.sem <- struct{}{}:
		default:
			s.log.Warn("kmip: too many connections; closing a new one", "source", raw.RemoteAddr().String(), "max", s.opts.MaxConns)
			raw.Close() // #nosec G104 -- refusing a connection over the limit: nothing was read or written on it
			continue
		}
		c := &conn{srv: s, raw: raw}
		c.tc = tls.Server(&deadlineConn{Conn: raw, c: c}, tlsConf)
		if !s.track(c) {
			<-s.sem
			raw.Close() // #nosec G104 -- refusing a connection while stopping: nothing was read or written on it
			return ErrServerClosed
		}
		go func() {
			defer func() { <-s.sem }()
			defer s.untrack(c)
			if hook := testHookBeforeServe.Load(); hook != nil {
				(*hook)()
			}
			c.serve()
		}()
	}
}

func (s *Server) isClosing() bool {
	return s.closing.Load()
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting, lets requests in progress finish and closes
// idle connections. When ctx ends first, remaining connections are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing.Load() {
		s.closing.Store(true)
		close(s.shutdown)
	}
	for ln := range s.lns {
		ln.Close() // #nosec G104 -- the server is stopping: a listener close error leaves nothing to do
	}
	for c := range s.conns {
		c.wake()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.raw.Close() // #nosec G104 -- the shutdown deadline passed: connections are closed by force, with nothing left to do about an error
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// conn is one client connection.
type conn struct {
	srv *Server
	raw net.Conn
	tc  *tls.Conn

	mu   sync.Mutex
	busy bool // a request is being handled: shutdown waits for it

	// auth remembers the endpoint the client certificate resolved to.
	auth service.CertAuth

	// wbuf holds the encoded response being written (reused from one
	// message to the next; tls.Conn.Write copies it into its record).
	wbuf []byte

	// Deadlines armed on raw by the connection's own goroutine (zero: none
	// armed; wake and startHandshake set raw's deadlines without them). A
	// deadline is set again only when the armed one is off from the one
	// wanted by more than deadlineSlack: each setting takes the runtime
	// timer's lock, which costs more than the rest of a small Get.
	readDL, writeDL time.Time
	// inMessage: the first byte of a message was read and the message
	// deadline is not armed yet: the rest must come within MessageTimeout
	// of the first read of the socket that waits for it.
	inMessage bool
}

// deadlineSlack is how much earlier than wanted an armed deadline may be
// and still be kept (d is the timeout): at most a second, and at most an
// eighth of short timeouts.
func deadlineSlack(d time.Duration) time.Duration {
	return min(time.Second, d/8)
}

// deadlineConn is the connection under the TLS layer: a read of the socket
// in the middle of a message (the rest of it was not in the TLS record
// already read) arms the message deadline first. Reads by the connection's
// goroutine only (the TLS handshake's and readMessage's).
type deadlineConn struct {
	net.Conn
	c *conn
}

func (d *deadlineConn) Read(b []byte) (int, error) {
	c := d.c
	if c.inMessage {
		// Armed once a message: its time counts from its first read of the
		// socket that had to wait, and replaces the idle deadline (which
		// may be due sooner: a message started late in the idle time has
		// the whole message timeout all the same).
		c.inMessage = false
		want := time.Now().Add(c.srv.opts.MessageTimeout)
		c.raw.SetReadDeadline(want) // #nosec G104 -- SetDeadline fails only on a closed connection, which the read reports
		c.readDL = want
	}
	return d.Conn.Read(b)
}

// maxKeptWriteBuf bounds the response buffer a connection keeps between
// messages (a large Locate answer is not held by an idle connection).
const maxKeptWriteBuf = 64 << 10

// wake makes an idle connection's read return so it sees the shutdown.
func (c *conn) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.busy {
		c.raw.SetReadDeadline(time.Now()) // #nosec G104 -- a wake-up: on a closed connection the read has already returned
	}
}

// startHandshake arms the handshake deadline unless the server is closing.
// Under c.mu, like wake: a shutdown's wake that ran before this (the
// connection was tracked but its goroutine had not started yet) would
// otherwise be overwritten by the full handshake deadline, and a client that
// never speaks TLS would hold the stop for MessageTimeout.
func (c *conn) startHandshake() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.srv.isClosing() {
		return false
	}
	c.raw.SetDeadline(time.Now().Add(c.srv.opts.HandshakeTimeout)) // #nosec G104 -- SetDeadline fails only on a closed connection, which the next read or write reports
	return true
}

// testHookBeforeServe, when set by a test, runs in a connection's goroutine
// before it serves (to order it against a shutdown).
var testHookBeforeServe atomic.Pointer[func()]

func (c *conn) setBusy(b bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy = b
	return !c.srv.isClosing()
}

func (c *conn) serve() {
	s := c.srv
	defer c.tc.Close()
	source := c.raw.RemoteAddr().String()
	defer func() {
		if r := recover(); r != nil {
			// Never let one connection take the server down.
			s.log.Error("kmip: connection handler panicked; connection closed", "source", source, "panic", fmt.Sprint(r))
		}
	}()
	if !c.startHandshake() {
		return
	}
	if err := c.tc.Handshake(); err != nil {
		s.log.Info("kmip: TLS handshake failed", "source", source, "error", err)
		return
	}
	c.raw.SetDeadline(time.Time{}) // #nosec G104 -- SetDeadline fails only on a closed connection, which the next read or write reports
	c.readDL, c.writeDL = time.Time{}, time.Time{}
	peer := c.tc.ConnectionState().PeerCertificates
	if len(peer) == 0 {
		// RequireAndVerifyClientCert makes this unreachable; keep it explicit.
		return
	}
	certDER := peer[0].Raw
	for {
		if !c.setBusy(false) {
			return
		}
		msg, err := c.readMessage()
		if err != nil {
			var tooBig *tooLargeError
			switch {
			case errors.As(err, &tooBig):
				s.log.Warn("kmip: message too large; connection closed", "source", source, "size", tooBig.size, "max", s.opts.MaxMessageSize)
				// The body is never read: the record names the size and the
				// certificate's endpoint when it is still enrolled.
				call := &service.Call{Source: source, Transport: "kmip", Start: time.Now()}
				if id, aerr := s.svc.Access.AuthenticateCert(certDER); aerr == nil {
					call.Identity = id
				}
				s.svc.Audit(call, "kmipMessageTooLarge", 413, "message_too_large",
					fmt.Sprintf("%v (limit %d bytes); connection closed", err, s.opts.MaxMessageSize))
				c.writeResponse(errorResponse(nil, kmip.ResultReasonInvalidMessage, err.Error()))
			case errors.Is(err, io.EOF), s.isClosing():
			default:
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					s.log.Info("kmip: read failed; connection closed", "source", source, "error", err)
				}
			}
			return
		}
		if !c.setBusy(true) {
			return
		}
		resp, raw, keep := s.handle(context.Background(), &c.auth, certDER, source, msg, false)
		if raw != nil {
			if !c.writeRaw(raw) || !keep {
				return
			}
			continue
		}
		if !c.writeResponse(resp) || !keep {
			return
		}
	}
}

type tooLargeError struct{ size uint64 }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("message of %d bytes is larger than the server accepts", e.size)
}

// readMessage reads one TTLV message: the 8-byte header waits up to the idle
// timeout, the rest must arrive within the message timeout (armed by
// deadlineConn when a read of the socket must wait for it).
func (c *conn) readMessage() ([]byte, error) {
	s := c.srv
	c.inMessage = false
	// The idle deadline is set again only when the armed one is more than
	// deadlineSlack early, or later than wanted (a message deadline longer
	// than the idle timeout).
	if want := time.Now().Add(s.opts.IdleTimeout); c.readDL.Before(want.Add(-deadlineSlack(s.opts.IdleTimeout))) || c.readDL.After(want) {
		c.raw.SetReadDeadline(want) // #nosec G104 -- SetDeadline fails only on a closed connection, which the next read or write reports
		c.readDL = want
	}
	if s.isClosing() {
		// Checked after setting the deadline: a shutdown from now on wakes
		// the read (wake sets a deadline in the past, which no skipped
		// setting above can have undone).
		return nil, io.EOF
	}
	var hdr [8]byte
	if _, err := io.ReadFull(c.tc, hdr[:1]); err != nil {
		return nil, err
	}
	c.inMessage = true
	if _, err := io.ReadFull(c.tc, hdr[1:]); err != nil {
		return nil, unexpected(err)
	}
	n := uint64(binary.BigEndian.Uint32(hdr[4:]))
	// Values are padded to 8 bytes.
	padded := (n + 7) / 8 * 8
	if 8+padded > uint64(s.opts.MaxMessageSize) { // #nosec G115 -- MaxMessageSize is a positive configured size
		return nil, &tooLargeError{size: 8 + padded}
	}
	buf := make([]byte, 8+padded)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(c.tc, buf[8:]); err != nil {
		return nil, unexpected(err)
	}
	return buf, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (c *conn) writeResponse(resp *kmip.ResponseMessage) bool {
	c.wbuf = appendResponse(c.wbuf[:0], resp)
	ok := c.writeRaw(c.wbuf)
	if cap(c.wbuf) > maxKeptWriteBuf {
		c.wbuf = nil
	}
	return ok
}

func (c *conn) writeRaw(b []byte) bool {
	d := c.srv.opts.MessageTimeout
	if want := time.Now().Add(d); c.writeDL.Before(want.Add(-deadlineSlack(d))) {
		c.raw.SetWriteDeadline(want) // #nosec G104 -- SetDeadline fails only on a closed connection, which the next read or write reports
		c.writeDL = want
	}
	_, err := c.tc.Write(b)
	return err == nil
}

// decodeRequest decodes one TTLV request message. Decoder panics (on input
// the library does not expect) become errors.
func decodeRequest(b []byte) (msg *kmip.RequestMessage, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("malformed TTLV: %v", r)
		}
	}()
	if msg, ok := decodeGetRequest(b); ok {
		return msg, nil
	}
	msg = new(kmip.RequestMessage)
	if err := ttlv.UnmarshalTTLV(b, msg); err != nil {
		return nil, fmt.Errorf("malformed TTLV request: %w", err)
	}
	return msg, nil
}

// handleMessage decodes, authenticates and executes one request here.
// keep is false when the connection must be closed after the response.
func (s *Server) handleMessage(ctx context.Context, certDER []byte, source string, b []byte) (resp *kmip.ResponseMessage, keep bool) {
	resp, raw, keep := s.handle(ctx, nil, certDER, source, b, false)
	if raw != nil {
		resp = new(kmip.ResponseMessage)
		if err := ttlv.UnmarshalTTLV(raw, resp); err != nil {
			return errorResponse(nil, kmip.ResultReasonGeneralFailure, "the leader's answer does not decode"), false
		}
	}
	return resp, keep
}

// handle decodes and authenticates one request, then executes it here or,
// when it must be served by the leader (a write on a follower, or any
// request on a follower still catching up), relays it there and returns
// the leader's encoded answer in raw. relayed: the message came from
// another node's relay (never relayed again). auth is the connection's
// memory of its certificate's endpoint (nil: none).
func (s *Server) handle(ctx context.Context, auth *service.CertAuth, certDER []byte, source string, b []byte, relayed bool) (resp *kmip.ResponseMessage, raw []byte, keep bool) {
	msg, err := decodeRequest(b)
	if err != nil {
		s.log.Info("kmip: malformed request; connection closed", "source", source, "error", err)
		call := &service.Call{Source: source, Transport: "kmip", Start: time.Now()}
		s.svc.Audit(call, "kmipMalformed", 400, "invalid_message", clip(err.Error(), 256))
		return errorResponse(nil, kmip.ResultReasonInvalidMessage, "malformed TTLV request message"), nil, false
	}
	if len(msg.BatchItem) == 0 {
		// KMIP requires at least one batch item: nothing to answer item by
		// item, so the whole message is invalid (found by the fuzzer).
		call := &service.Call{Source: source, Transport: "kmip", Start: time.Now()}
		s.svc.Audit(call, "kmipMalformed", 400, "invalid_message", "request message has no batch item")
		return errorResponse(msg, kmip.ResultReasonInvalidMessage, "request message has no batch item"), nil, false
	}
	// Authenticate on every message: a revoked endpoint is refused from its
	// next request on, even on a connection opened before (auth, the
	// connection's, answers only while no command was applied).
	id, err := s.svc.Access.AuthenticateCertWith(auth, certDER)
	if err != nil {
		call := &service.Call{Source: source, Transport: "kmip", Start: time.Now()}
		s.svc.Audit(call, "kmipAuthenticate", 401, "unauthenticated", err.Error())
		return errorResponse(msg, kmip.ResultReasonAuthenticationNotSuccessful, err.Error()), nil, false
	}
	// Leader forwarding is the service's decision, as for REST and Vault.
	url, fwd, err := s.svc.Cluster.ForwardTo(writes(msg))
	// notServed audits a message answered here without being executed.
	notServed := func(status int, result, why string) {
		call := &service.Call{Identity: id, Source: source, Transport: "kmip", Start: time.Now()}
		s.svc.Audit(call, "kmipMessage", status, result, why)
	}
	switch {
	case err != nil:
		notServed(503, "unavailable", err.Error())
		return errorResponse(msg, kmip.ResultReasonGeneralFailure, err.Error()), nil, true
	case fwd && relayed:
		// Relayed here by a node that took this one for the leader.
		const why = "this node is not the leader any more: not applied, send it again"
		notServed(503, "not_leader", why)
		return errorResponse(msg, kmip.ResultReasonGeneralFailure, why), nil, true
	case fwd:
		rctx, cancel := context.WithTimeout(ctx, relayTimeout)
		defer cancel()
		out, commit, err := s.relay.Post(rctx, url, RelayPath, b, certDER, source, relayResponseLimit)
		if err == nil && !isResponseMessage(out) {
			err = errors.New("the leader's answer is not a KMIP response message")
		}
		if err != nil {
			s.log.Warn("kmip: relaying to the leader failed", "source", source, "leader", url, "error", err)
			notServed(502, "relay_failed", "relaying to the leader failed: "+err.Error())
			return errorResponse(msg, kmip.ResultReasonGeneralFailure, err.Error()), nil, true
		}
		// Read your writes: the client's next Get here sees what the
		// leader just did (bounded; the answer is right either way).
		wctx, wcancel := context.WithTimeout(ctx, readYourWritesWait)
		if err := s.svc.Cluster.WaitApplied(wctx, commit); err != nil {
			s.log.Warn("kmip: this node has not applied a relayed write yet; answering anyway", "index", commit, "error", err)
		}
		wcancel()
		return nil, out, true
	}
	if resp, ok := s.serveGet(ctx, id, source, msg); ok {
		return resp, nil, true
	}
	ctx = context.WithValue(ctx, peerKey{}, peer{id: id, source: source})
	return s.exec.HandleRequest(ctx, msg), nil, true
}

// RelayPath is the node-only route on which the leader serves KMIP
// messages a follower relays.
const RelayPath = "/api/v1/sys/cluster/kmip"

const (
	relayTimeout = 60 * time.Second
	// readYourWritesWait bounds the wait for a relayed write to be applied
	// here before the answer goes back to the client.
	readYourWritesWait = 5 * time.Second
	// relayResponseLimit bounds the leader's answer (a Locate of many
	// objects is far larger than any request).
	relayResponseLimit = 64 << 20
)

// readOps are the operations that change nothing: a follower that has
// caught up serves them itself.
var readOps = []kmip.Operation{kmip.OperationDiscoverVersions, kmip.OperationQuery, kmip.OperationGet,
	kmip.OperationGetAttributes, kmip.OperationGetAttributeList, kmip.OperationLocate}

// writes reports whether any item of msg changes state.
func writes(msg *kmip.RequestMessage) bool {
	for _, bi := range msg.BatchItem {
		if !slices.Contains(readOps, bi.Operation) {
			return true
		}
	}
	return false
}

// isResponseMessage checks the outer tag of an encoded message: a
// structure tagged Response Message (0x42007B).
func isResponseMessage(b []byte) bool {
	return len(b) >= 8 && b[0] == 0x42 && b[1] == 0x00 && b[2] == 0x7B && b[3] == 0x01
}

// RelayHandler serves, on the leader, KMIP messages a follower relays on
// RelayPath: only from a member node's certificate that forwards a
// client's certificate, which is then authenticated exactly as on a KMIP
// connection (the same rules as REST and Vault forwarding: a node vouches
// for the client certificate it verified, never for an identity of its
// own). The answer is the encoded KMIP response.
func (s *Server) RelayHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from := forward.Caller(r)
		if from.Peer == "" || r.Header.Get(forward.HeaderBy) == "" || from.ClientCert == nil {
			http.Error(w, "KMIP relay: only a cluster node forwarding a KMIP client's certificate may call this", http.StatusForbidden)
			return
		}
		if !s.svc.Cluster.IsMember(from.Peer, from.PeerKey) {
			http.Error(w, fmt.Sprintf("KMIP relay: node %s is not a member of this cluster, or its certificate's key is not the one recorded for it", from.Peer), http.StatusForbidden)
			return
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, int64(s.opts.MaxMessageSize)+1))
		if err != nil {
			http.Error(w, "KMIP relay: read the message: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(b) > s.opts.MaxMessageSize {
			http.Error(w, (&tooLargeError{size: uint64(len(b))}).Error(), http.StatusRequestEntityTooLarge)
			return
		}
		source := from.ClientAddr
		if source == "" {
			source = r.RemoteAddr
		}
		service.MarkAudited(r.Context()) // handle audits the message
		resp, raw, _ := s.handle(r.Context(), nil, from.ClientCert, source+" via "+from.Peer, b, true)
		if raw == nil {
			raw = appendResponse(nil, resp)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set(forward.HeaderCommitIndex, strconv.FormatUint(s.svc.Cluster.CatchUpStatus().LeaderCommit, 10))
		w.Write(raw) // #nosec G705 G104 -- a binary KMIP response (Content-Type application/octet-stream), never HTML; a failed write is a client that has gone, with nothing to tell it
	})
}

type peerKey struct{}

type peer struct {
	id     service.Identity
	source string
}

// errorResponse is a one-item failure response to req (nil when the
// request could not be decoded).
func errorResponse(req *kmip.RequestMessage, reason kmip.ResultReason, message string) *kmip.ResponseMessage {
	hdr := kmip.ResponseHeader{ProtocolVersion: kmip.V1_0, TimeStamp: time.Now().Truncate(time.Second), BatchCount: 1}
	bi := kmip.ResponseBatchItem{ResultStatus: kmip.ResultStatusOperationFailed, ResultReason: reason, ResultMessage: message}
	if req != nil {
		if req.Header.ProtocolVersion != (kmip.ProtocolVersion{}) {
			hdr.ProtocolVersion = req.Header.ProtocolVersion
		}
		hdr.ClientCorrelationValue = req.Header.ClientCorrelationValue
		if len(req.BatchItem) == 1 {
			bi.Operation = req.BatchItem[0].Operation
			bi.UniqueBatchItemID = req.BatchItem[0].UniqueBatchItemID
		}
	}
	return &kmip.ResponseMessage{Header: hdr, BatchItem: []kmip.ResponseBatchItem{bi}}
}

// clip shortens s to at most n bytes and an ellipsis, cut at a character
// boundary (a cut inside a multi-byte character would leave text that is
// not UTF-8).
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
