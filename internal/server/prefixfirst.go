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
// (TestPrefixFirstAgreesWithMux): on is set by check once every pattern is
// registered, and stays false when another one could match.
type prefixFirst struct {
	prefix string
	h      http.Handler
	mux    http.Handler
	on     bool
}

// check turns the shortcut on when no pattern but prefix itself could
// match a path under prefix. Called before the server serves.
func (p *prefixFirst) check(patterns []string) {
	p.on = onlyPatternUnder(patterns, p.prefix)
}

// onlyPatternUnder: among patterns ("[METHOD ][HOST]/PATH"), none names a
// host and prefix is the only one that can match a path under prefix: no
// other starts with it, and none has wildcards. ("/" and the other literal
// patterns cannot: a literal pattern matches paths equal to it, or, ending
// in a slash, paths it begins.)
func onlyPatternUnder(patterns []string, prefix string) bool {
	found := false
	for _, pat := range patterns {
		if _, path, ok := strings.Cut(pat, " "); ok {
			pat = strings.TrimLeft(path, " \t")
		}
		switch {
		case !strings.HasPrefix(pat, "/"), strings.Contains(pat, "{"):
			return false
		case pat == prefix:
			found = true
		case strings.HasPrefix(pat, prefix):
			return false
		}
	}
	return found
}

func (p *prefixFirst) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.on && p.direct(r) {
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
func (pf *prefixFirst) direct(r *http.Request) bool {
	p := r.URL.Path
	return r.Method != http.MethodConnect && r.URL.RawPath == "" && strings.HasPrefix(p, pf.prefix) &&
		!strings.Contains(p, "//") && !strings.Contains(p, "/.")
}
