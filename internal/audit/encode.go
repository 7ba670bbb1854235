package audit

import (
	"errors"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// A record line is the bytes json.Marshal(Record) produces, written here
// without reflection: Append encodes every record, and the reflective
// encoder was most of its cost. TestEncodeMatchesMarshal and
// FuzzEncodeMatchesMarshal hold the two to the same bytes.
//
// The line is built in two parts: the chain fields (seq, time, prev),
// which Append assigns under its lock, and the tail (every field after
// prev, ending with the closing brace), which depends on the record alone
// and is encoded before the lock is taken.

// appendChain appends `{"seq":N,"time":"...","prev":"..."` for a time in
// UTC.
func appendChain(b []byte, seq uint64, t time.Time, prev string) ([]byte, error) {
	if y := t.Year(); y < 0 || y > 9999 {
		return b, errors.New("json: error calling MarshalJSON for type time.Time: Time.MarshalJSON: year outside of range [0,9999]")
	}
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","prev":`...)
	return appendString(b, prev), nil
}

// appendTail appends the fields of r after prev, as json.Marshal writes
// them (omitempty ones left out when empty), and the closing brace.
func appendTail(b []byte, r *Record) ([]byte, error) {
	if r.Node != "" {
		b = append(b, `,"node":`...)
		b = appendString(b, r.Node)
	}
	b = append(b, `,"actor":`...)
	b = appendString(b, r.Actor)
	if len(r.Roles) > 0 {
		b = append(b, `,"roles":`...)
		b = appendStrings(b, r.Roles)
	}
	if r.Source != "" {
		b = append(b, `,"source":`...)
		b = appendString(b, r.Source)
	}
	if r.Transport != "" {
		b = append(b, `,"transport":`...)
		b = appendString(b, r.Transport)
	}
	b = append(b, `,"operation":`...)
	b = appendString(b, r.Operation)
	if len(r.Objects) > 0 {
		b = append(b, `,"objects":`...)
		b = appendStrings(b, r.Objects)
	}
	b = append(b, `,"result":`...)
	b = appendString(b, r.Result)
	if r.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	if r.Error != "" {
		b = append(b, `,"error":`...)
		b = appendString(b, r.Error)
	}
	b = append(b, `,"latency_ms":`...)
	b, err := appendFloat(b, r.LatencyMS)
	if err != nil {
		return b, err
	}
	return append(b, '}'), nil
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendFloat is encoding/json's float64 encoding: shortest form, 'e'
// notation below 1e-6 and from 1e21, a one-digit exponent without its
// leading zero.
func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, errors.New("json: unsupported value: " + strconv.FormatFloat(f, 'g', -1, 64))
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// plainASCII marks the ASCII bytes appendString copies as they are.
var plainASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString is encoding/json's string encoding with HTML escaping (its
// default): '<', '>', '&', control characters, U+2028 and U+2029 escaped,
// invalid UTF-8 replaced by U+FFFD.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if plainASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
