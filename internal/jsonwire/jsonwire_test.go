package jsonwire

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHeadersOnTheWire: an answer whose headers SetHeaders set
// carries the header block Header().Set gives (Date aside, which must be
// the current second), and the values it shares are never written to.
func TestHeadersOnTheWire(t *testing.T) {
	body := []byte(`{"a":1}` + "\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/shared" {
			SetHeaders(w.Header())
		} else {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
		}
		w.WriteHeader(http.StatusCreated)
		w.Write(body)
	}))
	defer srv.Close()
	raw := func(path string) (head string, date time.Time) {
		t.Helper()
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		head, _, ok := strings.Cut(string(b), "\r\n\r\n")
		if !ok {
			t.Fatalf("no header block in %q", b)
		}
		lines := strings.Split(head, "\r\n")
		for i, l := range lines {
			if v, ok := strings.CutPrefix(l, "Date: "); ok {
				if date, err = time.Parse(http.TimeFormat, v); err != nil {
					t.Fatalf("Date %q: %v", v, err)
				}
				lines[i] = "Date: (the time)"
			}
		}
		return strings.Join(lines, "\r\n"), date
	}
	before := time.Now().Truncate(time.Second)
	wantHead, _ := raw("/set")
	gotHead, gotDate := raw("/shared")
	if gotHead != wantHead {
		t.Errorf("header block\n got %q\nwant %q", gotHead, wantHead)
	}
	if gotDate.Before(before) || gotDate.After(time.Now()) {
		t.Errorf("Date %v, want a time between %v and now", gotDate, before)
	}
	h := http.Header{}
	SetHeaders(h)
	h.Add("Cache-Control", "private")
	h.Add("Content-Type", "text/plain")
	if len(headerNoStore) != 1 || headerNoStore[0] != "no-store" || len(headerJSON) != 1 || headerJSON[0] != "application/json" {
		t.Fatalf("shared values changed: %q %q", headerNoStore, headerJSON)
	}
}

// TestAppendMatchesMarshal: strings and times come out as json.Marshal
// writes them, the escapes of every kind of string included, and a time
// MarshalJSON refuses turns ok false.
func TestAppendMatchesMarshal(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "a&b", "a<b", "a>b", "tab\there", "nl\n", "\x00", "é", "\u2028\u2029", "bad \xff utf-8", "😀"} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("%q: got %s, want %s", s, got[1:], want)
		}
	}
	for _, tm := range []time.Time{time.Date(2026, 12, 7, 23, 0, 0, 123456789, time.UTC), time.Date(1, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600)), {}} {
		want, err := json.Marshal(tm)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := AppendTime(nil, tm, true); !ok || string(got) != string(want) {
			t.Errorf("%v: got %s %v, want %s", tm, got, ok, want)
		}
	}
	if _, ok := AppendTime(nil, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), true); ok {
		t.Error("a year MarshalJSON refuses was taken")
	}
}
