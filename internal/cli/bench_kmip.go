package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipclient"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// kmipMaxMessage bounds a KMIP message the bench reads.
const kmipMaxMessage = 1 << 20

// readTTLV reads one TTLV message (8-byte tag, type and length, then the
// value) from r into buf and returns it.
func readTTLV(r io.Reader, buf []byte) ([]byte, error) {
	if cap(buf) < 8 {
		buf = make([]byte, 8, 512)
	}
	buf = buf[:8]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(buf[4:8]))
	if n > kmipMaxMessage {
		return nil, fmt.Errorf("KMIP message of %d bytes", n)
	}
	if cap(buf) < 8+n {
		buf = append(buf, make([]byte, n)...)
	} else {
		buf = buf[:8+n]
	}
	if _, err := io.ReadFull(r, buf[8:]); err != nil {
		return nil, err
	}
	return buf, nil
}

// runKMIPBench creates an AES-256 key through KMIP with the enrolled
// endpoint's certificate, then measures Get of it with one connection per
// worker, each sending the same encoded request and reading the answer.
// With --peer-fixed a bare TLS server answers every request with the bytes
// Coffer answered, over the same client.
func runKMIPBench(g *globals, cfg client.Config, o *benchOptions) (benchResult, *benchResult, error) {
	if cfg.ClientCert == "" || cfg.ClientKey == "" {
		return benchResult{}, nil, errors.New("kmip-get needs an enrolled endpoint's client certificate (COFFER_CLIENT_CERT and COFFER_CLIENT_KEY, or --client-dir)")
	}
	addr := o.kmipAddr
	if addr == "" {
		u, err := url.Parse(cfg.Addresses[0])
		if err != nil || u.Hostname() == "" {
			return benchResult{}, nil, errors.New("kmip-get: give --kmip-address host:port")
		}
		addr = net.JoinHostPort(u.Hostname(), "5696")
	}
	cert, err := tls.LoadX509KeyPair(cfg.ClientCert, cfg.ClientKey)
	if err != nil {
		return benchResult{}, nil, fmt.Errorf("client certificate %s: %w", cfg.ClientCert, err)
	}
	host, _, _ := net.SplitHostPort(addr)
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, ServerName: host}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return benchResult{}, nil, fmt.Errorf("read CA certificate: %w", err)
		}
		tlsConf.RootCAs = x509.NewCertPool()
		if !tlsConf.RootCAs.AppendCertsFromPEM(pem) {
			return benchResult{}, nil, fmt.Errorf("CA certificate %s: no PEM certificate found", cfg.CACert)
		}
	}
	ctx, cancel := g.ctx()
	defer cancel()
	kc, err := kmipclient.DialContext(ctx, addr, kmipclient.WithTlsConfig(tlsConf.Clone()),
		kmipclient.WithKmipVersions(kmip.V1_4), kmipclient.EnforceVersion(kmip.V1_4))
	if err != nil {
		return benchResult{}, nil, fmt.Errorf("KMIP dial %s: %w", addr, err)
	}
	resp, err := kc.Request(ctx, &payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey,
		TemplateAttribute: kmip.TemplateAttribute{Attribute: []kmip.Attribute{
			{AttributeName: kmip.AttributeNameCryptographicAlgorithm, AttributeValue: kmip.CryptographicAlgorithmAES},
			{AttributeName: kmip.AttributeNameCryptographicLength, AttributeValue: int32(256)},
			{AttributeName: kmip.AttributeNameCryptographicUsageMask, AttributeValue: kmip.CryptographicUsageEncrypt | kmip.CryptographicUsageDecrypt},
		}}})
	kc.Close() // #nosec G104 -- the client only created the key; the create's own error is checked next
	if err != nil {
		return benchResult{}, nil, fmt.Errorf("KMIP create of the key to get: %w", err)
	}
	id := resp.(*payloads.CreateResponsePayload).UniqueIdentifier
	msg := kmip.NewRequestMessage(kmip.V1_4, &payloads.GetRequestPayload{UniqueIdentifier: id})
	request := ttlv.MarshalTTLV(&msg)

	dial := func(addr string, conf *tls.Config) (net.Conn, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		return tls.DialWithDialer(d, "tcp", addr, conf)
	}
	// The answer every Get must match in length (a failure differs).
	c, err := dial(addr, tlsConf)
	if err != nil {
		return benchResult{}, nil, fmt.Errorf("KMIP dial %s: %w", addr, err)
	}
	answer, err := kmipRoundTrip(c, request, nil)
	c.Close() // #nosec G104 -- the connection only carried one read-only Get; its answer is already read
	if err != nil {
		return benchResult{}, nil, err
	}
	var rm kmip.ResponseMessage
	if err := ttlv.UnmarshalTTLV(answer, &rm); err != nil {
		return benchResult{}, nil, fmt.Errorf("decode the KMIP Get answer: %w", err)
	}
	if len(rm.BatchItem) != 1 || rm.BatchItem[0].ResultStatus != kmip.ResultStatusSuccess {
		return benchResult{}, nil, fmt.Errorf("KMIP Get of the created key failed: %s", ttlv.MarshalText(&rm, true))
	}
	load := func(addr string, conf *tls.Config) (benchResult, error) {
		conns := make([]net.Conn, o.workers)
		for i := range conns {
			if conns[i], err = dial(addr, conf); err != nil {
				return benchResult{}, fmt.Errorf("KMIP dial %s: %w", addr, err)
			}
			defer conns[i].Close()
		}
		bufs := make([][]byte, o.workers)
		return runLoad(o.workers, o.duration, func(_ context.Context, w, _ int) error {
			got, err := kmipRoundTrip(conns[w], request, bufs[w])
			bufs[w] = got
			if err == nil && len(got) != len(answer) {
				err = fmt.Errorf("KMIP answer of %d bytes, not %d", len(got), len(answer))
			}
			return err
		}), nil
	}
	res, err := load(addr, tlsConf)
	if err != nil || !o.peerFixed {
		return res, nil, err
	}
	peerAddr, peerCA, stop, err := startKMIPEchoPeer(answer)
	if err != nil {
		return res, nil, err
	}
	defer stop()
	pconf := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}, RootCAs: peerCA, ServerName: "127.0.0.1"}
	pr, err := load(peerAddr, pconf)
	return res, &pr, err
}

