package netproxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/testutil"
)

// prompt is how soon both ends of a cut connection must notice. The goal is
// ~100 ms; the bound leaves room for a loaded 2-core machine under -race.
const prompt = 300 * time.Millisecond

// echoServer is a real TCP echo server on 127.0.0.1. Each connection's
// handler reports on ended when its io.Copy returns.
type echoServer struct {
	ln    net.Listener
	ended chan error
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{ln: ln, ended: make(chan error, 100)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				_, err := io.Copy(c, c)
				c.Close()
				select {
				case s.ended <- err:
				default:
				}
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

func (s *echoServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// waitEnded waits for one echo handler to end, within prompt.
func (s *echoServer) waitEnded(t *testing.T) {
	t.Helper()
	select {
	case <-s.ended:
	case <-time.After(prompt):
		t.Fatalf("the server side of a cut connection did not notice within %v", prompt)
	}
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New("127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// dialFrom connects to addr from the loopback address src ("" for the
// kernel's choice, 127.0.0.1).
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	var d net.Dialer
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back.
func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return errors.New("echo mismatch: " + string(got))
	}
	return nil
}

func mustRoundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := roundTrip(c, msg); err != nil {
		t.Fatalf("round trip from %v: %v", c.LocalAddr(), err)
	}
}

// expectCut checks that c's next read fails (error or EOF) within prompt.
func expectCut(t *testing.T, c net.Conn) {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	elapsed := time.Since(start)
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("read from %v got %d bytes, want the connection cut", c.LocalAddr(), n)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("read from %v hung: %v", c.LocalAddr(), err)
	case elapsed > prompt:
		t.Fatalf("read from %v failed after %v, want within %v", c.LocalAddr(), elapsed, prompt)
	}
	t.Logf("%v cut after %v: %v", c.LocalAddr(), elapsed.Round(time.Microsecond), err)
}

// expectRefused checks that a new connection from src to addr is refused:
// the dial fails, or the connection it returns is cut at once.
func expectRefused(t *testing.T, src, addr string) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("dial from %s hung: %v", src, err)
		}
		return
	}
	defer c.Close()
	expectCut(t, c)
}

func TestLoopbackSourceAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		got <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
	dialFrom(t, "127.0.0.2", ln.Addr().String())
	if ip := <-got; ip != "127.0.0.2" {
		t.Fatalf("server saw the client as %s, want 127.0.0.2: 127.0.0.0/8 is not all on lo here", ip)
	}
}

func TestForward(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.addr())
	if p.Target() != echo.addr() {
		t.Fatalf("Target() = %q", p.Target())
	}
	for _, src := range []string{"", "127.0.0.2", "127.0.0.3"} {
		c := dialFrom(t, src, p.Addr())
		mustRoundTrip(t, c, "hello from "+src)
	}

	// A large transfer arrives intact, and a half-close is passed on: the
	// echo server sees EOF, finishes, and the client then reads EOF.
	c := dialFrom(t, "127.0.0.4", p.Addr())
	data := make([]byte, 4<<20)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes back, want the %d sent", len(got), len(data))
	}

	st := p.Stats()
	if st.Accepted != 4 || st.Refused != 0 || st.Cut != 0 {
		t.Fatalf("Stats() = %+v", st)
	}
}

func TestBlockRefusesNewConnections(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.addr())
	p.Block("127.0.0.2")

	expectRefused(t, "127.0.0.2", p.Addr())
	mustRoundTrip(t, dialFrom(t, "127.0.0.3", p.Addr()), "other sources pass")
	mustRoundTrip(t, dialFrom(t, "", p.Addr()), "other sources pass")

	p.Unblock("127.0.0.2")
	mustRoundTrip(t, dialFrom(t, "127.0.0.2", p.Addr()), "unblocked")

	st := p.Stats()
	if st.Accepted != 3 || st.Refused != 1 {
		t.Fatalf("Stats() = %+v, want 3 accepted and 1 refused", st)
	}
}

func TestBlockCutsOpenConnections(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.addr())
	c2 := dialFrom(t, "127.0.0.2", p.Addr())
	c3 := dialFrom(t, "127.0.0.3", p.Addr())
	mustRoundTrip(t, c2, "before")
	mustRoundTrip(t, c3, "before")

	p.Block("127.0.0.2")
	expectCut(t, c2)
	echo.waitEnded(t)
	mustRoundTrip(t, c3, "127.0.0.3 is not affected")

	// A client that keeps writing into a cut connection gets an error too.
	if _, err := c2.Write([]byte("x")); err == nil {
		if _, err = c2.Write([]byte("x")); err == nil {
			t.Fatal("writes into a cut connection kept succeeding")
		}
	}

	st := p.Stats()
	if st.Cut != 1 || st.Active != 1 {
		t.Fatalf("Stats() = %+v, want 1 cut and 1 active", st)
	}
}

func TestBlockMidStream(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.addr())
	c := dialFrom(t, "127.0.0.2", p.Addr())

	// Stream both ways without pause, then block in the middle.
	writeErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 8<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				writeErr <- err
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 256<<10)); err != nil {
		t.Fatal(err)
	}

	p.Block("127.0.0.2")
	start := time.Now()
	go io.Copy(io.Discard, c)
	select {
	case err := <-writeErr:
		t.Logf("writer stopped after %v: %v", time.Since(start), err)
	case <-time.After(prompt):
		t.Fatalf("writer still writing %v after Block", prompt)
	}
	echo.waitEnded(t)
}

