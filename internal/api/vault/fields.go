package vault

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

// Vault decodes request fields leniently: a number may come as a JSON
// number or a string, a boolean as true or "true". These helpers do the
// same and name the field in every error.

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", service.ErrInvalid, field, fmt.Sprintf(format, args...))
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// uintField parses a non-negative integer field; ok is false when absent.
func uintField(m map[string]json.RawMessage, name string) (v uint64, ok bool, err error) {
	raw, present := m[name]
	if !present || isNull(raw) {
		return 0, false, nil
	}
	return parseUint(name, raw)
}

func parseUint(name string, raw json.RawMessage) (uint64, bool, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		s = string(bytes.TrimSpace(raw))
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, false, invalid(name, "want a non-negative integer")
	}
	return v, true, nil
}

// intField parses an integer field (0 when absent).
func intField(m map[string]json.RawMessage, name string) (int, error) {
	raw, present := m[name]
	if !present || isNull(raw) {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		s = string(bytes.TrimSpace(raw))
	}
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, invalid(name, "want an integer")
	}
	return v, nil
}

// boolField parses a boolean field (false when absent).
func boolField(m map[string]json.RawMessage, name string) (bool, error) {
	raw, present := m[name]
	if !present || isNull(raw) {
		return false, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err == nil {
		return b, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if b, err := strconv.ParseBool(s); err == nil {
			return b, nil
		}
	}
	return false, invalid(name, "want true or false")
}

// stringField parses a string field ("" when absent).
func stringField(m map[string]json.RawMessage, name string) (string, error) {
	raw, present := m[name]
	if !present || isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", invalid(name, "want a string")
	}
	return s, nil
}

// durationField parses a Vault duration field (0 when absent): a number of
// seconds, as a JSON number or a string of digits, or a duration string
// ("90s", "1h30m", "2d").
func durationField(m map[string]json.RawMessage, name string) (time.Duration, error) {
	raw, present := m[name]
	if !present || isNull(raw) {
		return 0, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return 0, invalid(name, "want a number of seconds or a duration such as \"0s\"")
		}
		s = n.String()
	}
	d, ok := parseDuration(s)
	if !ok {
		return 0, invalid(name, "want a number of seconds or a duration such as \"0s\"")
	}
	return d, nil
}

// parseDuration parses a Vault duration ("" is 0): a number of seconds, or
// a duration string ("90s", "1h30m", "2d"). ok is false for anything else,
// a negative duration included.
func parseDuration(s string) (d time.Duration, ok bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, true
	}
	if secs, err := strconv.ParseInt(s, 10, 64); err == nil && secs >= 0 && secs <= int64(math.MaxInt64/time.Second) {
		return time.Duration(secs) * time.Second, true
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.ParseInt(days, 10, 64); err == nil && n >= 0 && n <= int64(math.MaxInt64/(24*time.Hour)) {
			return time.Duration(n) * 24 * time.Hour, true
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, false
	}
	return d, true
}

// base64Field parses a base64 (standard encoding) field (nil when absent).
func base64Field(m map[string]json.RawMessage, name string) ([]byte, error) {
	s, err := stringField(m, name)
	if err != nil || s == "" {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, invalid(name, "want standard base64")
	}
	return b, nil
}

// objectField parses a JSON object field (nil when absent).
func objectField(m map[string]json.RawMessage, name string) (map[string]json.RawMessage, error) {
	raw, present := m[name]
	if !present || isNull(raw) {
		return nil, nil
	}
	var o map[string]json.RawMessage
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, invalid(name, "want a JSON object")
	}
	if o == nil {
		o = map[string]json.RawMessage{}
	}
	return o, nil
}

// stringMapField parses an object of strings (nil when absent).
func stringMapField(m map[string]json.RawMessage, name string) (map[string]string, bool, error) {
	raw, present := m[name]
	if !present || isNull(raw) {
		return nil, present, nil
	}
	var o map[string]string
	if err := json.Unmarshal(raw, &o); err != nil {
		return nil, true, invalid(name, "want an object of strings")
	}
	return o, true, nil
}

// versionsField parses "versions": a list of integers (numbers or strings),
// or one comma-separated string, as Vault takes them.
func versionsField(m map[string]json.RawMessage, name string) ([]uint64, error) {
	raw, present := m[name]
	if !present || isNull(raw) {
		return nil, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, invalid(name, "want a list of version numbers")
		}
		for _, p := range strings.Split(s, ",") {
			list = append(list, json.RawMessage(strconv.Quote(strings.TrimSpace(p))))
		}
	}
	if len(list) > 1000 {
		return nil, invalid(name, "at most 1000 versions")
	}
	out := make([]uint64, 0, len(list))
	for _, r := range list {
		v, _, err := parseUint(name, r)
		if err != nil {
			return nil, err
		}
		if v == 0 {
			return nil, invalid(name, "versions start at 1")
		}
		out = append(out, v)
	}
	return out, nil
}

// batchField parses "batch_input": a list of objects (nil when absent).
func batchField(m map[string]json.RawMessage) ([]map[string]json.RawMessage, error) {
	raw, present := m["batch_input"]
	if !present || isNull(raw) {
		return nil, nil
	}
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalid("batch_input", "want a list of objects")
	}
	if len(list) == 0 || len(list) > service.MaxTransitBatch {
		return nil, invalid("batch_input", "send 1 to %d items, got %d", service.MaxTransitBatch, len(list))
	}
	for i := range list {
		if list[i] == nil {
			return nil, invalid("batch_input", "item %d is not an object", i)
		}
	}
	return list, nil
}
