package openapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/api/openapi/internal/other"
)

type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type Meta struct {
	Created time.Time         `json:"created" doc:"Creation time."`
	Labels  map[string]string `json:"labels,omitempty"`
}

type Node struct {
	Name     string  `json:"name"`
	Children []*Node `json:"children,omitempty"`
	Parent   *Node   `json:"parent"`
}

type Item struct {
	ID string `json:"id"`
}

type Blob struct {
	Meta                     // embedded: flattened
	Data     []byte          `json:"data" doc:"Payload."`
	TTL      time.Duration   `json:"ttl,omitempty"`
	Size     uint64          `json:"size"`
	Ratio    float64         `json:"ratio,omitempty"`
	Small    int32           `json:"small,omitempty"`
	Ok       bool            `json:"ok"`
	Owner    *Item           `json:"owner,omitempty" doc:"Who owns it."`
	Note     *string         `json:"note"`
	Items    []Item          `json:"items"`
	ByName   map[string]Item `json:"by_name"`
	Extra    any             `json:"extra,omitempty"`
	Raw      json.RawMessage `json:"raw,omitempty"`
	Tree     Node            `json:"tree"`
	Pair     [2]string       `json:"pair"`
	Count    int64           `json:"count,string"`
	Secret   string          `json:"-"`
	internal string          // unexported: skipped
	Untagged string
	Other    other.Item `json:"other"`
}

type CreateReq struct {
	Name string `json:"name"`
	Blob Blob   `json:"blob"`
}

type tree map[string]tree

type TreeHolder struct {
	T tree `json:"t"`
}

func testRoutes() []Route {
	return []Route{
		{Method: "GET", Pattern: "/api/v1/sys/health", OperationID: "health", Summary: "Health", Tags: []string{"sys"}, Response: Meta{}},
		{Method: "POST", Pattern: "/api/v1/blobs", OperationID: "createBlob", Auth: true, Request: CreateReq{}, Response: &Blob{}, Status: 201, Errors: []int{400, 401, 409}},
		{Method: "GET", Pattern: "/api/v1/blobs/{id}", OperationID: "getBlob", Auth: true,
			Query:    []Param{{Name: "id", In: "path", Description: "Blob id."}, {Name: "full", Type: "boolean", Description: "Include data."}, {Name: "limit", In: "query", Type: "integer", Required: true}},
			Response: Blob{}, Errors: []int{404, 401}},
		{Method: "DELETE", Pattern: "/api/v1/blobs/{id}", OperationID: "deleteBlob", Auth: true, Status: 204, Errors: []int{404}},
		{Method: "PUT", Pattern: "/api/v1/secrets/{name...}", OperationID: "putSecret", Auth: true, Request: map[string]string{}, Status: 204},
		{Method: "GET", Pattern: "/api/v1/secrets/{name...}", OperationID: "getSecret", Auth: true, RawResponse: "text/plain"},
		{Method: "GET", Pattern: "/api/v1/trees", OperationID: "trees", Response: []TreeHolder{}},
		{Method: "GET", Pattern: "/api/v1/other", OperationID: "otherItem", Response: other.Wrapper{}},
	}
}

func build(t *testing.T) ([]byte, map[string]any) {
	t.Helper()
	doc, err := Build(Info{Title: "Coffer", Version: "1", Description: "KMS <api> & more"}, testRoutes(), ErrorBody{})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, doc)
	}
	return doc, m
}

// get walks a decoded document by keys ("/" separated; "~1" stands for "/").
func get(t *testing.T, v any, p string) any {
	t.Helper()
	for _, k := range strings.Split(p, "/") {
		k = strings.ReplaceAll(k, "~1", "/")
		switch c := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = c[k]; !ok {
				t.Fatalf("%s: no key %q", p, k)
			}
		case []any:
			i := 0
			for _, ch := range k {
				i = i*10 + int(ch-'0')
			}
			if i >= len(c) {
				t.Fatalf("%s: index %d out of range", p, i)
			}
			v = c[i]
		default:
			t.Fatalf("%s: cannot index %T with %q", p, v, k)
		}
	}
	return v
}

func assertJSON(t *testing.T, got any, want string) {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	if !reflect.DeepEqual(got, w) {
		g, _ := json.Marshal(got)
		t.Errorf("got  %s\nwant %s", g, want)
	}
}

