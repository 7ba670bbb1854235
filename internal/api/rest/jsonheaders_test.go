package rest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestJSONHeadersOnTheWire: an answer whose headers setJSONHeaders set
// carries the header block Header().Set gives (Date aside, which must be
// the current second), and the values it shares are never written to.
func TestJSONHeadersOnTheWire(t *testing.T) {
	body := []byte(`{"a":1}` + "\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/shared" {
			setJSONHeaders(w.Header())
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
	setJSONHeaders(h)
	h.Add("Cache-Control", "private")
	h.Add("Content-Type", "text/plain")
	if len(headerNoStore) != 1 || headerNoStore[0] != "no-store" || len(headerJSON) != 1 || headerJSON[0] != "application/json" {
		t.Fatalf("shared values changed: %q %q", headerNoStore, headerJSON)
	}
}
