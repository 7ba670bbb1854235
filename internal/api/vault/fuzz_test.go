package vault

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// serve runs one request through the handler in process (no network).
func serve(h http.Handler, tok, method, path string, body []byte) (int, map[string]any) {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("X-Vault-Token", tok)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, out
}

// FuzzKVWriteBody sends arbitrary bodies to KV v2 write. A body is either
// accepted (200, a new version whose data reads back equal to the body's
// "data" object) or refused with 400 and Vault's {"errors":[msg]}, changing
// nothing. Never a 500, never a panic.
func FuzzKVWriteBody(f *testing.F) {
	for _, s := range []string{
		`{"data":{"data":"` + strings.Repeat("ab", 32) + `"}}`,
		`{"data":{"user":"u","password":"p"},"options":{"cas":1}}`,
		`{"data":{"a":1},"options":{"cas":"0"}}`,
		`{"data":{}}`, `{"data":"x"}`, `{"data":null}`, `{}`, ``, `[`, `{"data":{"a":"b"}} {}`,
		`{"data":{"a":"b"},"options":{"cas":-1}}`, `{"data":{"a":"\u0000"},"extra":true}`, `{"options":[],"data":{}}`,
	} {
		f.Add([]byte(s))
	}
	fx := newFixture(f)
	h := Handler(fx.svc, Options{})
	root := fx.tokens["root"]
	if st, _ := serve(h, root, "POST", "/v1/kv/data/f", []byte(`{"data":{"seed":"1"}}`)); st != 200 {
		f.Fatalf("seed write: %d", st)
	}
	current := func(t *testing.T) float64 {
		st, md := serve(h, root, "GET", "/v1/kv/metadata/f", nil)
		if st != 200 {
			t.Fatalf("metadata: %d %v", st, md)
		}
		return md["data"].(map[string]any)["current_version"].(float64)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before := current(t)
		st, out := serve(h, root, "POST", "/v1/kv/data/f", body)
		switch st {
		case 200:
			v := out["data"].(map[string]any)["version"].(float64)
			if v != before+1 {
				t.Fatalf("accepted %q as version %v after %v", body, v, before)
			}
			var in struct{ Data json.RawMessage }
			if err := json.Unmarshal(body, &in); err != nil {
				t.Fatalf("accepted a body that is not JSON: %q", body)
			}
			var want, got any
			json.Unmarshal(in.Data, &want)
			st, rd := serve(h, root, "GET", "/v1/kv/data/f", nil)
			if st != 200 {
				t.Fatalf("read back: %d", st)
			}
			got = rd["data"].(map[string]any)["data"]
			wb, _ := json.Marshal(want)
			gb, _ := json.Marshal(got)
			if !bytes.Equal(wb, gb) {
				t.Fatalf("wrote %s, read %s", wb, gb)
			}
		case 400:
			errs, ok := out["errors"].([]any)
			if !ok || len(errs) != 1 || errs[0] == "" {
				t.Fatalf("400 without one error message: %v", out)
			}
			if after := current(t); after != before {
				t.Fatalf("refused body %q changed the version %v -> %v", body, before, after)
			}
		default:
			t.Fatalf("body %q: status %d %v", body, st, out)
		}
	})
}