// kmipRoundTrip writes one request and reads one answer.
func kmipRoundTrip(c net.Conn, request, buf []byte) ([]byte, error) {
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := c.Write(request); err != nil {
		return nil, fmt.Errorf("KMIP write: %w", err)
	}
	got, err := readTTLV(c, buf)
	if err != nil {
		return nil, fmt.Errorf("KMIP read: %w", err)
	}
	return got, nil
}

// startKMIPEchoPeer is a bare TLS server (client certificate required, as
// on Coffer's KMIP listener) answering every TTLV message with answer.
func startKMIPEchoPeer(answer []byte) (addr string, ca *x509.CertPool, stop func(), err error) {
	tc, err := selfSigned()
	if err != nil {
		return "", nil, nil, err
	}
	cert := tc.Leaf
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: tlsutil.AEADSuites(),
		ClientAuth: tls.RequireAnyClientCert, Certificates: []tls.Certificate{tc}})
	if err != nil {
		return "", nil, nil, fmt.Errorf("peer listener: %w", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 0, 512)
				for {
					if _, err := readTTLV(c, buf); err != nil {
						return
					}
					if _, err := c.Write(answer); err != nil {
						return
					}
				}
			}()
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return ln.Addr().String(), pool, func() {
		ln.Close() // #nosec G104 -- closing the peer's listener after the measurement: nothing to lose
		mu.Lock()
		for _, c := range conns {
			c.Close() // #nosec G104 -- closing the peer's connections after the measurement: nothing to lose
		}
		mu.Unlock()
		wg.Wait()
	}, nil
}
