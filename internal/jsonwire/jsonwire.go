// Package jsonwire writes JSON answers the way encoding/json and net/http
// would, without their allocations on the hot paths: the headers every
// JSON answer carries, and strings and times appended as json.Marshal
// encodes them. Its output is byte for byte the standard library's (the
// tests compare). A leaf: it imports only the standard library.
package jsonwire

import (
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"
)

// The values of the headers every JSON answer carries, shared by all
// answers: net/http copies a handler's header values before it writes
// them, and a slice of capacity 1 is copied by any append to it.
var (
	headerJSON    = []string{"application/json"}[:1:1]
	headerNoStore = []string{"no-store"}[:1:1]
)

// SetHeaders sets Content-Type (application/json), Cache-Control
// (no-store) and Date as Header().Set would, without allocating: the
// values are shared, and Date is the one net/http would add
// (http.TimeFormat, of the current second), formatted once a second
// instead of once an answer. The header block net/http writes is the same
// (TestHeadersOnTheWire).
func SetHeaders(h http.Header) {
	h["Content-Type"] = headerJSON
	h["Cache-Control"] = headerNoStore
	h["Date"] = httpDate(time.Now())
}

// dateValue is a Date header's value and the second it names.
type dateValue struct {
	unix int64
	v    []string
}

var lastDate atomic.Pointer[dateValue]

// httpDate is the Date header value of now, formatted once per second.
func httpDate(now time.Time) []string {
	sec := now.Unix()
	if d := lastDate.Load(); d != nil && d.unix == sec {
		return d.v
	}
	d := &dateValue{unix: sec, v: []string{now.UTC().Format(http.TimeFormat)}[:1:1]}
	lastDate.Store(d)
	return d.v
}

// AppendTime appends t as time.Time's MarshalJSON does; ok turns false
// for a time it refuses (and is passed through otherwise, so a caller can
// chain several and check once).
func AppendTime(b []byte, t time.Time, ok bool) ([]byte, bool) {
	b = append(b, '"')
	enc, err := t.AppendText(b)
	if err != nil { // AppendText returns nil then
		return append(b, '"'), false
	}
	return append(enc, '"'), ok
}

// AppendString appends s as json.Marshal encodes a string (HTML
// characters escaped). Strings of plain printable ASCII, nearly all of
// them, are copied as they are.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s) // a string always encodes
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
