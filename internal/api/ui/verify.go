package ui

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"
)

// verifyTimeout bounds a verification the console runs in the background.
const verifyTimeout = time.Hour

// job is a verification of a destination's backups that runs after the
// form's request ended; its page reloads until it is finished.
type job struct {
	ID       string
	User     string
	Dest     string
	Started  time.Time
	Done     any
	Total    any
	File     string
	Results  any
	Err      string
	Finished bool
}

// startVerify runs the API's verify with progress in the background and
// returns the job's id.
func (u *UI) startVerify(r *http.Request, s *sess, dest string) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("ui: random job id: %v", err))
	}
	j := &job{ID: hex.EncodeToString(b), User: s.User, Dest: dest, Started: time.Now()}
	u.mu.Lock()
	for id, old := range u.jobs {
		if old.Finished && time.Since(old.Started) > time.Hour {
			delete(u.jobs, id)
		}
	}
	u.jobs[j.ID] = j
	u.mu.Unlock()
	// The verification outlives the form's request.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), verifyTimeout)
	rec := &recorder{h: http.Header{}, line: func(m map[string]any) {
		u.mu.Lock()
		defer u.mu.Unlock()
		if p, ok := m["progress"].(map[string]any); ok {
			j.Done, j.Total, j.File = p["done"], p["total"], fmt.Sprint(p["file"])
		}
		if res, ok := m["results"]; ok {
			j.Results = res
		}
		if e, ok := m["error"].(map[string]any); ok {
			j.Err = fmt.Sprint(e["message"])
		}
	}}
	go func() {
		defer cancel()
		res := u.callWith(ctx, r, s.Token, "POST", "/api/v1/backup/destinations/"+esc(dest)+"/verify?progress=ndjson", map[string]any{"all": true}, rec)
		u.mu.Lock()
		defer u.mu.Unlock()
		if res.Status >= 400 && j.Err == "" {
			j.Err = res.Err
		}
		if j.Results == nil && res.Body != nil {
			j.Results = res.Body["results"]
		}
		j.Finished = true
	}()
	return j.ID
}

// verifyProgress shows a verification; it reloads every second until done.
func (p *page) verifyProgress() {
	p.Title, p.Nav = "Verify progress", "backups"
	p.u.mu.Lock()
	j, ok := p.u.jobs[p.q("job")]
	var view job
	if ok {
		view = *j
	}
	p.u.mu.Unlock()
	if !ok || view.User != p.s.User {
		p.Error, p.status = "no such verification", http.StatusNotFound
	} else {
		p.Data["job"] = view
		if !view.Finished {
			p.Refresh = 1
		}
	}
	p.render("verify")
}
