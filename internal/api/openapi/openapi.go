// Package openapi builds an OpenAPI 3.0.3 document from a route table,
// deriving request and response schemas from Go types by reflection.
//
// Schemas follow encoding/json: properties come from json tags (fields
// tagged "-" are skipped, embedded structs are flattened, fields without
// omitempty/omitzero are required), named struct types become components
// under #/components/schemas named after the Go type (qualified by package
// where two types share a name), pointers become nullable, []byte is a
// base64 string, time.Time a date-time string and time.Duration an
// integer (nanoseconds). An optional `doc:"..."` struct tag becomes the
// property's description.
//
// The shared error body type is always named "Error" in the document.
package openapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Param is a query or path parameter.
type Param struct {
	Name        string
	In          string // "query" (default) or "path" (path params are also derived automatically from the pattern)
	Type        string // "string" (default), "integer", "number", "boolean"
	Description string
	Required    bool
}

// Route is one API route. Method and Pattern are in Go 1.22 net/http
// ServeMux style: Pattern "/api/v1/objects/{id}" or
// "/api/v1/secrets/{name...}" (the "..." wildcard becomes {name} in the
// document; a trailing "{$}" is dropped).
type Route struct {
	Method      string // GET, POST, PUT, PATCH, DELETE (also HEAD, OPTIONS, TRACE)
	Pattern     string
	OperationID string // unique, e.g. "createObject"
	Summary     string
	Description string
	Tags        []string
	Auth        bool // needs a bearer token (security scheme "bearer": http bearer)
	Query       []Param
	Request     any    // nil or a zero value of the request body type, e.g. CreateObjectRequest{}
	Response    any    // nil or a zero value of the 2xx response body type
	Status      int    // success status, default 200
	Errors      []int  // error statuses this route can return (all use the shared Error schema)
	RawResponse string // if non-empty, the response content type (e.g. "text/plain") with a string schema instead of Response
}

// Info is the document's info object.
type Info struct{ Title, Version, Description string }

// ErrorSchemaName is the component name of the shared error body.
const ErrorSchemaName = "Error"