// FuzzTransitBody sends arbitrary bodies to encrypt, decrypt, rewrap and
// datakey. Every answer is 200 or 400 (or the partial_failure_response_code
// asked for), never a 500 or a panic; every ciphertext handed out decrypts
// back to the plaintext it was made from.
func FuzzTransitBody(f *testing.F) {
	pt := base64.StdEncoding.EncodeToString([]byte("hello"))
	for _, s := range []struct {
		op   uint8
		body string
	}{
		{0, `{"plaintext":"` + pt + `"}`},
		{0, `{"plaintext":"` + pt + `","associated_data":"YWFk"}`},
		{0, `{"batch_input":[{"plaintext":"` + pt + `","reference":"a"},{"plaintext":"!!"}]}`},
		{0, `{"batch_input":[],"plaintext":"x"}`},
		{0, `{"plaintext":"` + pt + `","key_version":"9"}`},
		{0, `{"plaintext":"` + pt + `","context":"Y3R4"}`},
		{0, `{"partial_failure_response_code":207,"batch_input":[{"plaintext":"` + pt + `"},{"plaintext":"%"}]}`},
		{1, `{"ciphertext":"vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`},
		{1, `{"ciphertext":"vault:v0:"}`},
		{1, `{"batch_input":[{"ciphertext":"vault:v1:@@"},{"ciphertext":7}]}`},
		{2, `{"ciphertext":"vault:v1:AAAA","key_version":1}`},
		{3, `{"bits":512}`},
		{3, `{"bits":"128"}`},
		{3, `{"bits":-1}`},
		{0, `null`}, {1, `[]`}, {2, `{`}, {3, ``},
	} {
		f.Add(s.op, []byte(s.body))
	}
	fx := newFixture(f)
	h := Handler(fx.svc, Options{})
	root := fx.tokens["root"]
	if st, _ := serve(h, root, "POST", "/v1/transit/keys/fz", []byte(`{}`)); st != 200 {
		f.Fatalf("create key: %d", st)
	}
	paths := []string{"/v1/transit/encrypt/fz", "/v1/transit/decrypt/fz", "/v1/transit/rewrap/fz", "/v1/transit/datakey/plaintext/fz"}
	f.Fuzz(func(t *testing.T, op uint8, body []byte) {
		path := paths[int(op)%len(paths)]
		st, out := serve(h, root, "POST", path, body)
		var in map[string]json.RawMessage
		json.Unmarshal(body, &in)
		partial, _ := intField(in, "partial_failure_response_code")
		if st != 200 && st != 400 && (partial == 0 || st != partial) {
			t.Fatalf("%s %q: status %d %v", path, body, st, out)
		}
		if st != 200 || strings.HasSuffix(path, "/decrypt/fz") {
			return
		}
		data, _ := out["data"].(map[string]any)
		// A ciphertext decrypts with the associated data and context it was
		// made with (the top-level ones: batch items carry their own).
		check := func(ct any, plaintext string) {
			s, _ := ct.(string)
			req := map[string]json.RawMessage{}
			req["ciphertext"], _ = json.Marshal(s)
			if data["batch_results"] == nil {
				for _, k := range []string{"associated_data", "context"} {
					if v, ok := in[k]; ok {
						req[k] = v
					}
				}
			}
			rb, _ := json.Marshal(req)
			dst, dec := serve(h, root, "POST", "/v1/transit/decrypt/fz", rb)
			if dst != 200 {
				t.Fatalf("ciphertext %q from %s does not decrypt: %d %v", s, path, dst, dec)
			}
			if plaintext != "" && !sameBase64(dec["data"].(map[string]any)["plaintext"], plaintext) {
				t.Fatalf("ciphertext %q decrypts to another plaintext", s)
			}
		}
		switch {
		case strings.Contains(path, "datakey"):
			check(data["ciphertext"], data["plaintext"].(string))
		case data["batch_results"] != nil:
			if strings.Contains(string(body), "associated_data") || strings.Contains(string(body), "context") {
				return // per-item associated data: not replayed here
			}
			for _, r := range data["batch_results"].([]any) {
				if m := r.(map[string]any); m["error"] == nil {
					check(m["ciphertext"], "")
				}
			}
		default:
			want := ""
			if strings.HasSuffix(path, "/encrypt/fz") && len(in) > 0 {
				var p string
				if json.Unmarshal(in["plaintext"], &p) == nil {
					want = p
				}
			}
			check(data["ciphertext"], want)
		}
	})
}

// sameBase64 compares two base64 strings by the bytes they encode (a
// non-canonical encoding, e.g. "001=", decodes like its canonical form).
func sameBase64(a any, b string) bool {
	as, _ := a.(string)
	ab, err1 := base64.StdEncoding.DecodeString(as)
	bb, err2 := base64.StdEncoding.DecodeString(b)
	return err1 == nil && err2 == nil && bytes.Equal(ab, bb)
}
