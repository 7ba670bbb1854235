package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// deadAddress returns an https address where nothing listens.
func deadAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func TestFailoverOnDialError(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if got := r.Header.Get("Authorization"); got != "Bearer cof_t" {
			t.Errorf("authorization %q", got)
		}
		writeJSON(w, 200, map[string]any{"kind": "root", "name": "root"})
	}))
	defer srv.Close()
	c, err := New(Config{Addresses: []string{deadAddress(t), srv.URL}, Token: "cof_t", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	who, err := c.WhoAmI(context.Background())
	if err != nil || who.Kind != "root" {
		t.Fatalf("whoami %+v, %v", who, err)
	}
	// A write whose connection was refused never reached a server: it fails over too.
	if err := c.Seal(context.Background()); err != nil {
		t.Fatalf("seal after a refused connection: %v", err)
	}
	if hits.Load() != 2 {
		t.Fatalf("second server saw %d requests, want 2", hits.Load())
	}
}

func TestNoFailoverOnAPIErrorOrSentWrite(t *testing.T) {
	var second atomic.Int32
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			// The write reached this server; the connection then dies.
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		writeJSON(w, 403, map[string]any{"error": map[string]string{"code": "forbidden", "message": "permission denied: nope"}})
	}))
	defer first.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		second.Add(1)
		writeJSON(w, 200, map[string]any{})
	}))
	defer other.Close()
	c, err := New(Config{Addresses: []string{first.URL, other.URL}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetWallet(context.Background(), "default")
	if !IsCode(err, "forbidden") {
		t.Fatalf("want forbidden, got %v", err)
	}
	if _, err := c.PutSecret(context.Background(), "default", "a/b", []byte("x")); err == nil {
		t.Fatal("write on a dropped connection succeeded")
	}
	if second.Load() != 0 {
		t.Fatalf("failed over %d times; API errors and sent writes must not be retried elsewhere", second.Load())
	}
}

func TestErrorDecoding(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/objects/x/material":
			writeJSON(w, 410, map[string]any{"error": map[string]string{"code": "destroyed", "message": "material destroyed: object x version 1 was destroyed"}})
		case "/api/v1/wallets/w":
			w.WriteHeader(204) // empty body with a non-nil out
		default:
			w.WriteHeader(502)
			io.WriteString(w, "bad gateway\n")
		}
	}))
	defer srv.Close()
	c, _ := New(Config{Addresses: []string{srv.URL}})
	ctx := context.Background()
	_, err := c.GetObject(ctx, "x", 0)
	var e *Error
	if !asError(err, &e) || e.Status != 410 || e.Code != "destroyed" || !strings.Contains(e.Error(), "was destroyed (410 destroyed)") {
		t.Fatalf("got %#v", err)
	}
	if err := c.DeleteWallet(ctx, "w"); err != nil {
		t.Fatalf("204: %v", err)
	}
	_, err = c.Status(ctx)
	if !asError(err, &e) || e.Status != 502 || e.Code != "http_error" || e.Message != "bad gateway" {
		t.Fatalf("non-JSON error: %#v", err)
	}
}

func asError(err error, e **Error) bool {
	v, ok := err.(*Error)
	*e = v
	return ok
}