func TestStructure(t *testing.T) {
	_, m := build(t)
	assertJSON(t, m["openapi"], `"3.0.3"`)
	assertJSON(t, m["info"], `{"title":"Coffer","version":"1","description":"KMS <api> & more"}`)
	assertJSON(t, get(t, m, "components/securitySchemes"), `{"bearer":{"type":"http","scheme":"bearer"}}`)
	if _, ok := get(t, m, "paths").(map[string]any); !ok {
		t.Fatal("paths is not an object")
	}
	var names []string
	for n := range get(t, m, "components/schemas").(map[string]any) {
		names = append(names, n)
	}
	slices.Sort(names)
	// Item clashes with other.Item, so both are qualified by package.
	want := []string{"Blob", "CreateReq", "Error", "Meta", "Node", "TreeHolder", "Wrapper", "openapi.Item", "other.Item", "tree"}
	if !slices.Equal(names, want) {
		t.Errorf("schemas %v, want %v", names, want)
	}
}

func TestSchemas(t *testing.T) {
	_, m := build(t)
	s := func(p string) any { return get(t, m, "components/schemas/"+p) }

	assertJSON(t, s("Error"), `{"type":"object","properties":{"error":{"type":"object",
		"properties":{"code":{"type":"string"},"message":{"type":"string"}},"required":["code","message"]}},"required":["error"]}`)
	assertJSON(t, s("Meta"), `{"type":"object","properties":{
		"created":{"type":"string","format":"date-time","description":"Creation time."},
		"labels":{"type":"object","additionalProperties":{"type":"string"}}},"required":["created"]}`)
	assertJSON(t, s("Node"), `{"type":"object","properties":{
		"name":{"type":"string"},
		"children":{"type":"array","items":{"allOf":[{"$ref":"#/components/schemas/Node"}],"nullable":true}},
		"parent":{"allOf":[{"$ref":"#/components/schemas/Node"}],"nullable":true}},
		"required":["name","parent"]}`)
	assertJSON(t, s("Blob/properties"), `{
		"created":{"type":"string","format":"date-time","description":"Creation time."},
		"labels":{"type":"object","additionalProperties":{"type":"string"}},
		"data":{"type":"string","format":"byte","description":"Payload."},
		"ttl":{"type":"integer","format":"int64"},
		"size":{"type":"integer","format":"int64","minimum":0},
		"ratio":{"type":"number","format":"double"},
		"small":{"type":"integer","format":"int32"},
		"ok":{"type":"boolean"},
		"owner":{"allOf":[{"$ref":"#/components/schemas/openapi.Item"}],"description":"Who owns it.","nullable":true},
		"note":{"type":"string","nullable":true},
		"items":{"type":"array","items":{"$ref":"#/components/schemas/openapi.Item"}},
		"by_name":{"type":"object","additionalProperties":{"$ref":"#/components/schemas/openapi.Item"}},
		"extra":{},
		"raw":{},
		"tree":{"$ref":"#/components/schemas/Node"},
		"pair":{"type":"array","items":{"type":"string"},"minItems":2,"maxItems":2},
		"count":{"type":"string","format":"int64"},
		"Untagged":{"type":"string"},
		"other":{"$ref":"#/components/schemas/other.Item"}}`)
	assertJSON(t, s("Blob/required"), `["created","data","size","ok","note","items","by_name","tree","pair","count","Untagged","other"]`)
	assertJSON(t, s("other.Item"), `{"type":"object","properties":{"sku":{"type":"string"}},"required":["sku"]}`)
	assertJSON(t, s("Wrapper"), `{"type":"object","properties":{"item":{"$ref":"#/components/schemas/other.Item"}},"required":["item"]}`)
	// A recursive named map becomes a component instead of looping.
	assertJSON(t, s("tree"), `{"type":"object","additionalProperties":{"$ref":"#/components/schemas/tree"}}`)
	assertJSON(t, s("TreeHolder/properties/t"), `{"$ref":"#/components/schemas/tree"}`)
}

