package rest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// FuzzSecretPutBody sends the fuzz bytes as the JSON body of
// PUT /api/v1/wallets/default/secrets/{name} with the fuzz string as name. Every answer is a
// 200 naming the stored version, or a 4xx in the one error shape; never a 5xx.
func FuzzSecretPutBody(f *testing.F) {
	for _, s := range []struct{ name, body string }{
		{"a", `{"value":"c2VjcmV0"}`},
		{"db/tde", `{"value":"c2VjcmV0"}`},
		{"a", `{"value":"c2VjcmV0"} {}`},
		{"a", `{"value":"c2VjcmV0","extra":1}`},
		{"a", `{"value":"***"}`},
		{"a", `{"value":42}`},
		{"a", `{"value":""}`},
		{"a", `{"value":null}`},
		{"a", `null`},
		{"a", `{"value":`},
		{"a", ``},
		{"a b", `{"value":"eA=="}`},
		{"", `{"value":"eA=="}`},
		{"..", `{"value":"eA=="}`},
		{"a//b", `{"value":"eA=="}`},
		{strings.Repeat("n", 256), `{"value":"eA=="}`},
	} {
		f.Add(s.name, []byte(s.body))
	}
	h, tok := newService(f)

	f.Fuzz(func(t *testing.T, name string, body []byte) {
		req := httptest.NewRequest(http.MethodPut, "/api/v1/wallets/default/secrets/x", bytes.NewReader(body))
		// The name goes into the path as a client would send it: slashes as
		// segment separators, everything else escaped as needed.
		req.URL.Path = "/api/v1/wallets/default/secrets/" + name
		req.URL.RawPath = ""
		req.RequestURI = req.URL.RequestURI()
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		status, raw := rec.Code, rec.Body.Bytes()
		switch {
		case status == http.StatusOK:
			var sr service.Object
			if err := json.Unmarshal(raw, &sr); err != nil || sr.Name != name || sr.Latest == 0 {
				t.Fatalf("200 with body %q (%v)", raw, err)
			}
			if err := service.ValidName(name); err != nil {
				t.Fatalf("stored a secret under a name the service calls invalid: %v", err)
			}
		case status == http.StatusMovedPermanently || status == http.StatusTemporaryRedirect || status == http.StatusPermanentRedirect:
			// net/http's ServeMux redirects a path with empty, "." or ".."
			// segments to its cleaned form before any handler runs. Such a
			// name is invalid anyway.
			if service.ValidName(name) == nil {
				t.Fatalf("redirect (%s) for the valid name %q", rec.Header().Get("Location"), name)
			}
		case status >= 400 && status < 500:
			var eb ErrorBody
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
				t.Fatalf("%d without the error shape: %q (%v)", status, raw, err)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("%d with Content-Type %q", status, ct)
			}
		default:
			t.Fatalf("PUT %q with body %q: status %d: %s", name, body, status, raw)
		}
	})
}

// FuzzCreateObjectBody sends arbitrary bodies to POST /api/v1/objects: every
// answer is a 201 for a valid request or a 4xx in the error shape, never a 5xx.
func FuzzCreateObjectBody(f *testing.F) {
	for _, s := range []string{
		`{"wallet":"default","name":"k","type":"symmetric_key"}`,
		`{"wallet":"default","name":"k","type":"symmetric_key","length":128,"attributes":{"a":"b"}}`,
		`{"wallet":"default","name":"s","type":"secret_data","value":"eA=="}`,
		`{"wallet":"default","name":"p","type":"key_pair","algorithm":"EC","length":384}`,
		`{"wallet":"default","name":"k","type":"symmetric_key","value":"AAAAAAAAAAAAAAAAAAAAAA=="}`,
		`{"wallet":"nope","name":"k","type":"symmetric_key"}`,
		`{"wallet":"default","name":"k","type":"key_pair","algorithm":"RSA","length":-1}`,
		`{"wallet":"default","name":"k","type":"secret_data","pre_active":true,"value":"eA=="}`,
		`{"wallet":"default","name":"k","type":"symmetric_key","attributes":{"":""}}`,
		`[]`, `null`, `{`,
	} {
		f.Add([]byte(s))
	}
	h, tok := newService(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/objects", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch status := rec.Code; {
		case status == http.StatusCreated:
			var o service.Object
			if err := json.Unmarshal(rec.Body.Bytes(), &o); err != nil || o.ID == "" || o.Latest != 1 {
				t.Fatalf("201 with body %q (%v)", rec.Body.Bytes(), err)
			}
		case status >= 400 && status < 500:
			var eb ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
				t.Fatalf("%d without the error shape: %q", status, rec.Body.Bytes())
			}
		default:
			t.Fatalf("body %q: status %d: %s", body, status, rec.Body.Bytes())
		}
	})
}