func TestRequestShapes(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		seen = append(seen, r.Method+" "+r.URL.EscapedPath()+" "+r.URL.RawQuery+" "+strings.TrimSpace(string(body)))
		switch {
		case r.Method == "PUT":
			writeJSON(w, 200, map[string]any{"id": "id1", "latest_version": 3})
		case r.URL.Path == "/api/v1/wallets/default/objects/db1/tde":
			writeJSON(w, 200, map[string]any{
				"object":   map[string]any{"id": "id1", "wallet": "default", "name": "db1/tde", "latest_version": 3, "versions": []map[string]any{{"version": 2, "created": "2024-01-02T03:04:05Z"}}},
				"material": map[string]any{"version": 2, "value": "aGVsbG8="}})
		case r.URL.Path == "/api/v1/objects":
			tok := r.URL.Query().Get("page_token")
			next := map[string]string{"": "p2", "p2": "p3", "p3": ""}[tok]
			writeJSON(w, 200, map[string]any{"items": []map[string]any{{"id": "o-" + tok}}, "next_page_token": next})
		case r.URL.Path == "/api/v1/audit/verify":
			io.WriteString(w, `{"files":1,"records":7,"first_seq":1,"last_seq":7,"last_hash":"ab","head_seq":7}`)
		default:
			writeJSON(w, 200, map[string]any{})
		}
	}))
	defer srv.Close()
	c, _ := New(Config{Addresses: []string{srv.URL}})
	ctx := context.Background()
	o, err := c.PutSecret(ctx, "default", "db1/tde", []byte("hello"))
	if err != nil || o.Latest != 3 {
		t.Fatalf("put: %+v %v", o, err)
	}
	s, err := c.GetSecret(ctx, "default", "db1/tde", 2)
	if err != nil || string(s.Value) != "hello" || s.Version != 2 || s.Latest != 3 || s.Created.Year() != 2024 {
		t.Fatalf("get: %+v %v", s, err)
	}
	var ids []string
	for o, err := range c.Objects(ctx, Query{Wallet: "w", Name: "db*", Attributes: map[string]string{"env": "prod"}, Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
	}
	if strings.Join(ids, ",") != "o-,o-p2,o-p3" {
		t.Fatalf("iterator returned %v", ids)
	}
	rep, err := c.VerifyAudit(ctx)
	if err != nil || rep.Records != 7 || rep.LastSeq != 7 || rep.LastHash != "ab" || rep.HeadSeq != 7 {
		t.Fatalf("report %+v %v", rep, err)
	}
	c.SetAttributes(ctx, "id1", map[string]string{"k": "v"}, []string{"old"})
	c.Grant(ctx, "w", "db1", PermRead)
	want := []string{
		`PUT /api/v1/wallets/default/secrets/db1/tde  {"value":"aGVsbG8="}`,
		`GET /api/v1/wallets/default/objects/db1/tde version=2 `,
		`GET /api/v1/objects attr=env%3Dprod&limit=1&name=db%2A&wallet=w `,
		`GET /api/v1/objects attr=env%3Dprod&limit=1&name=db%2A&page_token=p2&wallet=w `,
		`GET /api/v1/objects attr=env%3Dprod&limit=1&name=db%2A&page_token=p3&wallet=w `,
		`POST /api/v1/audit/verify  `,
		`PATCH /api/v1/objects/id1/attributes  {"set":{"k":"v"},"delete":["old"]}`,
		`PUT /api/v1/wallets/w/grants/db1  {"permission":"read"}`,
	}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// testPKI makes a CA and a client certificate signed by it, as PEM files in dir.
func testPKI(t *testing.T, dir string) (caPool *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "db1"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("client.crt", "CERTIFICATE", der)
	write("client.key", "PRIVATE KEY", keyDER)
	write("ca.crt", "CERTIFICATE", caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	pool := testPKI(t, dir)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"kind": "endpoint", "name": r.TLS.PeerCertificates[0].Subject.CommonName})
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake below
	srv.StartTLS()
	defer srv.Close()
	caFile := filepath.Join(dir, "ca.crt")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)

	c, err := New(Config{Addresses: []string{srv.URL}, CACert: caFile, ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key")})
	if err != nil {
		t.Fatal(err)
	}
	who, err := c.WhoAmI(context.Background())
	if err != nil || who.Name != "db1" {
		t.Fatalf("whoami over mTLS: %+v %v", who, err)
	}
	noCert, _ := New(Config{Addresses: []string{srv.URL}, CACert: caFile, Timeout: 5 * time.Second})
	if _, err := noCert.WhoAmI(context.Background()); err == nil {
		t.Fatal("a client without a certificate got through")
	}
	if _, err := New(Config{Addresses: []string{srv.URL}, ClientCert: filepath.Join(dir, "client.crt")}); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("cert without key: %v", err)
	}
	if _, err := New(Config{Addresses: []string{srv.URL}, ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "nope.key")}); err == nil || !strings.Contains(err.Error(), "nope.key") {
		t.Fatalf("missing key file: %v", err)
	}
}

func TestFromEnvClientCert(t *testing.T) {
	t.Setenv(EnvAddr, "https://a:1, https://b:2")
	t.Setenv(EnvClientCert, "/c.crt")
	t.Setenv(EnvClientKey, "/c.key")
	cfg := FromEnv()
	if len(cfg.Addresses) != 2 || cfg.Addresses[1] != "https://b:2" || cfg.ClientCert != "/c.crt" || cfg.ClientKey != "/c.key" {
		t.Fatalf("%+v", cfg)
	}
}

func TestLoadEnrollment(t *testing.T) {
	dir := t.TempDir()
	testPKI(t, dir)
	os.WriteFile(filepath.Join(dir, "token"), []byte("cof_abc\n"), 0o600)
	writeCfg := func(s string) {
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg(`{"endpoint":"db1","addresses":["https://kms1:8200","https://kms2:8200"],"token_file":"token","ca_cert":"ca.crt","client_cert":"client.crt","client_key":"` + filepath.Join(dir, "client.key") + `"}`)
	cfg, err := LoadEnrollment(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Token != "cof_abc" || len(cfg.Addresses) != 2 || cfg.CACert != filepath.Join(dir, "ca.crt") ||
		cfg.ClientCert != filepath.Join(dir, "client.crt") || cfg.ClientKey != filepath.Join(dir, "client.key") {
		t.Fatalf("%+v", cfg)
	}
	if _, err := New(cfg); err != nil {
		t.Fatalf("New from enrollment: %v", err)
	}

	for _, tc := range []struct{ cfg, want string }{
		{`{"endpoint":"db1","addresses":["https://k"],"token_file":"missing-token"}`, "missing-token"},
		{`{"endpoint":"db1","addresses":["https://k"],"token_file":"token","client_cert":"client.crt"}`, "both client_cert and client_key"},
		{`{"endpoint":"db1","addresses":[],"token_file":"token"}`, "no addresses"},
		{`{"endpoint":"db1","addresses":["https://k"]}`, "no credentials"},
		{`{"endpoint":"db1","addresses":["https://k"],"token_file":"token","ca_cert":"other-ca.crt"}`, "ca_cert"},
		{`{"endpoint":"db1",`, "config.json"},
		{`{"endpoint":"db1","adresses":["https://k"]}`, `unknown field "adresses"`},
	} {
		writeCfg(tc.cfg)
		if _, err := LoadEnrollment(dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one naming %q", tc.cfg, err, tc.want)
		}
	}
	os.WriteFile(filepath.Join(dir, "token"), []byte("\n"), 0o600)
	writeCfg(`{"endpoint":"db1","addresses":["https://k"],"token_file":"token"}`)
	if _, err := LoadEnrollment(dir); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty token: %v", err)
	}
	if _, err := LoadEnrollment(filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "nope", "config.json")) {
		t.Errorf("missing dir: %v", err)
	}
}
