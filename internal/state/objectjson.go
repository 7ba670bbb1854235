package state

import (
	"bytes"
	"encoding/base64"
	"slices"
	"strconv"
	"time"

	"github.com/coffer-kms/coffer/internal/jsonwire"
	"github.com/coffer-kms/coffer/internal/lifecycle"
)

// appendObjectJSON appends o as json.Marshal encodes it, byte for byte,
// without reflection: every object write (create, rotate, state change)
// stores one, and in a journal replay encoding it was a fifth of the apply
// time. It reports false, having appended nothing, for what it does not
// handle itself (a time json.Marshal refuses); the caller then uses
// json.Marshal. TestObjectJSONMatchesMarshal holds the two together.
func appendObjectJSON(dst []byte, o *Object) ([]byte, bool) {
	n0 := len(dst)
	ok := true
	b := append(dst, `{"id":`...)
	b = jsonwire.AppendString(b, o.ID)
	b = append(b, `,"wallet":`...)
	b = jsonwire.AppendString(b, o.Wallet)
	b = append(b, `,"name":`...)
	b = jsonwire.AppendString(b, o.Name)
	b = append(b, `,"type":`...)
	b = jsonwire.AppendString(b, o.Type)
	b = append(b, `,"algorithm":`...)
	b = jsonwire.AppendString(b, o.Algorithm)
	b = append(b, `,"length":`...)
	b = strconv.AppendInt(b, int64(o.Length), 10)
	b = append(b, `,"state":`...)
	b = jsonwire.AppendString(b, string(o.State))
	if o.Reason != "" {
		b = append(b, `,"reason":`...)
		b = jsonwire.AppendString(b, o.Reason)
	}
	if len(o.Attributes) > 0 {
		b = append(b, `,"attributes":{`...)
		keys := make([]string, 0, len(o.Attributes))
		for k := range o.Attributes {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonwire.AppendString(b, k)
			b = append(b, ':')
			b = jsonwire.AppendString(b, o.Attributes[k])
		}
		b = append(b, '}')
	}
	if o.CreatedBy != "" {
		b = append(b, `,"created_by":`...)
		b = jsonwire.AppendString(b, o.CreatedBy)
	}
	b = append(b, `,"created":`...)
	b, ok = jsonwire.AppendTime(b, o.Created, ok)
	b = append(b, `,"updated":`...)
	b, ok = jsonwire.AppendTime(b, o.Updated, ok)
	for _, f := range []struct {
		name string
		t    *time.Time
	}{{`,"activated":`, o.Activated}, {`,"deactivated":`, o.Deactivate}, {`,"compromised":`, o.Compromise}, {`,"destroyed":`, o.Destroyed}} {
		if f.t != nil {
			b = append(b, f.name...)
			b, ok = jsonwire.AppendTime(b, *f.t, ok)
		}
	}
	b = append(b, `,"latest":`...)
	b = strconv.AppendUint(b, o.Latest, 10)
	b = append(b, `,"versions":`...)
	if o.Versions == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range o.Versions {
			v := &o.Versions[i]
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"version":`...)
			b = strconv.AppendUint(b, v.Version, 10)
			b = append(b, `,"created":`...)
			b, ok = jsonwire.AppendTime(b, v.Created, ok)
			if v.Length != 0 {
				b = append(b, `,"length":`...)
				b = strconv.AppendInt(b, int64(v.Length), 10)
			}
			if len(v.Public) > 0 {
				b = append(b, `,"public":"`...)
				b = base64.StdEncoding.AppendEncode(b, v.Public)
				b = append(b, '"')
			}
			if v.Destroyed {
				b = append(b, `,"destroyed":true`...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, '}')
	if !ok {
		return b[:n0], false
	}
	return b, true
}

// appendObjectCreateJSON appends c as json.Marshal encodes it (see
// appendObjectJSON).
func appendObjectCreateJSON(dst []byte, c *ObjectCreate) ([]byte, bool) {
	n0 := len(dst)
	b, ok := appendObjectJSON(append(dst, `{"object":`...), &c.Object)
	if !ok {
		return dst[:n0], false
	}
	b = append(b, `,"material":`...)
	if c.Material == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, c.Material)
		b = append(b, '"')
	}
	if len(c.Public) > 0 {
		b = append(b, `,"public":"`...)
		b = base64.StdEncoding.AppendEncode(b, c.Public)
		b = append(b, '"')
	}
	if c.Length != 0 {
		b = append(b, `,"length":`...)
		b = strconv.AppendInt(b, int64(c.Length), 10)
	}
	return append(b, '}'), true
}

// decodeObjectCreate decodes an object creation's body. Bodies are what
// json.Marshal wrote, so it reads that form directly, then encodes what it
// read and compares: only a body that is exactly the encoding of the value
// read is taken, and that value is the one json.Unmarshal gives. Any other
// body (escapes in strings, other spacing or field order) goes through
// json.Unmarshal.
func decodeObjectCreate(body []byte) (ObjectCreate, error) {
	if c, ok := scanObjectCreate(body); ok {
		if enc, ok := appendObjectCreateJSON(make([]byte, 0, len(body)), &c); ok && bytes.Equal(enc, body) {
			return c, nil
		}
	}
	var c ObjectCreate
	err := decodeJSON(body, &c)
	return c, err
}

