package openapi

import (
	"cmp"
	"encoding"
	"encoding/json"
	"fmt"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

var (
	timeType          = reflect.TypeFor[time.Time]()
	durationType      = reflect.TypeFor[time.Duration]()
	rawMessageType    = reflect.TypeFor[json.RawMessage]()
	numberType        = reflect.TypeFor[json.Number]()
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// schema is an OpenAPI schema object before component names are known.
// A schema with ref set stands for a $ref to the component of that type.
type schema struct {
	ref         reflect.Type
	typ         string
	format      string
	description string
	nullable    bool
	nonNegative bool
	minItems    int // only when fixedLen
	fixedLen    bool
	items       *schema
	props       []prop
	required    []string
	addl        *schema
}

type prop struct {
	name string
	s    *schema
}

// object renders s; names maps component types to their component names.
func (s *schema) object(names map[reflect.Type]string) *obj {
	if s.ref != nil {
		ref := newObj().set("$ref", "#/components/schemas/"+names[s.ref])
		if s.description == "" && !s.nullable {
			return ref
		}
		// Siblings of $ref are ignored in OpenAPI 3.0, so wrap it.
		o := newObj().set("allOf", []any{ref})
		if s.description != "" {
			o.set("description", s.description)
		}
		if s.nullable {
			o.set("nullable", true)
		}
		return o
	}
	o := newObj()
	if s.typ != "" {
		o.set("type", s.typ)
	}
	if s.format != "" {
		o.set("format", s.format)
	}
	if s.description != "" {
		o.set("description", s.description)
	}
	if s.nullable {
		o.set("nullable", true)
	}
	if s.nonNegative {
		o.set("minimum", 0)
	}
	if s.items != nil {
		o.set("items", s.items.object(names))
	}
	if s.fixedLen {
		o.set("minItems", s.minItems)
		o.set("maxItems", s.minItems)
	}
	if len(s.props) > 0 {
		p := newObj()
		for _, pr := range s.props {
			p.set(pr.name, pr.s.object(names))
		}
		o.set("properties", p)
	}
	if s.addl != nil {
		o.set("additionalProperties", s.addl.object(names))
	}
	if len(s.required) > 0 {
		o.set("required", s.required)
	}
	return o
}

// generator turns Go types into schemas. Named struct types become
// components; everything else is inlined, except named non-struct types
// that turn out to be recursive, which also become components.
type generator struct {
	comps     map[reflect.Type]*schema // nil value: generation in progress
	order     []reflect.Type           // discovery order of comps
	active    map[reflect.Type]bool    // named non-struct types being generated
	recursive map[reflect.Type]bool
}

func newGenerator() *generator {
	return &generator{
		comps:     map[reflect.Type]*schema{},
		active:    map[reflect.Type]bool{},
		recursive: map[reflect.Type]bool{},
	}
}

// gen returns a fresh schema node for t (callers may set its description
// or nullable flag).
func (g *generator) gen(t reflect.Type) (*schema, error) {
	if _, ok := g.comps[t]; ok {
		return &schema{ref: t}, nil
	}
	if t.Kind() == reflect.Struct && t.Name() != "" && !isSpecial(t) {
		if err := g.component(t); err != nil {
			return nil, err
		}
		return &schema{ref: t}, nil
	}
	if t.Name() == "" || isSpecial(t) {
		return g.genKind(t)
	}
	// Named non-struct type: inline it unless it refers to itself.
	if g.active[t] {
		g.recursive[t] = true
		return &schema{ref: t}, nil
	}
	g.active[t] = true
	s, err := g.genKind(t)
	delete(g.active, t)
	if err != nil {
		return nil, err
	}
	if g.recursive[t] {
		g.comps[t] = s
		g.order = append(g.order, t)
		return &schema{ref: t}, nil
	}
	return s, nil
}

// component makes t a component (if it is not one already).
func (g *generator) component(t reflect.Type) error {
	if _, ok := g.comps[t]; ok {
		return nil
	}
	g.comps[t] = nil
	g.order = append(g.order, t)
	s, err := g.genKind(t)
	if err != nil {
		return err
	}
	g.comps[t] = s
	return nil
}

func isSpecial(t reflect.Type) bool {
	switch t {
	case timeType, durationType, rawMessageType, numberType:
		return true
	}
	return false
}

// marshalerSchema reports the schema of a type that encodes itself.
func marshalerSchema(t reflect.Type) (*schema, bool) {
	if t.Implements(jsonMarshalerType) {
		return &schema{}, true // shape unknown
	}
	if t.Implements(textMarshalerType) {
		return &schema{typ: "string"}, true
	}
	return nil, false
}

func (g *generator) genKind(t reflect.Type) (*schema, error) {
	switch t {
	case timeType:
		return &schema{typ: "string", format: "date-time"}, nil
	case durationType:
		return &schema{typ: "integer", format: "int64"}, nil
	case rawMessageType:
		return &schema{}, nil
	case numberType:
		return &schema{typ: "number"}, nil
	}
	if t.Kind() == reflect.Pointer {
		// Methods with pointer receivers only count through the pointer.
		if e := t.Elem(); !isSpecial(e) {
			var s *schema
			switch {
			case t.Implements(jsonMarshalerType) && !e.Implements(jsonMarshalerType):
				s = &schema{}
			case !t.Implements(jsonMarshalerType) && t.Implements(textMarshalerType) && !e.Implements(textMarshalerType):
				s = &schema{typ: "string"}
			}
			if s != nil {
				s.nullable = true
				return s, nil
			}
		}
		s, err := g.gen(t.Elem())
		if err != nil {
			return nil, err
		}
		s.nullable = true
		return s, nil
	}
	if s, ok := marshalerSchema(t); ok {
		return s, nil
	}
	switch t.Kind() {
	case reflect.Bool:
		return &schema{typ: "boolean"}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s := &schema{typ: "integer"}
		switch t.Bits() {
		case 64:
			s.format = "int64"
		case 32:
			s.format = "int32"
		}
		return s, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		s := &schema{typ: "integer", nonNegative: true}
		if t.Bits() == 64 {
			s.format = "int64"
		}
		return s, nil
	case reflect.Float32:
		return &schema{typ: "number", format: "float"}, nil
	case reflect.Float64:
		return &schema{typ: "number", format: "double"}, nil
	case reflect.String:
		return &schema{typ: "string"}, nil
	case reflect.Interface:
		return &schema{}, nil
	case reflect.Slice:
		// encoding/json writes byte slices as base64 unless the element
		// type encodes itself.
		if e := t.Elem(); e.Kind() == reflect.Uint8 {
			p := reflect.PointerTo(e)
			if !p.Implements(jsonMarshalerType) && !p.Implements(textMarshalerType) {
				return &schema{typ: "string", format: "byte"}, nil
			}
		}
		items, err := g.gen(t.Elem())
		if err != nil {
			return nil, err
		}
		return &schema{typ: "array", items: items}, nil
	case reflect.Array:
		items, err := g.gen(t.Elem())
		if err != nil {
			return nil, err
		}
		return &schema{typ: "array", items: items, fixedLen: true, minItems: t.Len()}, nil
	case reflect.Map:
		k := t.Key()
		switch k.Kind() {
		case reflect.String,
			reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		default:
			if !k.Implements(textMarshalerType) {
				return nil, fmt.Errorf("unsupported map key type %s", k)
			}
		}
		addl, err := g.gen(t.Elem())
		if err != nil {
			return nil, err
		}
		return &schema{typ: "object", addl: addl}, nil
	case reflect.Struct:
		return g.structSchema(t)
	}
	return nil, fmt.Errorf("unsupported type %s", t)
}

func (g *generator) structSchema(t reflect.Type) (*schema, error) {
	s := &schema{typ: "object"}
	for _, f := range typeFields(t) {
		fs, err := g.gen(f.typ)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", t, f.goName, err)
		}
		if f.quoted && fs.ref == nil {
			switch fs.typ {
			case "integer", "number", "boolean", "string":
				fs.typ = "string"
				fs.nonNegative = false
			}
		}
		if f.doc != "" {
			fs.description = f.doc
		}
		s.props = append(s.props, prop{f.name, fs})
		if !f.omit {
			s.required = append(s.required, f.name)
		}
	}
	return s, nil
}

// field is one JSON property of a struct, after embedding is resolved.
type field struct {
	name   string
	goName string
	tagged bool
	index  []int
	typ    reflect.Type // the field's declared type
	omit   bool         // omitempty or omitzero
	quoted bool         // ",string"
	doc    string
}

// typeFields lists the JSON properties of struct type t, following the
// rules of encoding/json: embedded structs without a name tag are
// flattened, shallower fields win, and at equal depth a tagged field wins
// over untagged ones; otherwise clashing fields are all dropped.
func typeFields(t reflect.Type) []field {
	type walk struct {
		typ   reflect.Type
		index []int
	}
	var fields []field
	var current []walk
	next := []walk{{typ: t}}
	var count, nextCount map[reflect.Type]int
	visited := map[reflect.Type]bool{}
	for len(next) > 0 {
		current, next = next, nil
		count, nextCount = nextCount, map[reflect.Type]int{}
		for _, w := range current {
			if visited[w.typ] {
				continue
			}
			visited[w.typ] = true
			for i := 0; i < w.typ.NumField(); i++ {
				sf := w.typ.Field(i)
				if sf.Anonymous {
					et := sf.Type
					if et.Kind() == reflect.Pointer {
						et = et.Elem()
					}
					if !sf.IsExported() && et.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, opts, _ := strings.Cut(tag, ",")
				if !validTagName(name) {
					name = ""
				}
				index := append(slices.Clone(w.index), i)
				ft := sf.Type
				if ft.Name() == "" && ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if name != "" || !sf.Anonymous || ft.Kind() != reflect.Struct {
					quoted := false
					if hasOpt(opts, "string") {
						switch ft.Kind() {
						case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
							reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
							reflect.Float32, reflect.Float64, reflect.String:
							quoted = true
						}
					}
					f := field{
						name:   name,
						goName: sf.Name,
						tagged: name != "",
						index:  index,
						typ:    sf.Type,
						omit:   hasOpt(opts, "omitempty") || hasOpt(opts, "omitzero"),
						quoted: quoted,
						doc:    sf.Tag.Get("doc"),
					}
					if f.name == "" {
						f.name = sf.Name
					}
					fields = append(fields, f)
					if count[w.typ] > 1 {
						// The same type embedded twice at one depth:
						// its fields annihilate each other.
						fields = append(fields, f)
					}
					continue
				}
				nextCount[ft]++
				if nextCount[ft] == 1 {
					next = append(next, walk{typ: ft, index: index})
				}
			}
		}
	}

	slices.SortFunc(fields, func(a, b field) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		if c := cmp.Compare(len(a.index), len(b.index)); c != 0 {
			return c
		}
		if a.tagged != b.tagged {
			if a.tagged {
				return -1
			}
			return 1
		}
		return slices.Compare(a.index, b.index)
	})
	out := fields[:0]
	for i := 0; i < len(fields); {
		j := i + 1
		for j < len(fields) && fields[j].name == fields[i].name {
			j++
		}
		if f, ok := dominantField(fields[i:j]); ok {
			out = append(out, f)
		}
		i = j
	}
	slices.SortFunc(out, func(a, b field) int { return slices.Compare(a.index, b.index) })
	return out
}

func dominantField(fs []field) (field, bool) {
	if len(fs) > 1 && len(fs[0].index) == len(fs[1].index) && fs[0].tagged == fs[1].tagged {
		return field{}, false
	}
	return fs[0], true
}

func hasOpt(opts, want string) bool {
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		if o == want {
			return true
		}
	}
	return false
}

