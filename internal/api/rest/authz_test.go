package rest

import (
	"context"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// The callers of the authorisation matrix.
var callers = []string{"anonymous", "ep-none", "ep-read", "ep-rm", "ep-manage", "auditor", "keyadmin", "sysadmin", "root"}

// allowed lists, per operation, who gets past authorisation. It is written
// out by hand (not derived from the code under test): changing who may do
// what must change this table. "*" is every caller including anonymous;
// "admins" is auditor, keyadmin, sysadmin and root; "read+" is every endpoint
// holding at least read on wallet w, plus keyadmin and root; "rm+" needs
// read_modify, "manage+" manage.
var allowed = map[string]string{
	"health": "*", "openapi": "*", "open": "*", "login": "*",
	"clusterCA": "*", "clusterJoin": "*", "clusterJoinLocal": "", // join: the token authenticates; local join: the control socket only
	"clusterToken": "sysadmin root", "clusterInit": "sysadmin root", "clusterPromote": "sysadmin root", "clusterStatus": "admins",
	"clusterSwitchover": "sysadmin root", "clusterRemove": "sysadmin root",
	"init": "", "createRootToken": "", "resetPassphrase": "", // local control socket only
	"seal": "sysadmin root", "status": "admins", "stop": "sysadmin root", "debugGoroutines": "sysadmin root",
	"rotateMasterKey": "sysadmin root", "rotateDataKey": "sysadmin root", "changePassphrase": "sysadmin root",
	"enableAutoOpen": "sysadmin root", "disableAutoOpen": "sysadmin root",
	"listJournal": "sysadmin root", "rotateJournal": "sysadmin root", "archiveJournal": "sysadmin root",
	"pruneJournal":   "sysadmin root",
	"listRootTokens": "sysadmin root", "revokeRootToken": "sysadmin root",
	"logout": "authenticated", "whoami": "authenticated",
	"createUser": "sysadmin root", "listUsers": "sysadmin root", "getUser": "keyadmin sysadmin root", // keyadmin reads itself
	"updateUser": "sysadmin root", "deleteUser": "sysadmin root",
	"createWallet": "keyadmin root", "listWallets": "ep-none ep-read ep-rm ep-manage keyadmin root",
	"getWallet": "read+", "deleteWallet": "keyadmin root", "grant": "manage+", "revokeGrant": "manage+",
	"getObjectByName": "read+", "putSecret": "rm+",
	"createObject": "rm+", "locateObjects": "ep-none ep-read ep-rm ep-manage keyadmin root",
	"getObject": "read+", "getMaterial": "read+", "listVersions": "read+",
	"rotateObject": "rm+", "activateObject": "rm+", "setAttributes": "rm+",
	"deactivateObject": "manage+", "revokeObject": "manage+", "destroyObject": "manage+", "restoreObject": "manage+", "previewObjectRestore": "manage+",
	"enrollEndpoint": "keyadmin root", "listEndpoints": "keyadmin root",
	"getEndpoint":    "ep-read keyadmin root", // ep-read reads itself
	"revokeEndpoint": "keyadmin root",
	"renewEndpoint":  "keyadmin root",
	"issueAppRole":   "keyadmin root",
	"revokeAppRole":  "keyadmin root",
	"readAudit":      "auditor root", "verifyAudit": "auditor root",
	"createRestorePoint": "sysadmin root", "listRestorePoints": "admins",
	"recoveryStatus": "admins", "setRecoveryPassphrase": "sysadmin root",
	"addDestination": "sysadmin root", "listDestinations": "sysadmin root", "editDestination": "sysadmin root",
	"deleteDestination": "sysadmin root", "testDestination": "sysadmin root", "rebuildCatalog": "sysadmin root", "verifyBackups": "sysadmin root", "runDrill": "sysadmin root",
	"pauseArchive": "sysadmin root", "resumeArchive": "sysadmin root", "runBackup": "sysadmin root",
	"resumeAfterRestore": "sysadmin root",
	"currentBackup":      "sysadmin root", "listBackups": "sysadmin root", "addSchedule": "sysadmin root",
	"listSchedules": "sysadmin root", "editSchedule": "sysadmin root", "deleteSchedule": "sysadmin root",
	"pauseSchedule": "sysadmin root", "resumeSchedule": "sysadmin root", "freeze": "sysadmin root", "thaw": "sysadmin root",
}

func expand(spec string) []string {
	var out []string
	for _, f := range strings.Fields(spec) {
		switch f {
		case "*":
			out = append(out, callers...)
		case "admins":
			out = append(out, "auditor", "keyadmin", "sysadmin", "root")
		case "authenticated":
			out = append(out, callers[1:]...)
		case "read+":
			out = append(out, "ep-read", "ep-rm", "ep-manage", "keyadmin", "root")
		case "rm+":
			out = append(out, "ep-rm", "ep-manage", "keyadmin", "root")
		case "manage+":
			out = append(out, "ep-manage", "keyadmin", "root")
		default:
			out = append(out, f)
		}
	}
	return out
}

// matrixFixture is a fresh server with wallet w (object "k" in it), an
// empty wallet w2, users for each role, endpoints with each permission on w,
// and a spare user and endpoint to delete or revoke.
type matrixFixture struct {
	srv    *httptest.Server
	tokens map[string]string
	objID  string
}

func newMatrixFixture(t *testing.T) *matrixFixture {
	h, svc, root := newServiceWith(t)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	f := &matrixFixture{srv: srv, tokens: map[string]string{"root": root}}
	_, err := svc.Access.CreateWallet(ctx, "w", "")
	must(err)
	_, err = svc.Access.CreateWallet(ctx, "w2", "")
	must(err)
	o, err := svc.Objects.CreateObject(ctx, service.CreateObject{Wallet: "w", Name: "k", Type: service.TypeSymmetricKey})
	must(err)
	f.objID = o.ID
	for name, role := range map[string]service.Role{"auditor": service.RoleAuditManager, "keyadmin": service.RoleKeyAdmin,
		"sysadmin": service.RoleSystemAdmin, "u-target": service.RoleKeyAdmin} {
		_, err := svc.Access.CreateUser(ctx, name, "password-of-"+name, []service.Role{role})
		must(err)
		sess, err := svc.Access.Login(ctx, name, "password-of-"+name, "127.0.0.1:1")
		must(err)
		f.tokens[name] = sess.Token
	}
	for name, perm := range map[string]service.Permission{"ep-none": "", "ep-read": service.PermRead, "ep-rm": service.PermReadModify,
		"ep-manage": service.PermManage, "ep-target": service.PermRead} {
		e, err := svc.Access.EnrollEndpoint(ctx, name, "", nil)
		must(err)
		f.tokens[name] = e.Token
		if perm != "" {
			_, err = svc.Access.SetGrant(ctx, "w", name, perm)
			must(err)
		}
	}
	return f
}

// request builds a concrete request for a route: path parameters point at
// fixture objects, bodies are valid.
func (f *matrixFixture) request(rt route, caller string) (method, path, body string) {
	params := map[string]string{"id": f.objID, "wallet": "w", "name": "k", "endpoint": "ep-none"}
	bodies := map[string]string{
		"open":                  `{"passphrase":"rest-test-passphrase"}`,
		"init":                  `{"passphrase":"rest-test-passphrase"}`,
		"stop":                  `{"mode":"smart"}`,
		"changePassphrase":      `{"old_passphrase":"rest-test-passphrase","new_passphrase":"rest-test-passphrase"}`,
		"resetPassphrase":       `{"new_passphrase":"another-passphrase"}`,
		"login":                 `{"username":"keyadmin","password":"password-of-keyadmin"}`,
		"createUser":            `{"name":"new-` + caller + `","password":"long-enough-pw","roles":["key_admin"]}`,
		"updateUser":            `{"disabled":false}`,
		"createWallet":          `{"name":"wallet-` + caller + `"}`,
		"grant":                 `{"permission":"read"}`,
		"putSecret":             `{"value":"c2VjcmV0"}`,
		"createObject":          `{"wallet":"w","name":"new-` + caller + `","type":"symmetric_key"}`,
		"rotateObject":          ``,
		"setAttributes":         `{"set":{"owner":"dba"}}`,
		"enrollEndpoint":        `{"name":"new-` + caller + `"}`,
		"renewEndpoint":         `{"csr":""}`,
		"issueAppRole":          `{"ttl":"1h","uses":1}`,
		"setRecoveryPassphrase": `{"new_passphrase":"recovery-passphrase-1"}`,
		"addDestination":        `{"name":"d-` + caller + `","kind":"dir","path":"/nonexistent/coffer-matrix"}`,
		"editDestination":       `{"kind":"dir","path":"/nonexistent/coffer-matrix"}`,
		"createRestorePoint":    `{"name":"rp-` + caller + `"}`,
		"restoreObject":         `{"destination":"LOCAL","index":1}`,
		"previewObjectRestore":  `{"destination":"LOCAL","index":1}`,
		"clusterJoin":           `{"token":"cjt1.x.y","node_id":"n2","raft_address":"127.0.0.2:7001","api_url":"https://127.0.0.2:8200","csr":""}`,
		"clusterJoinLocal":      `{"url":"https://127.0.0.1:1","token":"cjt1.x.` + strings.Repeat("a", 64) + `","passphrase":"long-enough-passphrase"}`,
		"clusterPromote":        `{"node_id":"n2"}`,
		"verifyBackups":         `{"all":true}`,
		"runBackup":             `{"destination":"LOCAL","wait":true}`,
		"addSchedule":           `{"name":"s-` + caller + `","destination":"LOCAL","type":"periodic","every":"24h"}`,
		"editSchedule":          `{"destination":"LOCAL","type":"periodic","every":"24h"}`,
	}
	switch rt.OperationID {
	case "getUser", "updateUser":
		params["name"] = "keyadmin"
	case "deleteUser":
		params["name"] = "u-target"
	case "getEndpoint":
		params["name"] = "ep-read"
	case "revokeEndpoint":
		params["name"] = "ep-target"
	case "deleteWallet":
		params["wallet"] = "w2"
	case "putSecret":
		params["name"] = "s-" + caller
	case "revokeRootToken":
		params["accessor"] = "00000000" // no such token: 404 once authorised
	}
	path = regexp.MustCompile(`\{(\w+)(\.\.\.)?\}`).ReplaceAllStringFunc(rt.Pattern, func(m string) string {
		return params[strings.Trim(m, "{}.")]
	})
	return rt.Method, path, bodies[rt.OperationID]
}

// TestAuthorizationMatrix: every route × every role and endpoint permission.
// A caller the table allows must get past authorisation (any status but 401
// and 403); every other caller must get 403 (or 401 without credentials).
func TestAuthorizationMatrix(t *testing.T) {
	routes := (&api{}).routes()
	for _, rt := range routes {
		spec, ok := allowed[rt.OperationID]
		if !ok {
			t.Errorf("route %s %s (%s) is missing from the authorisation table", rt.Method, rt.Pattern, rt.OperationID)
		}
		_ = spec
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, rt := range routes {
		t.Run(rt.OperationID, func(t *testing.T) {
			t.Parallel() // each route has its own server
			f := newMatrixFixture(t)
			ok := expand(allowed[rt.OperationID])
			for _, c := range callers {
				method, path, body := f.request(rt, c)
				status, eb, raw := do(t, f.srv, f.tokens[c], method, path, body)
				got := status != 401 && status != 403
				if c == "ep-none" && strings.HasPrefix(rt.Pattern, "/api/v1/objects/{id}") && status == 404 {
					// Refused as if the id named nothing
					// (TestForeignObjectIDLooksMissing checks the answer).
					got, status = false, 403
				}
				switch want := slices.Contains(ok, c); {
				case want && !got:
					t.Errorf("%s %s as %s: %d %s, want it allowed", method, path, c, status, raw)
				case !want && got:
					t.Errorf("%s %s as %s: %d, want 403 (or 401)", method, path, c, status)
				case !want && c != "anonymous" && status != 403 && rt.Auth:
					t.Errorf("%s %s as %s: %d %s, want 403 for an authenticated caller", method, path, c, status, eb.Error.Code)
				}
			}
		})
	}
}

// TestForeignObjectIDLooksMissing: an endpoint with no grant on an object's
// wallet gets, for every route that names an object by id, the same answer
// (status, code and message, the id aside) as for an id that names nothing:
// a 403 there would confirm that the id exists.
func TestForeignObjectIDLooksMissing(t *testing.T) {
	f := newMatrixFixture(t)
	last := f.objID[len(f.objID)-1]
	other := byte('0')
	if last == '0' {
		other = '1'
	}
	missing := f.objID[:len(f.objID)-1] + string(other)
	n := 0
	for _, rt := range (&api{}).routes() {
		if !strings.HasPrefix(rt.Pattern, "/api/v1/objects/{id}") {
			continue
		}
		n++
		method, path, body := f.request(rt, "ep-none")
		gotStatus, gotBody, gotRaw := do(t, f.srv, f.tokens["ep-none"], method, path, body)
		wantStatus, wantBody, _ := do(t, f.srv, f.tokens["ep-none"], method, strings.ReplaceAll(path, f.objID, missing), body)
		if wantStatus != 404 {
			t.Errorf("%s (missing id): %d, want 404", rt.OperationID, wantStatus)
		}
		got := strings.ReplaceAll(gotBody.Error.Message, f.objID, "ID")
		want := strings.ReplaceAll(wantBody.Error.Message, missing, "ID")
		if gotStatus != wantStatus || gotBody.Error.Code != wantBody.Error.Code || got != want {
			t.Errorf("%s on another wallet's object: %d %s %q; on a missing id: %d %s %q (raw %s)",
				rt.OperationID, gotStatus, gotBody.Error.Code, got, wantStatus, wantBody.Error.Code, want, gotRaw)
		}
	}
	if n < 5 {
		t.Fatalf("only %d routes name an object by id: the route patterns changed", n)
	}
}