func TestBlockAllIsolates(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.addr())
	srcs := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	var conns []net.Conn
	for _, src := range srcs {
		c := dialFrom(t, src, p.Addr())
		mustRoundTrip(t, c, "before")
		conns = append(conns, c)
	}

	p.BlockAll()
	for _, c := range conns {
		expectCut(t, c)
	}
	for range srcs {
		echo.waitEnded(t)
	}
	for _, src := range append(srcs, "") {
		expectRefused(t, src, p.Addr())
	}
	// Unblock of one source does not undo BlockAll.
	p.Unblock("127.0.0.2")
	expectRefused(t, "127.0.0.2", p.Addr())

	p.Block("127.0.0.3")
	p.UnblockAll() // heals both kinds of rule
	for _, src := range srcs {
		mustRoundTrip(t, dialFrom(t, src, p.Addr()), "healed")
	}

	st := p.Stats()
	if st.Cut != 3 || st.Refused != 5 || st.Active != 3 {
		t.Fatalf("Stats() = %+v, want 3 cut, 5 refused, 3 active", st)
	}
}

func TestDelay(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.addr())
	c := dialFrom(t, "127.0.0.2", p.Addr())

	const d = 50 * time.Millisecond
	p.SetDelay(d)
	start := time.Now()
	mustRoundTrip(t, c, "slow")
	if rtt := time.Since(start); rtt < 2*d {
		t.Fatalf("round trip took %v with a delay of %v each way", rtt, d)
	}

	// Delay is latency, not throughput: ten pipelined messages take about
	// one round trip, not ten.
	start = time.Now()
	for range 10 {
		if _, err := io.WriteString(c, "0123456789"); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt > 8*d {
		t.Fatalf("ten pipelined writes took %v; delays are being added up", rtt)
	}

	p.SetDelay(0)
	start = time.Now()
	mustRoundTrip(t, c, "fast")
	if rtt := time.Since(start); rtt >= 2*d {
		t.Logf("round trip without delay took %v", rtt)
	}

	// A delayed connection is still cut promptly.
	p.SetDelay(time.Hour)
	if _, err := io.WriteString(c, "stuck"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // the bytes reach the delay; the proxy does not expose them
	p.Block("127.0.0.2")
	expectCut(t, c)
	echo.waitEnded(t)
}

func TestDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()

	p := newProxy(t, dead)
	expectRefused(t, "127.0.0.2", p.Addr())
	if st := p.Stats(); st.DialErrors != 1 || st.Active != 0 {
		t.Fatalf("Stats() = %+v, want 1 dial error", st)
	}
}

func TestClose(t *testing.T) {
	echo := startEcho(t)
	p, err := New("127.0.0.1:0", echo.addr())
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for _, src := range []string{"127.0.0.2", "127.0.0.3"} {
		c := dialFrom(t, src, p.Addr())
		mustRoundTrip(t, c, "before")
		conns = append(conns, c)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		expectCut(t, c)
	}
	echo.waitEnded(t)
	echo.waitEnded(t)
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("the proxy still accepts connections after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Rules and stats still work on a closed proxy.
	p.Block("127.0.0.2")
	p.UnblockAll()
	if st := p.Stats(); st.Active != 0 {
		t.Fatalf("Stats() after Close = %+v", st)
	}
}

func TestConcurrentUse(t *testing.T) {
	echo := startEcho(t)
	p := newProxy(t, echo.addr())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range 4 {
		src := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
				c, err := d.Dial("tcp", p.Addr())
				if err != nil {
					continue
				}
				roundTrip(c, "x") // fails while blocked; that is fine
				c.Close()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 5 {
			case 0:
				p.Block("127.0.0.2")
			case 1:
				p.BlockAll()
			case 2:
				p.SetDelay(time.Millisecond)
			case 3:
				p.Unblock("127.0.0.2")
			case 4:
				p.UnblockAll()
				p.SetDelay(0)
			}
			p.Stats()
			time.Sleep(time.Millisecond) // the pace of the storm
		}
	}()
	time.Sleep(500 * time.Millisecond) // the length of the storm of rule changes
	close(stop)
	wg.Wait()
	p.UnblockAll()
	mustRoundTrip(t, dialFrom(t, "127.0.0.2", p.Addr()), "after the storm")
	st := p.Stats()
	t.Logf("Stats() = %+v", st)
	if st.Accepted == 0 || st.Refused+st.Cut == 0 {
		t.Fatalf("the storm exercised nothing: %+v", st)
	}
}

// TestNoGoroutineLeak opens connections, cuts some mid-stream, lets others
// finish, and checks that the goroutine count settles back after Close.
func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		echo := startEcho(t)
		defer echo.close()
		p, err := New("127.0.0.1:0", echo.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		p.SetDelay(time.Millisecond)

		var wg sync.WaitGroup
		for i := range 20 {
			src := []string{"127.0.0.2", "127.0.0.3"}[i%2]
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			c, err := d.Dial("tcp", p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 1024)
				for {
					if err := roundTrip(c, string(buf)); err != nil {
						return
					}
					if i%4 == 3 { // some end by themselves
						c.(*net.TCPConn).CloseWrite()
						io.Copy(io.Discard, c)
						return
					}
				}
			}()
		}
		time.Sleep(50 * time.Millisecond) // streams under way
		p.Block("127.0.0.2")              // mid-stream
		time.Sleep(50 * time.Millisecond) // blocked for a while
		p.Unblock("127.0.0.2")
		for range 5 {
			c, err := net.Dial("tcp", p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(c, "x")
			c.Close()
		}
		p.Close() // cuts the 127.0.0.3 streams
		wg.Wait()
	}()

	if err := testutil.Poll(5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return fmt.Errorf("%d goroutines before, %d after", before, n)
		}
		return nil
	}); err != nil {
		buf := make([]byte, 1<<20)
		t.Fatalf("%v:\n%s", err, buf[:runtime.Stack(buf, true)])
	}
}