// methodOrder is the order of operations within a path item.
var methodOrder = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// Build returns the indented, deterministic (stable key order,
// byte-identical across runs) JSON document. errorSchema is a zero value
// of the shared error body type, referenced by every error response.
func Build(info Info, routes []Route, errorSchema any) ([]byte, error) {
	if info.Title == "" || info.Version == "" {
		return nil, errors.New("openapi: Info.Title and Info.Version are required")
	}
	g := newGenerator()
	pinned := map[reflect.Type]string{}
	var errType reflect.Type
	if errorSchema != nil {
		errType = reflect.TypeOf(errorSchema)
		for errType.Kind() == reflect.Pointer {
			errType = errType.Elem()
		}
		pinned[errType] = ErrorSchemaName
		if err := g.component(errType); err != nil {
			return nil, fmt.Errorf("openapi: error schema: %w", err)
		}
	}

	items := map[string][]opEntry{} // OpenAPI path -> operations
	byShape := map[string]string{}  // path with names erased -> OpenAPI path
	routeAt := map[string]int{}     // "METHOD shape" -> route index
	operationAt := map[string]int{} // operationId -> route index
	for i, r := range routes {
		where := fmt.Sprintf("openapi: route %d (%s %s)", i, r.Method, r.Pattern)
		op, p, err := buildOperation(g, r, errType != nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		method := strings.ToUpper(r.Method)
		shape := erasedShape(p)
		if prev, ok := byShape[shape]; ok && prev != p {
			return nil, fmt.Errorf("%s: path %s differs from %s only in parameter names", where, p, prev)
		}
		byShape[shape] = p
		key := method + " " + shape
		if j, ok := routeAt[key]; ok {
			return nil, fmt.Errorf("%s: duplicate route, conflicts with route %d (%s %s)", where, j, routes[j].Method, routes[j].Pattern)
		}
		routeAt[key] = i
		if r.OperationID != "" {
			if j, ok := operationAt[r.OperationID]; ok {
				return nil, fmt.Errorf("%s: duplicate operationId %q (also route %d)", where, r.OperationID, j)
			}
			operationAt[r.OperationID] = i
		}
		items[p] = append(items[p], opEntry{strings.ToLower(method), op})
	}

	names, err := componentNames(g.order, pinned)
	if err != nil {
		return nil, err
	}
	// Operations were built with placeholder schemas; render them now
	// that component names are known.
	for _, ops := range items {
		for _, e := range ops {
			resolve(e.op, names)
		}
	}

	doc := newObj().set("openapi", "3.0.3")
	in := newObj().set("title", info.Title)
	if info.Description != "" {
		in.set("description", info.Description)
	}
	in.set("version", info.Version)
	doc.set("info", in)

	paths := newObj()
	keys := make([]string, 0, len(items))
	for p := range items {
		keys = append(keys, p)
	}
	slices.Sort(keys)
	for _, p := range keys {
		ops := items[p]
		slices.SortFunc(ops, func(a, b opEntry) int {
			return slices.Index(methodOrder, a.method) - slices.Index(methodOrder, b.method)
		})
		item := newObj()
		for _, e := range ops {
			item.set(e.method, e.op)
		}
		paths.set(p, item)
	}
	doc.set("paths", paths)

	schemas := newObj()
	compNames := make([]string, 0, len(names))
	byName := map[string]reflect.Type{}
	for t, n := range names {
		compNames = append(compNames, n)
		byName[n] = t
	}
	slices.Sort(compNames)
	for _, n := range compNames {
		schemas.set(n, g.comps[byName[n]].object(names))
	}
	comps := newObj().set("schemas", schemas)
	comps.set("securitySchemes", newObj().set("bearer", newObj().set("type", "http").set("scheme", "bearer")))
	doc.set("components", comps)
	return render(doc)
}

type opEntry struct {
	method string
	op     *obj
}

// pending is a schema inside an operation, rendered once component names
// are known.
type pending struct{ s *schema }

// resolve replaces pending schemas under v with their rendered form.
func resolve(v any, names map[reflect.Type]string) any {
	switch v := v.(type) {
	case pending:
		return v.s.object(names)
	case *obj:
		for _, k := range v.keys {
			v.vals[k] = resolve(v.vals[k], names)
		}
	case []any:
		for i := range v {
			v[i] = resolve(v[i], names)
		}
	}
	return v
}

func buildOperation(g *generator, r Route, haveErr bool) (*obj, string, error) {
	method := strings.ToUpper(r.Method)
	if !slices.Contains(methodOrder, strings.ToLower(method)) {
		return nil, "", fmt.Errorf("unsupported method %q", r.Method)
	}
	p, pathParams, err := parsePattern(r.Pattern)
	if err != nil {
		return nil, "", err
	}
	op := newObj()
	if len(r.Tags) > 0 {
		for _, t := range r.Tags {
			if t == "" {
				return nil, "", errors.New("empty tag")
			}
		}
		op.set("tags", slices.Clone(r.Tags))
	}
	if r.Summary != "" {
		op.set("summary", r.Summary)
	}
	if r.Description != "" {
		op.set("description", r.Description)
	}
	if r.OperationID != "" {
		op.set("operationId", r.OperationID)
	}
	if r.Auth {
		op.set("security", []any{newObj().set("bearer", []any{})})
	}

	params, err := parameters(pathParams, r.Query)
	if err != nil {
		return nil, "", err
	}
	if len(params) > 0 {
		op.set("parameters", params)
	}

	if r.Request != nil {
		s, err := g.gen(derefType(reflect.TypeOf(r.Request)))
		if err != nil {
			return nil, "", fmt.Errorf("request: %w", err)
		}
		op.set("requestBody", newObj().
			set("required", true).
			set("content", newObj().set("application/json", newObj().set("schema", pending{s}))))
	}

	status := r.Status
	if status == 0 {
		status = http.StatusOK
	}
	if status < 100 || status > 399 {
		return nil, "", fmt.Errorf("success status %d out of range 100-399", status)
	}
	ok := newObj().set("description", statusText(status))
	switch {
	case r.Response != nil && r.RawResponse != "":
		return nil, "", errors.New("both Response and RawResponse set")
	case (r.Response != nil || r.RawResponse != "") && (status == http.StatusNoContent || status == http.StatusNotModified || status < 200):
		return nil, "", fmt.Errorf("status %d cannot have a response body", status)
	case r.Response != nil:
		s, err := g.gen(derefType(reflect.TypeOf(r.Response)))
		if err != nil {
			return nil, "", fmt.Errorf("response: %w", err)
		}
		ok.set("content", newObj().set("application/json", newObj().set("schema", pending{s})))
	case r.RawResponse != "":
		ok.set("content", newObj().set(r.RawResponse, newObj().set("schema", newObj().set("type", "string"))))
	}

	codes := []int{status}
	for _, c := range r.Errors {
		if c < 400 || c > 599 {
			return nil, "", fmt.Errorf("error status %d out of range 400-599", c)
		}
		if slices.Contains(codes, c) {
			return nil, "", fmt.Errorf("status %d listed twice", c)
		}
		codes = append(codes, c)
	}
	if len(r.Errors) > 0 && !haveErr {
		return nil, "", errors.New("route lists error statuses but Build was given no error schema")
	}
	slices.Sort(codes)
	responses := newObj()
	for _, c := range codes {
		if c == status {
			responses.set(strconv.Itoa(c), ok)
			continue
		}
		responses.set(strconv.Itoa(c), newObj().
			set("description", statusText(c)).
			set("content", newObj().set("application/json", newObj().
				set("schema", newObj().set("$ref", "#/components/schemas/"+ErrorSchemaName)))))
	}
	op.set("responses", responses)
	return op, p, nil
}

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func statusText(code int) string {
	if s := http.StatusText(code); s != "" {
		return s
	}
	return "Status " + strconv.Itoa(code)
}

var paramTypes = []string{"string", "integer", "number", "boolean"}

// parameters merges the pattern's path parameters with the declared ones:
// path parameters first (in pattern order), then query parameters in the
// order given.
func parameters(pathParams []string, declared []Param) ([]any, error) {
	path := map[string]*Param{}
	ordered := make([]*Param, 0, len(pathParams))
	for _, n := range pathParams {
		p := &Param{Name: n, In: "path", Type: "string", Required: true}
		path[n] = p
		ordered = append(ordered, p)
	}
	explicitPath := map[string]bool{}
	query := map[string]bool{}
	var queries []Param
	for _, d := range declared {
		if d.Name == "" {
			return nil, errors.New("parameter without a name")
		}
		if d.Type == "" {
			d.Type = "string"
		}
		if !slices.Contains(paramTypes, d.Type) {
			return nil, fmt.Errorf("parameter %q: unsupported type %q", d.Name, d.Type)
		}
		switch d.In {
		case "path":
			p, ok := path[d.Name]
			if !ok {
				return nil, fmt.Errorf("path parameter %q is not in the pattern", d.Name)
			}
			if explicitPath[d.Name] {
				return nil, fmt.Errorf("path parameter %q declared twice", d.Name)
			}
			explicitPath[d.Name] = true
			p.Type, p.Description = d.Type, d.Description
		case "", "query":
			if query[d.Name] {
				return nil, fmt.Errorf("query parameter %q declared twice", d.Name)
			}
			query[d.Name] = true
			d.In = "query"
			queries = append(queries, d)
		default:
			return nil, fmt.Errorf("parameter %q: unsupported location %q", d.Name, d.In)
		}
	}
	var out []any
	add := func(p Param) {
		o := newObj().set("name", p.Name).set("in", p.In)
		if p.Description != "" {
			o.set("description", p.Description)
		}
		if p.Required || p.In == "path" {
			o.set("required", true)
		}
		o.set("schema", newObj().set("type", p.Type))
		out = append(out, o)
	}
	for _, p := range ordered {
		add(*p)
	}
	for _, p := range queries {
		add(p)
	}
	return out, nil
}

// parsePattern checks a ServeMux path pattern and returns its OpenAPI
// form and its wildcard names in order.
func parsePattern(pattern string) (string, []string, error) {
	if !strings.HasPrefix(pattern, "/") {
		return "", nil, fmt.Errorf("pattern %q must start with / (host patterns and methods in the pattern are not supported)", pattern)
	}
	if strings.ContainsAny(pattern, " \t") {
		return "", nil, fmt.Errorf("pattern %q contains white space (put the method in Route.Method)", pattern)
	}
	segs := strings.Split(pattern[1:], "/")
	var names []string
	var b strings.Builder
	for i, seg := range segs {
		last := i == len(segs)-1
		if !strings.ContainsAny(seg, "{}") {
			b.WriteString("/" + seg)
			continue
		}
		if len(seg) < 2 || seg[0] != '{' || seg[len(seg)-1] != '}' {
			return "", nil, fmt.Errorf("pattern %q: wildcard must be a whole segment", pattern)
		}
		name := seg[1 : len(seg)-1]
		if name == "$" {
			if !last {
				return "", nil, fmt.Errorf("pattern %q: {$} must be last", pattern)
			}
			b.WriteString("/")
			continue
		}
		if n, ok := strings.CutSuffix(name, "..."); ok {
			if !last {
				return "", nil, fmt.Errorf("pattern %q: {%s} must be last", pattern, name)
			}
			name = n
		}
		if !isIdent(name) {
			return "", nil, fmt.Errorf("pattern %q: bad wildcard name %q", pattern, name)
		}
		if slices.Contains(names, name) {
			return "", nil, fmt.Errorf("pattern %q: duplicate wildcard %q", pattern, name)
		}
		names = append(names, name)
		b.WriteString("/{" + name + "}")
	}
	return b.String(), names, nil
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !unicode.IsLetter(c) && c != '_' && (i == 0 || !unicode.IsDigit(c)) {
			return false
		}
	}
	return true
}