func TestOperations(t *testing.T) {
	_, m := build(t)
	op := func(p string) any { return get(t, m, "paths/"+p) }

	assertJSON(t, op("~1api~1v1~1sys~1health/get"), `{"tags":["sys"],"summary":"Health","operationId":"health",
		"responses":{"200":{"description":"OK","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Meta"}}}}}}`)
	assertJSON(t, op("~1api~1v1~1blobs/post"), `{"operationId":"createBlob","security":[{"bearer":[]}],
		"requestBody":{"required":true,"content":{"application/json":{"schema":{"$ref":"#/components/schemas/CreateReq"}}}},
		"responses":{
			"201":{"description":"Created","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Blob"}}}},
			"400":{"description":"Bad Request","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Error"}}}},
			"401":{"description":"Unauthorized","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Error"}}}},
			"409":{"description":"Conflict","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Error"}}}}}}`)
	assertJSON(t, op("~1api~1v1~1blobs~1{id}/get/parameters"), `[
		{"name":"id","in":"path","description":"Blob id.","required":true,"schema":{"type":"string"}},
		{"name":"full","in":"query","description":"Include data.","schema":{"type":"boolean"}},
		{"name":"limit","in":"query","required":true,"schema":{"type":"integer"}}]`)
	assertJSON(t, op("~1api~1v1~1blobs~1{id}/delete/responses"), `{"204":{"description":"No Content"},
		"404":{"description":"Not Found","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Error"}}}}}`)
	assertJSON(t, op("~1api~1v1~1secrets~1{name}/put"), `{"operationId":"putSecret","security":[{"bearer":[]}],
		"parameters":[{"name":"name","in":"path","required":true,"schema":{"type":"string"}}],
		"requestBody":{"required":true,"content":{"application/json":{"schema":{"type":"object","additionalProperties":{"type":"string"}}}}},
		"responses":{"204":{"description":"No Content"}}}`)
	assertJSON(t, op("~1api~1v1~1secrets~1{name}/get/responses"), `{"200":{"description":"OK","content":{"text/plain":{"schema":{"type":"string"}}}}}`)
	assertJSON(t, op("~1api~1v1~1trees/get/responses/200/content/application~1json/schema"),
		`{"type":"array","items":{"$ref":"#/components/schemas/TreeHolder"}}`)
	if _, ok := get(t, m, "paths/~1api~1v1~1sys~1health/get").(map[string]any)["security"]; ok {
		t.Error("unauthenticated route has security")
	}
}

func TestDeterministic(t *testing.T) {
	a, _ := build(t)
	for range 5 {
		b, _ := build(t)
		if !bytes.Equal(a, b) {
			t.Fatal("two builds differ")
		}
	}
	if !bytes.HasPrefix(a, []byte("{\n  \"openapi\": \"3.0.3\",\n  \"info\": {")) {
		t.Errorf("unexpected start:\n%s", a[:min(len(a), 80)])
	}
	if !bytes.Contains(a, []byte("KMS <api> & more")) {
		t.Error("HTML characters were escaped")
	}
}

func TestPathsAgree(t *testing.T) {
	doc, _ := build(t)
	got, err := Paths(doc)
	if err != nil {
		t.Fatal(err)
	}
	want := RoutePaths(testRoutes())
	if !slices.Equal(got, want) {
		t.Errorf("Paths %v\nRoutePaths %v", got, want)
	}
	for _, p := range []string{"GET /api/v1/secrets/{name}", "PUT /api/v1/secrets/{name}", "DELETE /api/v1/blobs/{id}"} {
		if !slices.Contains(got, p) {
			t.Errorf("missing %q in %v", p, got)
		}
	}
	if !slices.IsSorted(got) || len(got) != len(testRoutes()) {
		t.Errorf("bad Paths %v", got)
	}
	if _, err := Paths([]byte(`{"openapi":"3.0.3"}`)); err == nil {
		t.Error("Paths accepted a document without paths")
	}
	if _, err := Paths([]byte(`{`)); err == nil {
		t.Error("Paths accepted invalid JSON")
	}
}

func TestPatterns(t *testing.T) {
	for _, c := range []struct {
		in, out string
		params  []string
	}{
		{"/api/v1/secrets/{name...}", "/api/v1/secrets/{name}", []string{"name"}},
		{"/a/{x}/b/{y}", "/a/{x}/b/{y}", []string{"x", "y"}},
		{"/{$}", "/", nil},
		{"/a/{$}", "/a/", nil},
		{"/files/", "/files/", nil},
	} {
		out, params, err := parsePattern(c.in)
		if err != nil || out != c.out || !slices.Equal(params, c.params) {
			t.Errorf("parsePattern(%q) = %q, %v, %v; want %q, %v", c.in, out, params, err, c.out, c.params)
		}
	}
	for _, bad := range []string{"api", "GET /a", "/a/{x...}/b", "/a/x{y}", "/a/{x}/{x}", "/a/{1x}", "/a/{$}/b", "/a/{}"} {
		if _, _, err := parsePattern(bad); err == nil {
			t.Errorf("parsePattern(%q) accepted", bad)
		}
	}
	if got := RoutePaths([]Route{{Method: "get", Pattern: "/s/{name...}"}}); !slices.Equal(got, []string{"GET /s/{name}"}) {
		t.Errorf("RoutePaths = %v", got)
	}
}

