package rest

import (
	"net/http"

	"github.com/coffer-kms/coffer/internal/service"
)

// TokenRequest asks for a join token.
type TokenRequest struct {
	TTL string `json:"ttl,omitempty" doc:"how long it may be used, e.g. 30m (default 1h, at most 168h)"`
}

// JoinLocalRequest joins this (uninitialised) node to a cluster.
type JoinLocalRequest struct {
	URL        string `json:"url" doc:"https address of a cluster member"`
	Token      string `json:"token" doc:"from coffer cluster token create on the cluster"`
	Passphrase string `json:"passphrase" doc:"this node's keystore passphrase (write-only)"`
}

// PromoteRequest names the node to make a voter.
type PromoteRequest struct {
	NodeID string `json:"node_id"`
}

// SwitchoverRequest names the next leader ("" : the most up-to-date voter).
type SwitchoverRequest struct {
	To string `json:"to,omitempty"`
}

// SwitchoverResult names the new leader.
type SwitchoverResult struct {
	Leader string `json:"leader"`
}

func (a *api) clusterCA(w http.ResponseWriter, r *http.Request) {
	b, err := a.svc.Cluster.CACertPEM()
	if err != nil {
		a.fail(w, r, service.ErrNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(b) // #nosec G104 -- the client has gone; nothing to tell it
}

func (a *api) clusterJoin(w http.ResponseWriter, r *http.Request) {
	var req service.JoinRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	resp, err := a.svc.Cluster.AdmitNode(r.Context(), req)
	defer clear(resp.MasterKeys)
	a.reply(w, r, http.StatusOK, resp, err)
}

func (a *api) clusterJoinLocal(w http.ResponseWriter, r *http.Request) {
	var req JoinLocalRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	id := service.Identity{Name: "anonymous"}
	if isLocal(r) {
		id = service.LocalRoot()
	}
	pass := secret(req.Passphrase)
	defer clear(pass)
	err := a.svc.Cluster.JoinCluster(r.Context(), id, req.URL, req.Token, pass)
	a.reply(w, r, http.StatusOK, a.svc.Status(), err)
}

func (a *api) clusterToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if err := decodeOptional(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	ttl, err := optionalDuration("ttl", req.TTL)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	t, err := a.svc.Cluster.CreateJoinToken(r.Context(), ttl)
	a.reply(w, r, http.StatusOK, t, err)
}

func (a *api) clusterPromote(w http.ResponseWriter, r *http.Request) {
	var req PromoteRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	a.reply(w, r, http.StatusOK, map[string]string{"promoted": req.NodeID}, a.svc.Cluster.Promote(r.Context(), req.NodeID))
}

func (a *api) clusterInit(w http.ResponseWriter, r *http.Request) {
	st, err := a.svc.Cluster.InitCluster(r.Context())
	a.reply(w, r, http.StatusOK, st, err)
}

func (a *api) clusterStatus(w http.ResponseWriter, r *http.Request) {
	st, err := a.svc.Cluster.ClusterStatus(r.Context())
	a.reply(w, r, http.StatusOK, st, err)
}

func (a *api) clusterSwitchover(w http.ResponseWriter, r *http.Request) {
	var req SwitchoverRequest
	if err := decodeOptional(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	to, err := a.svc.Cluster.Switchover(r.Context(), req.To)
	a.reply(w, r, http.StatusOK, SwitchoverResult{Leader: to}, err)
}

func (a *api) clusterRemove(w http.ResponseWriter, r *http.Request) {
	a.reply(w, r, http.StatusOK, map[string]string{"removed": r.PathValue("id")}, a.svc.Cluster.RemoveNode(r.Context(), r.PathValue("id")))
}