// erasedShape replaces parameter names in an OpenAPI path with "{}", so
// paths OpenAPI considers identical compare equal.
func erasedShape(p string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(p, '{')
		if i < 0 {
			b.WriteString(p)
			return b.String()
		}
		j := strings.IndexByte(p[i:], '}')
		if j < 0 {
			b.WriteString(p)
			return b.String()
		}
		b.WriteString(p[:i] + "{}")
		p = p[i+j+1:]
	}
}

// openAPIPath converts a pattern to its OpenAPI form, best effort for
// patterns parsePattern rejects.
func openAPIPath(pattern string) string {
	if p, _, err := parsePattern(pattern); err == nil {
		return p
	}
	return strings.ReplaceAll(pattern, "...}", "}")
}

// Paths returns "METHOD /path" strings (OpenAPI form) of a document,
// sorted, for drift tests.
func Paths(doc []byte) ([]string, error) {
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	if d.Paths == nil {
		return nil, errors.New("openapi: document has no paths object")
	}
	var out []string
	for p, item := range d.Paths {
		for m := range item {
			if slices.Contains(methodOrder, m) {
				out = append(out, strings.ToUpper(m)+" "+p)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// RoutePaths returns the same strings as Paths for a route table.
func RoutePaths(routes []Route) []string {
	out := make([]string, 0, len(routes))
	for _, r := range routes {
		out = append(out, strings.ToUpper(r.Method)+" "+openAPIPath(r.Pattern))
	}
	slices.Sort(out)
	return out
}