// jsonScan reads the form json.Marshal writes; any surprise sets bad.
type jsonScan struct {
	b   []byte
	bad bool
}

func (s *jsonScan) lit(l string) {
	if !s.bad && bytes.HasPrefix(s.b, []byte(l)) {
		s.b = s.b[len(l):]
		return
	}
	s.bad = true
}

// opt consumes l if the input continues with it.
func (s *jsonScan) opt(l string) bool {
	if !s.bad && bytes.HasPrefix(s.b, []byte(l)) {
		s.b = s.b[len(l):]
		return true
	}
	return false
}

// raw reads a string without escapes, returning its bytes (unquoted).
func (s *jsonScan) raw() []byte {
	if s.bad || len(s.b) == 0 || s.b[0] != '"' {
		s.bad = true
		return nil
	}
	for i := 1; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			v := s.b[1:i]
			s.b = s.b[i+1:]
			return v
		case c == '\\' || c < 0x20:
			s.bad = true
			return nil
		}
	}
	s.bad = true
	return nil
}

func (s *jsonScan) str() string { return string(s.raw()) }

func (s *jsonScan) bytes64() []byte {
	r := s.raw()
	if s.bad {
		return nil
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(r)))
	n, err := base64.StdEncoding.Decode(out, r)
	if err != nil {
		s.bad = true
	}
	return out[:n]
}

func (s *jsonScan) number() []byte {
	i := 0
	for i < len(s.b) && (s.b[i] == '-' || s.b[i] >= '0' && s.b[i] <= '9') {
		i++
	}
	v := s.b[:i]
	s.b = s.b[i:]
	return v
}

func (s *jsonScan) int() int {
	if s.bad {
		return 0
	}
	v, err := strconv.ParseInt(string(s.number()), 10, 0)
	if err != nil {
		s.bad = true
	}
	return int(v)
}

func (s *jsonScan) uint() uint64 {
	if s.bad {
		return 0
	}
	v, err := strconv.ParseUint(string(s.number()), 10, 64)
	if err != nil {
		s.bad = true
	}
	return v
}

func (s *jsonScan) time() time.Time {
	var t time.Time
	if s.bad || len(s.b) == 0 || s.b[0] != '"' {
		s.bad = true
		return t
	}
	whole := s.b
	r := s.raw()
	if s.bad || t.UnmarshalJSON(whole[:len(r)+2]) != nil {
		s.bad = true
	}
	return t
}

func (s *jsonScan) optTime(l string) *time.Time {
	if !s.opt(l) {
		return nil
	}
	t := s.time()
	return &t
}

// scanObjectCreate reads an ObjectCreate in the form appendObjectCreateJSON
// writes; ok is false for anything else.
func scanObjectCreate(body []byte) (c ObjectCreate, ok bool) {
	s := &jsonScan{b: body}
	o := &c.Object
	s.lit(`{"object":{"id":`)
	o.ID = s.str()
	s.lit(`,"wallet":`)
	o.Wallet = s.str()
	s.lit(`,"name":`)
	o.Name = s.str()
	s.lit(`,"type":`)
	o.Type = s.str()
	s.lit(`,"algorithm":`)
	o.Algorithm = s.str()
	s.lit(`,"length":`)
	o.Length = s.int()
	s.lit(`,"state":`)
	o.State = lifecycle.State(s.str())
	if s.opt(`,"reason":`) {
		o.Reason = s.str()
	}
	if s.opt(`,"attributes":{`) {
		o.Attributes = map[string]string{}
		for first := true; !s.bad && !s.opt("}"); first = false {
			if !first {
				s.lit(",")
			}
			k := s.str()
			s.lit(":")
			o.Attributes[k] = s.str()
		}
	}
	if s.opt(`,"created_by":`) {
		o.CreatedBy = s.str()
	}
	s.lit(`,"created":`)
	o.Created = s.time()
	s.lit(`,"updated":`)
	o.Updated = s.time()
	o.Activated = s.optTime(`,"activated":`)
	o.Deactivate = s.optTime(`,"deactivated":`)
	o.Compromise = s.optTime(`,"compromised":`)
	o.Destroyed = s.optTime(`,"destroyed":`)
	s.lit(`,"latest":`)
	o.Latest = s.uint()
	s.lit(`,"versions":`)
	if !s.opt("null") {
		s.lit("[")
		o.Versions = []Version{}
		for first := true; !s.bad && !s.opt("]"); first = false {
			if !first {
				s.lit(",")
			}
			var v Version
			s.lit(`{"version":`)
			v.Version = s.uint()
			s.lit(`,"created":`)
			v.Created = s.time()
			if s.opt(`,"length":`) {
				v.Length = s.int()
			}
			if s.opt(`,"public":`) {
				v.Public = s.bytes64()
			}
			if s.opt(`,"destroyed":true`) {
				v.Destroyed = true
			}
			s.lit("}")
			o.Versions = append(o.Versions, v)
		}
	}
	s.lit(`},"material":`)
	if !s.opt("null") {
		c.Material = s.bytes64()
	}
	if s.opt(`,"public":`) {
		c.Public = s.bytes64()
	}
	if s.opt(`,"length":`) {
		c.Length = s.int()
	}
	s.lit("}")
	return c, !s.bad && len(s.b) == 0
}
