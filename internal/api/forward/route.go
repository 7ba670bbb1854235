package forward

import (
	"net/http"
	"slices"
)

// Placement is where a route is served in a cluster.
type Placement int

const (
	// Leader: a write (or a linearizable read) goes to the leader; a read
	// is served where it arrives once the node has caught up with it.
	Leader Placement = iota + 1
	// NodeView: a read of this node's own view (its status, journal, audit
	// log, the backup it runs): served where it arrives, even while the
	// node catches up with the leader.
	NodeView
	// NodeLocal: about this node itself (open, seal, health, its journal
	// files): served where it arrives, never forwarded.
	NodeLocal
)

func (p Placement) String() string {
	switch p {
	case Leader:
		return "leader"
	case NodeView:
		return "node-view"
	case NodeLocal:
		return "node-local"
	}
	return "unset"
}

// Facts are what a transport's route table says of each route; the table
// is their one source, for the transport (authentication, audit) and for
// forwarding (placement).
type Facts struct {
	// Auth: the caller must authenticate.
	Auth bool
	// Placement: where the route is served in a cluster.
	Placement Placement
	// Audit is the action the route's audit records name; "" for a route
	// never audited (polled often: health, the API document).
	Audit string
}

// Router tells the facts of the route a request is for; ok is false when
// no route matches.
type Router interface {
	RouteFacts(r *http.Request) (f Facts, ok bool)
}

// RoutedHandler is an http.Handler that tells its routes' facts.
type RoutedHandler interface {
	http.Handler
	Router
}

// placement is where r's route is served: Leader when no route matches.
func placement(rt Router, r *http.Request) Placement {
	if rt != nil {
		if f, ok := rt.RouteFacts(r); ok && f.Placement != 0 {
			return f.Placement
		}
	}
	return Leader
}

// WithFacts is h carrying the facts of its route (a Router), for a
// ServeMux's handlers.
func WithFacts(f Facts, h http.Handler) http.Handler { return routed{Handler: h, facts: f} }

type routed struct {
	http.Handler
	facts Facts
}

func (h routed) RouteFacts(*http.Request) (Facts, bool) { return h.facts, true }

// ServeMux is an http.ServeMux whose handlers carry their route's facts
// (WithFacts, or another Router such as a nested ServeMux): the Router of
// the route a request matches.
type ServeMux struct {
	*http.ServeMux
	patterns *[]string
}

// NewServeMux returns an empty ServeMux.
func NewServeMux() ServeMux { return ServeMux{http.NewServeMux(), new([]string)} }

// Handle registers h for pattern, as http.ServeMux does, and remembers the
// pattern (Patterns).
func (m ServeMux) Handle(pattern string, h http.Handler) {
	m.ServeMux.Handle(pattern, h)
	*m.patterns = append(*m.patterns, pattern)
}

// HandleFunc is Handle for a function.
func (m ServeMux) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(f))
}

// Patterns returns the patterns registered so far, in order. Not safe
// beside a registration.
func (m ServeMux) Patterns() []string { return slices.Clone(*m.patterns) }

// RouteFacts asks the handler r matches, without serving it.
func (m ServeMux) RouteFacts(r *http.Request) (Facts, bool) {
	h, _ := m.Handler(r)
	if rt, ok := h.(Router); ok {
		return rt.RouteFacts(r)
	}
	return Facts{}, false
}
