// Package netproxy is a TCP proxy that a test controls, for cutting links
// between real processes on 127.0.0.0/8.
//
// The HA fault tests put one Proxy in front of each node's cluster port and
// give every node its own loopback IP (127.0.0.2, 127.0.0.3, ...). A node
// reaches a peer through the peer's proxy and dials from its own IP (its
// outgoing dialer sets LocalAddr; Linux routes all of 127/8 to lo, so no
// setup is needed). A rule is then one directed link, "from node X into the
// node behind this proxy":
//
//	p, _ := netproxy.New("127.0.0.3:0", node3RaftAddr) // peers dial p.Addr()
//	p.Block("127.0.0.2")  // node 2 can no longer reach node 3
//	p.BlockAll()          // nobody reaches node 3
//	p.UnblockAll()        // heal
//
// Each node advertises its proxy's address, not its own listener, so that
// peers only reach it through the proxy. A rule acts on connections, and so
// on everything X sends over the connections X opened to Y and on the
// replies (raft RPCs X starts, requests X forwards), while the connections Y
// opens to X pass through X's proxy. A symmetric partition between X and Y
// is therefore Block on both proxies. A test that
// cannot give nodes distinct source IPs can instead run one Proxy per directed
// link and use BlockAll/UnblockAll on it.
//
// Blocking refuses new connections from the source (they are accepted and
// reset at once) and resets the ones already open, so both ends see an error
// promptly rather than hanging. Latency can be added with SetDelay.
package netproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// dialTimeout bounds a dial to the target.
const dialTimeout = 5 * time.Second

// chunkSize is the most one read forwards at a time.
const chunkSize = 32 << 10

// Stats counts what a Proxy did since New.
type Stats struct {
	Accepted   int64 // connections accepted and let through by the rules
	Refused    int64 // new connections reset because their source was blocked
	Cut        int64 // open connections reset by Block or BlockAll
	DialErrors int64 // connections closed because the target could not be dialled
	Active     int   // connections open now
}

// Proxy forwards every accepted connection to one target, subject to rules
// on the client's source IP. Its methods are safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection's goroutines

	mu       sync.Mutex
	closed   bool
	blockAll bool
	blocked  map[netip.Addr]bool
	delay    time.Duration
	links    map[*link]struct{}
	stats    Stats
}

// New listens on listen (e.g. "127.0.0.1:0") and forwards each accepted
// connection to target, copying both ways until either side closes.
func New(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("netproxy: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		ln:      ln,
		target:  target,
		ctx:     ctx,
		cancel:  cancel,
		blocked: make(map[netip.Addr]bool),
		links:   make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// Close stops listening, resets every open connection and waits until all
// of the proxy's goroutines have returned. It may be called more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := p.takeLinksLocked(func(*link) bool { return true })
	p.mu.Unlock()

	p.cancel()
	err := p.ln.Close()
	for _, l := range links {
		l.reset()
	}
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Block refuses new connections from srcIP and resets the open ones from it.
// srcIP must be an IP address such as "127.0.0.2"; anything else panics.
func (p *Proxy) Block(srcIP string) {
	ip := mustParseIP(srcIP)
	p.mu.Lock()
	p.blocked[ip] = true
	links := p.takeLinksLocked(func(l *link) bool { return l.src == ip })
	p.stats.Cut += int64(len(links))
	p.mu.Unlock()
	for _, l := range links {
		l.reset()
	}
}

// Unblock removes the rule Block(srcIP) added. It does not undo BlockAll.
func (p *Proxy) Unblock(srcIP string) {
	ip := mustParseIP(srcIP)
	p.mu.Lock()
	delete(p.blocked, ip)
	p.mu.Unlock()
}

// BlockAll refuses every new connection and resets every open one,
// isolating the target from everyone who reaches it through this proxy.
func (p *Proxy) BlockAll() {
	p.mu.Lock()
	p.blockAll = true
	links := p.takeLinksLocked(func(*link) bool { return true })
	p.stats.Cut += int64(len(links))
	p.mu.Unlock()
	for _, l := range links {
		l.reset()
	}
}

// UnblockAll removes every rule: BlockAll and each Block.
func (p *Proxy) UnblockAll() {
	p.mu.Lock()
	p.blockAll = false
	clear(p.blocked)
	p.mu.Unlock()
}

// SetDelay adds d of latency to data forwarded in each direction from now
// on (a round trip through the proxy gains 2*d). Zero removes it. Data is
// delayed, not throttled: chunks in flight overlap.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = max(d, 0)
	p.mu.Unlock()
}

// Stats reports the counters and the number of open connections.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Active = len(p.links)
	return s
}

