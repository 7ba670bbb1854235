package openapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// obj is a JSON object that keeps its keys in insertion order, so the
// rendered document has a fixed, deliberate key order.
type obj struct {
	keys []string
	vals map[string]any
}

func newObj() *obj { return &obj{vals: map[string]any{}} }

// set adds or replaces key. A replaced key keeps its original position.
func (o *obj) set(key string, v any) *obj {
	if _, ok := o.vals[key]; !ok {
		o.keys = append(o.keys, key)
	}
	o.vals[key] = v
	return o
}

// render writes v as indented JSON (two spaces, no HTML escaping) followed
// by a newline.
func render(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeValue(&buf, v, 0); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

func writeIndent(buf *bytes.Buffer, depth int) {
	buf.WriteByte('\n')
	for i := 0; i < depth; i++ {
		buf.WriteString("  ")
	}
}

func writeString(buf *bytes.Buffer, s string) error {
	var tmp bytes.Buffer
	enc := json.NewEncoder(&tmp)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return err
	}
	buf.Write(bytes.TrimSuffix(tmp.Bytes(), []byte{'\n'}))
	return nil
}

func writeValue(buf *bytes.Buffer, v any, depth int) error {
	switch v := v.(type) {
	case nil:
		buf.WriteString("null")
	case *obj:
		if len(v.keys) == 0 {
			buf.WriteString("{}")
			return nil
		}
		buf.WriteByte('{')
		for i, k := range v.keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeIndent(buf, depth+1)
			if err := writeString(buf, k); err != nil {
				return err
			}
			buf.WriteString(": ")
			if err := writeValue(buf, v.vals[k], depth+1); err != nil {
				return err
			}
		}
		writeIndent(buf, depth)
		buf.WriteByte('}')
	case []any:
		if len(v) == 0 {
			buf.WriteString("[]")
			return nil
		}
		buf.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeIndent(buf, depth+1)
			if err := writeValue(buf, e, depth+1); err != nil {
				return err
			}
		}
		writeIndent(buf, depth)
		buf.WriteByte(']')
	case []string:
		a := make([]any, len(v))
		for i, s := range v {
			a[i] = s
		}
		return writeValue(buf, a, depth)
	case string:
		return writeString(buf, v)
	case bool:
		buf.WriteString(strconv.FormatBool(v))
	case int:
		buf.WriteString(strconv.Itoa(v))
	case float64:
		buf.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	default:
		return fmt.Errorf("openapi: internal error: cannot render %T", v)
	}
	return nil
}
