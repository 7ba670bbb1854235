package vault

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestKVReadReplyMatchesWriteJSON: the KV read answer written without
// reflection is the bytes the envelope's reflective encoding gives.
func TestKVReadReplyMatchesWriteJSON(t *testing.T) {
	created := time.Date(2026, 12, 7, 10, 11, 12, 123456789, time.UTC)
	deleted := created.Add(time.Hour)
	for _, c := range []struct {
		sec      service.KVSecret
		warnings []string
	}{
		{sec: service.KVSecret{Data: json.RawMessage(`{"data":"5a5a"}`), Version: service.KVVersion{Version: 1, Created: created}}},
		{sec: service.KVSecret{Data: json.RawMessage("{ \"a\" : [1, 2,\n3],\t\"b\":\"x y\" }"), Version: service.KVVersion{Version: 7, Created: created.Truncate(time.Second)}}},
		{sec: service.KVSecret{Data: json.RawMessage(`{"html":"<a href='x'>&amp;</a>","sep":"` + "\u2028\u2029" + `","e":"é✓"}`),
			Version:        service.KVVersion{Version: 18446744073709551615, Created: created, Deleted: &deleted, Destroyed: true},
			CustomMetadata: map[string]string{"z": "last", "a": "<first>", "m": "\"quoted\"\n"}},
			warnings: []string{"Endpoint ignored these unrecognized parameters: [x <y>]"}},
		{sec: service.KVSecret{Data: nil, Version: service.KVVersion{Version: 2, Created: created.In(time.FixedZone("x", 3600))}, CustomMetadata: map[string]string{}}},
		// Invalid JSON never comes from KVGet (TestKVValuesAreJSONObjects);
		// where it needs rewriting it is refused all the same.
		{sec: service.KVSecret{Data: json.RawMessage(`{"unterminated": `), Version: service.KVVersion{Version: 3, Created: created}}},
		{sec: service.KVSecret{Data: json.RawMessage(`{"a":1} {"b":2}`), Version: service.KVVersion{Version: 3, Created: created}}},
	} {
		reqID := newRequestID()
		want := httptest.NewRecorder()
		writeJSON(want, 200, envelope{RequestID: reqID, Data: kvReadData(c.sec), Warnings: c.warnings, MountType: "kv"})
		got, err := appendKVRead(nil, reqID, c.sec, c.warnings)
		if want.Body.Len() == 0 {
			if err == nil {
				t.Errorf("data %q: encoded %s, the reflective encoder refused it", c.sec.Data, got)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, want.Body.Bytes()) {
			t.Errorf("data %q: error %v\n got %s\nwant %s", c.sec.Data, err, got, want.Body.Bytes())
		}
		// Through the request, headers included.
		rec := httptest.NewRecorder()
		q := &request{w: &recorder{ResponseWriter: rec}, reqID: reqID, warnings: c.warnings}
		q.kvReadReply(c.sec)
		if rec.Code != 200 || !bytes.Equal(rec.Body.Bytes(), want.Body.Bytes()) ||
			rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" ||
			rec.Header().Get("Date") == "" {
			t.Errorf("kvReadReply: %d %v %s", rec.Code, rec.Header(), rec.Body.Bytes())
		}
	}
}

// TestRequestIDShape: a request id is a random UUID-shaped string.
func TestRequestIDShape(t *testing.T) {
	a, b := newRequestID(), newRequestID()
	if len(a) != 36 || a == b || a[8] != '-' || a[13] != '-' || a[18] != '-' || a[23] != '-' {
		t.Fatalf("request ids %q %q", a, b)
	}
}

// FuzzKVReadReply: for any data KVGet can answer (a JSON object: it checks
// or encodes every value it returns), custom metadata and warning, the
// hand-written KV read answer is the reflective encoder's bytes.
func FuzzKVReadReply(f *testing.F) {
	f.Add([]byte(`{"data":"5a5a"}`), "k", "v", "", uint64(1), int64(1796638272123456789), false, false)
	f.Add([]byte("{ \"a\" : [1, 2,\n3],\t\"b\":\"x <y> & \u2028\" }"), "<a>", "\"q\"\n", "w <x>", uint64(18446744073709551615), int64(0), true, true)
	f.Add([]byte(`{"e":"é✓","n":null,"f":1.5e-7,"o":{"x":[{}]}}`), "", "", "", uint64(0), int64(-62135596800000000), false, true)
	f.Fuzz(func(t *testing.T, data []byte, mk, mv, warning string, version uint64, nanos int64, deleted, destroyed bool) {
		if !json.Valid(data) {
			t.Skip("KVGet answers only valid JSON")
		}
		created := time.Unix(0, nanos)
		sec := service.KVSecret{Data: json.RawMessage(data), Version: service.KVVersion{Version: version, Created: created, Destroyed: destroyed}}
		if deleted {
			d := created.Add(time.Minute)
			sec.Version.Deleted = &d
		}
		if mk != "" {
			sec.CustomMetadata = map[string]string{mk: mv}
		}
		var warnings []string
		if warning != "" {
			warnings = []string{warning}
		}
		reqID := newRequestID()
		want := httptest.NewRecorder()
		writeJSON(want, 200, envelope{RequestID: reqID, Data: kvReadData(sec), Warnings: warnings, MountType: "kv"})
		got, err := appendKVRead(nil, reqID, sec, warnings)
		if err != nil || !bytes.Equal(got, want.Body.Bytes()) {
			t.Fatalf("data %q: error %v\n got %s\nwant %s", data, err, got, want.Body.Bytes())
		}
	})
}