func (p *Proxy) getDelay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// takeLinksLocked removes the links matching match from p.links and
// returns them so that the caller can reset them without holding p.mu.
func (p *Proxy) takeLinksLocked(match func(*link) bool) []*link {
	var out []*link
	for l := range p.links {
		if match(l) {
			delete(p.links, l)
			out = append(out, l)
		}
	}
	return out
}

func (p *Proxy) blockedLocked(ip netip.Addr) bool {
	return p.blockAll || p.blocked[ip]
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// A temporary failure such as EMFILE: wait a little and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		src := sourceIP(c)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			resetConn(c)
			return
		}
		if p.blockedLocked(src) {
			p.stats.Refused++
			p.mu.Unlock()
			resetConn(c)
			continue
		}
		p.stats.Accepted++
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(c, src)
	}
}

// handle dials the target for client c and then forwards until the link
// ends. It runs on p.wg.
func (p *Proxy) handle(client net.Conn, src netip.Addr) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		p.mu.Lock()
		p.stats.DialErrors++
		p.mu.Unlock()
		resetConn(client)
		return
	}

	l := &link{src: src, client: client, server: server}
	l.ctx, l.cancel = context.WithCancel(p.ctx)
	// A rule may have been added while dialling: check again as the link
	// becomes visible to Block.
	p.mu.Lock()
	if p.closed || p.blockedLocked(src) {
		if !p.closed {
			p.stats.Cut++
		}
		p.mu.Unlock()
		l.reset()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()

	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); p.pipe(l, server, client) }()
	go func() { defer pipes.Done(); p.pipe(l, client, server) }()
	pipes.Wait()

	p.mu.Lock()
	_, open := p.links[l]
	delete(p.links, l)
	p.mu.Unlock()
	if open {
		l.close()
	}
}

// link is one proxied connection: client is the accepted side, server the
// dialled one.
type link struct {
	src            netip.Addr
	client, server net.Conn
	ctx            context.Context
	cancel         context.CancelFunc
	once           sync.Once
}

// reset aborts the link: both peers get a TCP reset (an error, not a clean
// EOF), and the goroutines forwarding it return.
func (l *link) reset() {
	l.once.Do(func() {
		l.cancel()
		resetConn(l.client)
		resetConn(l.server)
	})
}

// close ends a link whose both directions finished normally.
func (l *link) close() {
	l.once.Do(func() {
		l.cancel()
		l.client.Close() // #nosec G104 -- both directions finished; a close error of a test proxy's link leaves nothing to do
		l.server.Close() // #nosec G104 -- both directions finished; a close error of a test proxy's link leaves nothing to do
	})
}

type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst until src ends or the link is aborted. Reading and
// writing run in separate goroutines joined by a queue, so that a delay is
// added to each chunk without slowing the stream down. A clean EOF from src
// is passed on as a half-close of dst; any error aborts the whole link.
func (p *Proxy) pipe(l *link, dst, src net.Conn) {
	queue := make(chan chunk, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case c, ok := <-queue:
				if !ok {
					// src reached EOF and everything was written.
					if cw, ok := dst.(interface{ CloseWrite() error }); ok {
						if cw.CloseWrite() != nil {
							l.reset()
						}
					}
					return
				}
				if wait := time.Until(c.due); wait > 0 {
					t := time.NewTimer(wait)
					select {
					case <-t.C:
					case <-l.ctx.Done():
						t.Stop()
						return
					}
				}
				if _, err := dst.Write(c.data); err != nil {
					l.reset()
					return
				}
			case <-l.ctx.Done():
				return
			}
		}
	}()

	for {
		buf := make([]byte, chunkSize)
		n, err := src.Read(buf)
		if n > 0 {
			c := chunk{data: buf[:n]}
			if d := p.getDelay(); d > 0 {
				c.due = time.Now().Add(d)
			}
			select {
			case queue <- c:
			case <-l.ctx.Done():
				<-done
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				close(queue)
			} else {
				l.reset()
			}
			<-done
			return
		}
	}
}

// resetConn closes c so that the peer sees a reset (RST) rather than EOF.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func sourceIP(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func mustParseIP(s string) netip.Addr {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		panic(fmt.Sprintf("netproxy: %q is not an IP address", s))
	}
	return ip.Unmap()
}
