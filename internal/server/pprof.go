package server

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof" // #nosec G108 -- served only on the opt-in loopback listener below (debug.pprof), never on the API mux
	"time"
)

// startPProf serves net/http/pprof on addr (a loopback address, checked by
// config.Validate) when debug.pprof is on, and returns the listener's
// address. The API listeners never serve it.
func (s *Server) startPProf(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("debug.pprof_listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.pprofSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.PProfAddr = ln.Addr().String()
	go s.pprofSrv.Serve(ln)
	s.Log.Warn("debug.pprof is on: profiles served on a loopback listener; turn it off after profiling", "addr", s.PProfAddr)
	return nil
}
