package rest

import (
	"encoding/json"
	"net/http"
)

// ndjson answers a long operation (backup verification, archiving now) as
// JSON lines when the client asks for ?progress=ndjson: a
// {"progress":{...}} line at each step, flushed, then the final answer or
// {"error":{status,code,message}}. Nothing is written before the first
// progress line, so an operation refused before it starts gets the usual
// answer with its status.
type ndjson struct {
	a       *api
	w       http.ResponseWriter
	r       *http.Request
	enc     *json.Encoder
	rc      *http.ResponseController
	started bool
}

func (a *api) ndjson(w http.ResponseWriter, r *http.Request) *ndjson {
	return &ndjson{a: a, w: w, r: r, enc: json.NewEncoder(w), rc: http.NewResponseController(w)}
}

// progress writes one progress line (the first also starts the answer).
func (s *ndjson) progress(p any) {
	if !s.started {
		s.started = true
		s.w.Header().Set("Content-Type", "application/x-ndjson")
		s.w.Header().Set("Cache-Control", "no-store")
		s.w.WriteHeader(http.StatusOK)
	}
	s.enc.Encode(map[string]any{"progress": p}) // #nosec G104 -- progress values always encode, so an error is a failed write: the client has gone; nothing to tell it
	s.rc.Flush()                                // #nosec G104 -- a failed flush is a client that has gone (the next write fails the same way); nothing to tell it
}

// finish ends the answer with final, or with err as an error line.
func (s *ndjson) finish(final any, err error) {
	switch {
	case !s.started:
		s.a.reply(s.w, s.r, http.StatusOK, final, err)
	case err != nil:
		status, code, msg := s.a.classify(s.r, err)
		if n, ok := s.w.(errNoter); ok {
			n.noteError(code, msg)
		}
		var line struct {
			Error struct {
				Status  int    `json:"status"`
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		line.Error.Status, line.Error.Code, line.Error.Message = status, code, msg
		s.enc.Encode(line) // #nosec G104 -- the error line always encodes, so an error is a failed write: the client has gone; nothing to tell it
	default:
		s.enc.Encode(final) // #nosec G104 -- answer types always encode, so an error is a failed write: the client has gone; nothing to tell it
	}
}
