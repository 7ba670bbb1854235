package connlimit

import (
	"net"
	"testing"
	"time"
)

func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// accepted runs Accept in the background and hands over what it returns.
func accepted(l *Listener) <-chan net.Conn {
	ch := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(ch)
				return
			}
			ch <- c
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

// expectClosed: the server closed c (a read sees EOF or a reset).
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from a connection that should be closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a connection over the limit was kept open")
	}
}

func TestPerSourceLimitLeavesOthersIn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var rej Rejections
	l := Wrap(ln, Limits{PerSource: 3, Total: 10, Reserve: 2}, &rej, nil)
	defer l.Close()
	ch := accepted(l)
	addr := ln.Addr().String()
	for i := 0; i < 3; i++ { // held open until the test ends (dialFrom's cleanup)
		dialFrom(t, "127.0.0.2", addr)
		next(t, ch)
	}
	over := dialFrom(t, "127.0.0.2", addr)
	expectClosed(t, over)
	if rej.PerSource.Load() != 1 {
		t.Fatalf("per-source rejections %d, want 1", rej.PerSource.Load())
	}
	// Another source still gets in.
	dialFrom(t, "127.0.0.3", addr)
	srvSide := next(t, ch)
	if l.Open() != 4 {
		t.Fatalf("open %d, want 4", l.Open())
	}
	// A closed connection frees its source's slot.
	srvSide.Close()
	srvSide.Close() // a second close releases nothing more
	if l.Open() != 3 {
		t.Fatalf("open %d after a close, want 3", l.Open())
	}
}

func TestReserveIsForNewSources(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var rej Rejections
	l := Wrap(ln, Limits{PerSource: 100, Total: 6, Reserve: 2}, &rej, nil)
	defer l.Close()
	ch := accepted(l)
	addr := ln.Addr().String()
	// Sources that already hold connections fill up to Total-Reserve.
	for i := 0; i < 4; i++ {
		dialFrom(t, "127.0.0.2", addr)
		next(t, ch)
	}
	expectClosed(t, dialFrom(t, "127.0.0.2", addr))
	// New sources take the reserve.
	dialFrom(t, "127.0.0.4", addr)
	next(t, ch)
	dialFrom(t, "127.0.0.5", addr)
	next(t, ch)
	// Full.
	expectClosed(t, dialFrom(t, "127.0.0.6", addr))
	if rej.Total.Load() != 2 || rej.PerSource.Load() != 0 {
		t.Fatalf("rejections total %d per source %d, want 2 and 0", rej.Total.Load(), rej.PerSource.Load())
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1:5000":              "192.0.2.1",
		"[2001:db8:1:2:3::4]:5000":    "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::9]:6000": "2001:db8:1:2::/64",
		"[::ffff:192.0.2.9]:1":        "192.0.2.9",
	} {
		a, err := net.ResolveTCPAddr("tcp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := sourceKey(a); got != want {
			t.Errorf("sourceKey(%s) = %s, want %s", in, got, want)
		}
	}
}

// fakeListener hands out conns from one source; each records, when it is
// closed, how many refusals had been counted by then.
type fakeListener struct {
	net.Listener
	rej    *Rejections
	closed chan uint64
}

type fakeConn struct {
	net.Conn
	l *fakeListener
}

func (f *fakeListener) Accept() (net.Conn, error) {
	return fakeConn{l: f}, nil
}

func (c fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.ParseIP("127.0.0.9"), Port: 1} }
func (c fakeConn) Close() error {
	c.l.closed <- c.l.rej.PerSource.Load() + c.l.rej.Total.Load()
	return nil
}

// TestRefusalCountedBeforeTheClose: a client that sees its connection
// refused (closed) finds the refusal already counted, so a metric read
// after the refusal always shows it.
func TestRefusalCountedBeforeTheClose(t *testing.T) {
	var rej Rejections
	f := &fakeListener{rej: &rej, closed: make(chan uint64, 1)}
	l := Wrap(f, Limits{PerSource: 1, Total: 10, Reserve: 2}, &rej, nil)
	if _, err := l.Accept(); err != nil { // the source's one slot
		t.Fatal(err)
	}
	go l.Accept() // #nosec G104 -- the next connection is refused; this Accept then blocks on the test's channel
	select {
	case n := <-f.closed:
		if n != 1 {
			t.Fatalf("the refused connection was closed with %d refusals counted, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection over the limit was not closed")
	}
}
