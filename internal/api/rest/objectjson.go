package rest

import (
	"encoding/base64"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/jsonwire"
	"github.com/coffer-kms/coffer/internal/service"
)

// An object's description is the answer of every object write and read
// by id: it is encoded here without reflection, to the bytes
// json.Encoder.Encode writes for it (TestObjectJSONMatchesEncoder).

// appendObjectJSON appends o as json.Marshal encodes it. ok is false (and
// dst returned as it was) for an object json.Marshal refuses (a time
// outside years 0 to 9999).
func appendObjectJSON(dst []byte, o *service.Object) ([]byte, bool) {
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
	b = jsonwire.AppendString(b, o.State)
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
	for _, f := range [...]struct {
		name string
		t    *time.Time
	}{{`,"activated":`, o.Activated}, {`,"deactivated":`, o.Deactivated}, {`,"compromised":`, o.Compromised}, {`,"destroyed":`, o.Destroyed}} {
		if f.t != nil {
			b = append(b, f.name...)
			b, ok = jsonwire.AppendTime(b, *f.t, ok)
		}
	}
	b = append(b, `,"latest_version":`...)
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
				b = append(b, `,"public_key":"`...)
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

// objectBufs holds the buffers object answers are encoded into.
var objectBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledObjectBuf bounds the buffers kept in objectBufs (an object with
// many attributes or versions is not held for the next answer).
const maxPooledObjectBuf = 16 << 10