func TestErrors(t *testing.T) {
	info := Info{Title: "t", Version: "1"}
	ok := Route{Method: "GET", Pattern: "/a/{id}", OperationID: "a"}
	for name, c := range map[string]struct {
		routes []Route
		errT   any
		want   string
	}{
		"duplicate route":  {[]Route{ok, {Method: "GET", Pattern: "/a/{id}", OperationID: "b"}}, nil, "duplicate route"},
		"same shape":       {[]Route{ok, {Method: "GET", Pattern: "/a/{id...}", OperationID: "b"}}, nil, "duplicate route"},
		"param names":      {[]Route{ok, {Method: "PUT", Pattern: "/a/{key}", OperationID: "b"}}, nil, "only in parameter names"},
		"duplicate opid":   {[]Route{ok, {Method: "PUT", Pattern: "/a/{id}", OperationID: "a"}}, nil, "duplicate operationId"},
		"bad method":       {[]Route{{Method: "FETCH", Pattern: "/a"}}, nil, "unsupported method"},
		"no error schema":  {[]Route{{Method: "GET", Pattern: "/a", Errors: []int{404}}}, nil, "no error schema"},
		"bad error code":   {[]Route{{Method: "GET", Pattern: "/a", Errors: []int{200}}}, ErrorBody{}, "out of range"},
		"body on 204":      {[]Route{{Method: "GET", Pattern: "/a", Status: 204, Response: Item{}}}, nil, "cannot have a response body"},
		"both bodies":      {[]Route{{Method: "GET", Pattern: "/a", Response: Item{}, RawResponse: "text/plain"}}, nil, "both"},
		"unknown path var": {[]Route{{Method: "GET", Pattern: "/a", Query: []Param{{Name: "x", In: "path"}}}}, nil, "not in the pattern"},
		"dup query":        {[]Route{{Method: "GET", Pattern: "/a", Query: []Param{{Name: "x"}, {Name: "x"}}}}, nil, "declared twice"},
		"bad param type":   {[]Route{{Method: "GET", Pattern: "/a", Query: []Param{{Name: "x", Type: "object"}}}}, nil, "unsupported type"},
		"chan field": {[]Route{{Method: "GET", Pattern: "/a", Response: struct {
			C chan int `json:"c"`
		}{}}}, nil, "unsupported type chan int"},
		"bad map key": {[]Route{{Method: "GET", Pattern: "/a", Response: map[[2]int]string{}}}, nil, "unsupported map key"},
	} {
		_, err := Build(info, c.routes, c.errT)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want error containing %q", name, err, c.want)
		}
	}
	if _, err := Build(Info{Title: "t"}, nil, nil); err == nil {
		t.Error("missing version accepted")
	}
}

