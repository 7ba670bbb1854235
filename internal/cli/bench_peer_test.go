package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net/http"
	"testing"
	"time"
)

// TestFixedPeerAnswersTheCapturedBytes: the Vault peer answers every
// request with the captured status, headers and body.
func TestFixedPeerAnswersTheCapturedBytes(t *testing.T) {
	answer := captured{status: http.StatusOK, header: http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}},
		body: []byte(`{"data":{"data":{"value":"x"}}}`)}
	p, err := startFixedPeer(answer, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 3 {
		got, err := p.client.do(ctx, benchRequest{method: "POST", path: "/v1/secret/data/k", body: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		if got.status != 200 || !bytes.Equal(got.body, answer.body) || got.header.Get("Cache-Control") != "no-store" {
			t.Fatalf("peer answered %d %v %q", got.status, got.header, got.body)
		}
	}
}

// TestKMIPEchoPeerAnswersEveryMessage: the KMIP peer reads whole TTLV
// messages and answers each with the captured bytes.
func TestKMIPEchoPeerAnswersEveryMessage(t *testing.T) {
	answer := ttlvMessage(40)
	addr, ca, stop, err := startKMIPEchoPeer(answer)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cert, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca, ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var buf []byte
	for _, n := range []int{16, 600, 0} {
		got, err := kmipRoundTrip(c, ttlvMessage(n), buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, answer) {
			t.Fatalf("answer %x, want %x", got, answer)
		}
		buf = got
	}
}

// ttlvMessage is a TTLV structure header with n bytes of value.
func ttlvMessage(n int) []byte {
	m := make([]byte, 8+n)
	copy(m, []byte{0x42, 0x00, 0x7b, 0x01})
	binary.BigEndian.PutUint32(m[4:8], uint32(n))
	for i := range n {
		m[8+i] = byte(i)
	}
	return m
}
