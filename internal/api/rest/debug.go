package rest

import (
	"net/http"
	"runtime/pprof"

	"github.com/coffer-kms/coffer/internal/service"
)

// debugGoroutines writes the stacks of this node's goroutines, grouped by
// identical stack (pprof's debug=1 form: function names and lines, no
// argument values, so no key material), for support bundles.
func (a *api) debugGoroutines(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.Authorize(r.Context(), service.RoleSystemAdmin, "reading the goroutine dump"); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if err := pprof.Lookup("goroutine").WriteTo(w, 1); err != nil {
		a.log.Warn("goroutine dump", "error", err)
	}
}
