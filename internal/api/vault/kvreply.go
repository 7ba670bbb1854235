package vault

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/jsonwire"
	"github.com/coffer-kms/coffer/internal/service"
)

// A KV read is the request Vault's clients send most (a database fetching
// its key at every start, a service its secrets), and its answer has one
// shape: the envelope around {"data": the secret, "metadata": the
// version's}. appendKVRead writes the bytes writeJSON writes for it
// (reply with kvReadData), without reflection or the maps versionMeta
// builds; TestKVReadReplyMatchesWriteJSON holds the two to the same bytes.

// replyPool holds the buffers KV read answers are encoded into.
var replyPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledReply is the largest buffer kept for the next answer.
const maxPooledReply = 64 << 10

// kvReadReply answers 200 with sec, as q.reply(http.StatusOK, "kv",
// kvReadData(sec)) would.
func (q *request) kvReadReply(sec service.KVSecret) {
	bp := replyPool.Get().(*[]byte)
	b, err := appendKVRead((*bp)[:0], q.reqID, sec, q.warningsOrNil())
	if err != nil {
		// Not valid JSON to copy as it is: the reflective path reports it
		// as writeJSON does.
		clear(b)
		q.reply(http.StatusOK, "kv", kvReadData(sec))
		return
	}
	jsonwire.SetHeaders(q.w.Header())
	q.w.WriteHeader(http.StatusOK)
	q.w.Write(b) // #nosec G705 G104 -- JSON (Content-Type application/json) with every string HTML-escaped as encoding/json escapes it, never HTML; a failed write is a client that has gone, with nothing to tell it
	clear(b)     // it holds the secret's plaintext
	if cap(b) <= maxPooledReply {
		*bp = b
		replyPool.Put(bp)
	}
}

// kvReadData is the data of a KV read's answer.
func kvReadData(sec service.KVSecret) map[string]any {
	return map[string]any{"data": sec.Data, "metadata": versionMeta(sec.Version, sec.CustomMetadata)}
}

// appendKVRead appends the envelope of a KV read answer and its newline.
func appendKVRead(b []byte, reqID string, sec service.KVSecret, warnings []string) ([]byte, error) {
	b = append(b, `{"request_id":`...)
	b = appendJSONString(b, reqID)
	b = append(b, `,"lease_id":"","renewable":false,"lease_duration":0,"data":{"data":`...)
	b, err := appendRawJSON(b, sec.Data)
	if err != nil {
		return b, err
	}
	b = append(b, `,"metadata":{"created_time":`...)
	b = appendVaultTime(b, sec.Version.Created)
	b = append(b, `,"custom_metadata":`...)
	if sec.CustomMetadata == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSON(b, sec.CustomMetadata)
	}
	b = append(b, `,"deletion_time":`...)
	if sec.Version.Deleted != nil {
		b = appendVaultTime(b, *sec.Version.Deleted)
	} else {
		b = append(b, `""`...)
	}
	b = append(b, `,"destroyed":`...)
	b = strconv.AppendBool(b, sec.Version.Destroyed)
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, sec.Version.Version, 10)
	b = append(b, `}},"wrap_info":null,"warnings":`...)
	if warnings == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSON(b, warnings)
	}
	return append(b, `,"auth":null,"mount_type":"kv"}`+"\n"...), nil
}

// appendJSONString appends s as encoding/json encodes it.
func appendJSONString(b []byte, s string) []byte {
	if !plainJSONString(s) {
		return appendJSON(b, s)
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendJSON appends v as encoding/json encodes it (HTML escaped). For
// what it is used on (strings, string slices and string maps) it cannot
// fail.
func appendJSON[T string | []string | map[string]string](b []byte, v T) []byte {
	out, err := json.Marshal(v)
	if err != nil {
		return append(b, "null"...)
	}
	return append(b, out...)
}

// plainJSONString: s encodes as itself in quotes (printable ASCII, nothing
// encoding/json escapes).
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendRawJSON appends raw as encoding/json encodes a json.RawMessage:
// compacted, with '<', '>', '&', U+2028 and U+2029 escaped. A value
// stored compact with none of those (the usual secret) is copied as it is.
//
// raw must be valid JSON: the KV read's data comes from
// service.Objects.KVGet, which answers only a JSON object it has checked
// (json.Valid) or one it encoded itself, so a second scan here would only
// repeat the first (TestKVValuesAreJSONObjects holds KVGet to that). A
// value that needs rewriting is checked all the same by json.Compact.
func appendRawJSON(b []byte, raw json.RawMessage) ([]byte, error) {
	if raw == nil {
		return append(b, "null"...), nil
	}
	if !needsRewrite(raw) {
		return append(b, raw...), nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return b, err
	}
	w := bytes.NewBuffer(b)
	json.HTMLEscape(w, buf.Bytes())
	return w.Bytes(), nil
}

// needsRewrite: raw holds white space, '<', '>', '&' or the first byte of
// U+2028/U+2029, which encoding/json would remove or escape.
func needsRewrite(raw []byte) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2:
			return true
		}
	}
	return false
}

// appendVaultTime appends vaultTime(t) as a JSON string: RFC 3339 has no
// character JSON escapes.
func appendVaultTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}
