package peer

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/api/forward"
	"github.com/coffer-kms/coffer/internal/service"
)

// trustAll is the client TLS of these tests: the service decides the trust
// of real calls; here only the requests and answers matter.
func trustAll() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } // #nosec G402 -- test server with a throwaway certificate

func TestPromoteIsTheNodesOwnCall(t *testing.T) {
	var got struct {
		path, header, nodeID string
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]string
		json.NewDecoder(r.Body).Decode(&b)
		got.path, got.header, got.nodeID = r.URL.Path, r.Header.Get(forward.HeaderNodeCall), b["node_id"]
	}))
	defer srv.Close()
	if err := New().Promote(context.Background(), srv.URL+"/", trustAll(), "node-1"); err != nil {
		t.Fatal(err)
	}
	if got.path != "/api/v1/cluster/promote" || got.header != "1" || got.nodeID != "node-1" {
		t.Fatalf("promotion request: %+v", got)
	}
}

func TestPromoteRefusedNamesTheAnswer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not the leader", http.StatusConflict)
	}))
	defer srv.Close()
	err := New().Promote(context.Background(), srv.URL, trustAll(), "node-1")
	if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "not the leader") {
		t.Fatalf("refused promotion: %v", err)
	}
}

func TestJoinMapsTheAnswer(t *testing.T) {
	for _, tc := range []struct {
		status int
		want   error
	}{{http.StatusServiceUnavailable, service.ErrUnavailable}, {http.StatusForbidden, service.ErrConflict}, {http.StatusOK, nil}} {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var req service.JoinRequest
			if r.URL.Path != "/api/v1/cluster/join" || json.NewDecoder(r.Body).Decode(&req) != nil || req.NodeID != "node-2" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			w.WriteHeader(tc.status)
			json.NewEncoder(w).Encode(service.JoinResponse{ClusterID: "cl-1"})
		}))
		jr, err := New().Join(context.Background(), srv.URL, trustAll(), service.JoinRequest{NodeID: "node-2"})
		srv.Close()
		if tc.want == nil {
			if err != nil || jr.ClusterID != "cl-1" {
				t.Fatalf("join answered %d: %+v, %v", tc.status, jr, err)
			}
		} else if !errors.Is(err, tc.want) {
			t.Fatalf("join answered %d: got %v, want %v", tc.status, err, tc.want)
		}
	}
}

func TestFetchCAAndHealth(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/cluster/ca":
			w.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("der")}))
		case "/api/v1/sys/health":
			w.Write([]byte(`{"role":"leader","applied_index":7,"leader_commit_index":9}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	der, err := New().FetchCA(context.Background(), srv.URL)
	if err != nil || string(der) != "der" {
		t.Fatalf("CA: %q, %v", der, err)
	}
	h, err := New().Health(context.Background(), srv.URL, trustAll())
	if err != nil || h.Role != "leader" || h.AppliedIndex != 7 || h.LeaderCommit != 9 {
		t.Fatalf("health: %+v, %v", h, err)
	}
	if _, err := New().FetchCA(context.Background(), srv.URL+"/nothing"); !errors.Is(err, service.ErrConflict) {
		t.Fatalf("no CA served: %v", err)
	}
}

// TestJoinOutcomeUnknownIsNotNothingDone: a join the leader answers 503
// outcome_unknown (its leadership was lost while it used the token) is not
// reported as a join nothing was done for: the token may be used and the
// node admitted.
func TestJoinOutcomeUnknownIsNotNothingDone(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"outcome_unknown","message":"outcome unknown: the leadership was lost while this write was being committed"}}`))
	}))
	defer srv.Close()
	_, err := New().Join(context.Background(), srv.URL, trustAll(), service.JoinRequest{NodeID: "node-2"})
	if !errors.Is(err, service.ErrOutcomeUnknown) || errors.Is(err, service.ErrUnavailable) {
		t.Fatalf("join answered 503 outcome_unknown: %v; want outcome unknown", err)
	}
}

// TestJoinCutAfterItWasSentIsOutcomeUnknown: a join whose connection
// breaks after the request was sent (the leader died, or was cut off,
// while admitting the node) may have used the token and added the node:
// it is not reported as a contact failure to run again. A join that never
// reached the node is.
func TestJoinCutAfterItWasSentIsOutcomeUnknown(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // #nosec G104 -- the request is read in full, then the connection is cut
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	}))
	defer srv.Close()
	_, err := New().Join(context.Background(), srv.URL, trustAll(), service.JoinRequest{NodeID: "node-2"})
	if !errors.Is(err, service.ErrOutcomeUnknown) || errors.Is(err, service.ErrUnavailable) {
		t.Fatalf("join cut after it was sent: %v; want outcome unknown", err)
	}
	url := srv.URL
	srv.Close()
	_, err = New().Join(context.Background(), url, trustAll(), service.JoinRequest{NodeID: "node-2"})
	if !errors.Is(err, service.ErrUnavailable) || errors.Is(err, service.ErrOutcomeUnknown) {
		t.Fatalf("join to a node that is gone: %v; want unavailable (nothing was sent)", err)
	}
}