func TestEmbeddingRules(t *testing.T) {
	type Inner struct {
		A string
		B string
		C string `json:"c"`
	}
	type Inner2 struct {
		B string
		C string
	}
	type Named struct {
		X int `json:"x"`
	}
	type Outer struct {
		Inner             // A, B, c (B clashes with Inner2.B at the same depth: dropped)
		Inner2            // B, C
		*Named            // pointer embedding: flattened
		A      string     // shallower wins over Inner.A
		Tagged Inner      `json:"tagged"`
		Skip   func()     `json:"-"`
		Quoted *bool      `json:"q,string,omitempty"`
		Z      *time.Time `json:"z,omitzero"`
	}
	doc, err := Build(Info{Title: "t", Version: "1"}, []Route{{Method: "GET", Pattern: "/o", Response: Outer{}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, get(t, m, "components/schemas/Outer"), `{"type":"object","properties":{
		"c":{"type":"string"},
		"C":{"type":"string"},
		"x":{"type":"integer","format":"int64"},
		"A":{"type":"string"},
		"tagged":{"$ref":"#/components/schemas/Inner"},
		"q":{"type":"string","nullable":true},
		"z":{"type":"string","format":"date-time","nullable":true}},
		"required":["c","C","x","A","tagged"]}`)
	// Cross-check property names with what encoding/json actually emits.
	tr, now := true, time.Now()
	b, _ := json.Marshal(Outer{Named: &Named{}, Quoted: &tr, Z: &now})
	var enc map[string]any
	_ = json.Unmarshal(b, &enc)
	props := get(t, m, "components/schemas/Outer/properties").(map[string]any)
	for k := range enc {
		if _, ok := props[k]; !ok {
			t.Errorf("encoding/json emits %q, schema lacks it", k)
		}
	}
	for k := range props {
		if _, ok := enc[k]; !ok {
			t.Errorf("schema has %q, encoding/json does not emit it", k)
		}
	}
}

// A non-struct error type and an anonymous one still become "Error".
func TestErrorSchemaShapes(t *testing.T) {
	r := []Route{{Method: "GET", Pattern: "/a", Errors: []int{500}}}
	for _, e := range []any{map[string]string{}, struct {
		Msg string `json:"msg"`
	}{}, &ErrorBody{}} {
		doc, err := Build(Info{Title: "t", Version: "1"}, r, e)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		get(t, m, "components/schemas/Error")
		assertJSON(t, get(t, m, "paths/~1a/get/responses/500"),
			`{"description":"Internal Server Error","content":{"application/json":{"schema":{"$ref":"#/components/schemas/Error"}}}}`)
	}
}

func TestGenericAndLocalNames(t *testing.T) {
	type Page[T any] struct {
		Items []T `json:"items"`
	}
	doc, err := Build(Info{Title: "t", Version: "1"}, []Route{
		{Method: "GET", Pattern: "/p", Response: Page[other.Item]{}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Components struct{ Schemas map[string]any } `json:"components"`
	}
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	for n := range m.Components.Schemas {
		for _, c := range n {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", c) {
				t.Errorf("component name %q has invalid character %q", n, c)
			}
		}
	}
	if _, ok := m.Components.Schemas["Page_other.Item"]; !ok {
		t.Errorf("schemas %v", m.Components.Schemas)
	}
}

type textID [4]byte

func (textID) MarshalText() ([]byte, error) { return []byte("id"), nil }

type ptrJSON struct{ v int }

// The unexported fields exist for their shape only (the generator must skip
// Blob.internal; ptrJSON's MarshalJSON is what counts): used here so that
// staticcheck's unused-field check (U1000) has nothing to report.
var _, _ = Blob{}.internal, ptrJSON{}.v

func (*ptrJSON) MarshalJSON() ([]byte, error) { return []byte("1"), nil }

type Error struct {
	Reason string `json:"reason"`
}

func TestMarshalersAndErrorClash(t *testing.T) {
	type Resp struct {
		ID    textID   `json:"id"`
		PID   *textID  `json:"pid"`
		Val   ptrJSON  `json:"val"` // value: pointer method unused, plain struct
		Ptr   *ptrJSON `json:"ptr"` // pointer: custom JSON, shape unknown
		Num   json.Number
		Inner Error `json:"inner"`
	}
	doc, err := Build(Info{Title: "t", Version: "1"}, []Route{{Method: "GET", Pattern: "/r", Response: Resp{}, Errors: []int{500}}}, ErrorBody{})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	assertJSON(t, get(t, m, "components/schemas/Resp/properties"), `{
		"id":{"type":"string"},
		"pid":{"type":"string","nullable":true},
		"val":{"$ref":"#/components/schemas/ptrJSON"},
		"ptr":{"nullable":true},
		"Num":{"type":"number"},
		"inner":{"$ref":"#/components/schemas/openapi.Error"}}`)
	// The shared error body keeps the name "Error"; the Go type Error is qualified.
	get(t, m, "components/schemas/Error/properties/error")
	assertJSON(t, get(t, m, "components/schemas/openapi.Error"), `{"type":"object","properties":{"reason":{"type":"string"}},"required":["reason"]}`)
}

func TestLocalTypesSameName(t *testing.T) {
	a := func() any {
		type T struct {
			A int `json:"a"`
		}
		return T{}
	}()
	b := func() any {
		type T struct {
			B int `json:"b"`
		}
		return T{}
	}()
	routes := []Route{
		{Method: "GET", Pattern: "/a", Response: a},
		{Method: "GET", Pattern: "/b", Response: b},
	}
	first, err := Build(Info{Title: "t", Version: "1"}, routes, nil)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(first, &m); err != nil {
		t.Fatal(err)
	}
	pfx := "github.com_coffer-kms_coffer_internal_api_openapi.T_"
	assertJSON(t, get(t, m, "paths/~1a/get/responses/200/content/application~1json/schema"), `{"$ref":"#/components/schemas/`+pfx+`1"}`)
	assertJSON(t, get(t, m, "paths/~1b/get/responses/200/content/application~1json/schema"), `{"$ref":"#/components/schemas/`+pfx+`2"}`)
	get(t, m, "components/schemas/"+pfx+"1/properties/a")
	get(t, m, "components/schemas/"+pfx+"2/properties/b")
}