// validTagName mirrors encoding/json's isValidTag.
func validTagName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !isLetterOrDigit(c):
			return false
		}
	}
	return true
}

func isLetterOrDigit(c rune) bool {
	return c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') || c > 127
}

// componentNames gives every component a unique name: the Go type name,
// qualified by package name (then by full import path, then by a counter)
// where names clash. pinned names are fixed in advance.
func componentNames(order []reflect.Type, pinned map[reflect.Type]string) (map[reflect.Type]string, error) {
	names := map[reflect.Type]string{}
	used := map[string]reflect.Type{}
	for t, n := range pinned {
		names[t] = n
		used[n] = t
	}
	groups := map[string][]reflect.Type{}
	var bases []string
	for _, t := range order {
		if _, ok := names[t]; ok {
			continue
		}
		b := baseName(t)
		if _, ok := groups[b]; !ok {
			bases = append(bases, b)
		}
		groups[b] = append(groups[b], t)
	}
	slices.Sort(bases)
	for _, b := range bases {
		ts := groups[b]
		if _, taken := used[b]; len(ts) == 1 && !taken && b != "" {
			names[ts[0]] = b
			used[b] = ts[0]
			continue
		}
		candidates := []func(reflect.Type) string{
			func(t reflect.Type) string { return join(sanitize(path.Base(t.PkgPath())), b) },
			func(t reflect.Type) string { return join(sanitize(t.PkgPath()), b) },
		}
		var chosen []string
		for _, cand := range candidates {
			chosen = chosen[:0]
			seen := map[string]bool{}
			ok := true
			for _, t := range ts {
				n := cand(t)
				if n == "" || seen[n] {
					ok = false
				}
				if _, taken := used[n]; taken {
					ok = false
				}
				seen[n] = true
				chosen = append(chosen, n)
			}
			if ok {
				break
			}
			chosen = nil
		}
		if chosen == nil {
			// Same name, same package (types local to functions): number
			// them in discovery order.
			for i, t := range ts {
				n := join(sanitize(t.PkgPath()), b)
				if n == "" {
					n = "Schema"
				}
				chosen = append(chosen, n+"_"+strconv.Itoa(i+1))
			}
		}
		for i, t := range ts {
			if prev, taken := used[chosen[i]]; taken {
				return nil, fmt.Errorf("openapi: cannot give %s and %s distinct schema names", prev, t)
			}
			names[t] = chosen[i]
			used[chosen[i]] = t
		}
	}
	return names, nil
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "." + b
}

// baseName is the type name, with import paths in generic type arguments
// shortened to package names, made safe for a component name.
func baseName(t reflect.Type) string {
	name := t.Name()
	var b strings.Builder
	tokStart := 0
	for _, c := range name {
		switch c {
		case '/':
			s := b.String()[:tokStart]
			b.Reset()
			b.WriteString(s)
			continue
		case '[', ']', ',', '*', ' ', '(', ')', ';', '{', '}':
			b.WriteRune(c)
			tokStart = b.Len()
			continue
		}
		b.WriteRune(c)
	}
	return sanitize(b.String())
}

// sanitize maps s onto the characters OpenAPI allows in component names
// ([A-Za-z0-9._-]), collapsing other runs into one underscore.
func sanitize(s string) string {
	var b strings.Builder
	under := false
	for _, c := range s {
		if ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') || c == '.' || c == '-' || c == '_' {
			b.WriteRune(c)
			under = false
			continue
		}
		if !under {
			b.WriteByte('_')
			under = true
		}
	}
	return strings.Trim(b.String(), "_")
}
