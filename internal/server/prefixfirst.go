package server

import (
	"net/http"
	"strings"
)

// prefixFirst serves a request for a clean path under prefix with h
// without asking mux, whose pattern matching (a walk of its routing tree
// and three allocations a request) would find h for it; every other
// request goes to mux as before. It holds only while mux has no pattern
// under prefix other than prefix itself and no host patterns
// (TestPrefixFirstAgreesWithMux registers the server's patterns).
type prefixFirst struct {
	prefix string
	h      http.Handler
	mux    http.Handler
}

func (p prefixFirst) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.direct(r) {
		r.Pattern = p.prefix
		p.h.ServeHTTP(w, r)
		return
	}
	p.mux.ServeHTTP(w, r)
}

// direct: r is for a path under prefix that ServeMux serves as it is: no
// escaped form of its own (matched segment by segment, unescaped), nothing
// its path cleaning would redirect ("//", "/." for "." and ".."
// segments, conservatively any segment starting with a dot), and not a
// CONNECT (matched on its host).
func (pf prefixFirst) direct(r *http.Request) bool {
	p := r.URL.Path
	return r.Method != http.MethodConnect && r.URL.RawPath == "" && strings.HasPrefix(p, pf.prefix) &&
		!strings.Contains(p, "//") && !strings.Contains(p, "/.")
}
