package rest

import (
	_ "embed"
	"net/http"
	"slices"

	"github.com/coffer-kms/coffer/internal/api/forward"
	"github.com/coffer-kms/coffer/internal/api/openapi"
	"github.com/coffer-kms/coffer/internal/service"
)

// OpenAPIDocument is the checked-in description of every route (openapi.json).
// TestOpenAPIMatchesRoutes fails when it drifts from the route table; run
// `go test ./internal/api/rest -run TestOpenAPIMatchesRoutes -update` to
// regenerate it.
//
//go:embed openapi.json
var OpenAPIDocument []byte

// route is one API route: its documentation, its facts and its handler.
type route struct {
	openapi.Route
	facts forward.Facts
	h     http.HandlerFunc
}

// The facts a route can have: whether the caller must authenticate, and
// where it is served in a cluster (the leader, or this node: its own view,
// or an operation on the node itself). The audit action is the operation
// id, unless noAudit.
var (
	leader     = forward.Facts{Auth: true, Placement: forward.Leader}
	view       = forward.Facts{Auth: true, Placement: forward.NodeView}
	local      = forward.Facts{Auth: true, Placement: forward.NodeLocal}
	openLeader = forward.Facts{Auth: false, Placement: forward.Leader}
	openView   = forward.Facts{Auth: false, Placement: forward.NodeView}
	openLocal  = forward.Facts{Auth: false, Placement: forward.NodeLocal}
)

var (
	e400 = []int{400, 401, 403, 503}
	eObj = []int{400, 401, 403, 404, 409, 503}
)

// Query parameters shared by list routes.
var pageParams = []openapi.Param{
	{Name: "limit", In: "query", Type: "integer", Description: "page size, 1 to 1000 (default 100)"},
	{Name: "page_token", In: "query", Type: "string", Description: "next_page_token of the previous page"},
}

// routes is the whole API. The OpenAPI document is generated from it.
func (a *api) routes() []route {
	r := func(method, pattern, op, summary string, f forward.Facts, req, resp any, errs []int, h http.HandlerFunc, tags ...string) route {
		f.Audit = op
		return route{Route: openapi.Route{Method: method, Pattern: pattern, OperationID: op, Summary: summary, Auth: f.Auth,
			Request: req, Response: resp, Errors: errs, Tags: tags}, facts: f, h: h}
	}
	withQuery := func(rt route, q ...openapi.Param) route { rt.Query = append(rt.Query, q...); return rt }
	status := func(rt route, code int) route { rt.Status = code; return rt }
	// Polled often (health, the CA, the document itself): touch nothing.
	// They take any query (serve).
	noAudit := func(rt route) route { rt.facts.Audit = ""; return rt }
	version := openapi.Param{Name: "version", In: "query", Type: "integer", Description: "version number (default: latest)"}
	rts := []route{
		// System
		r("GET", "/api/v1/sys/debug/goroutines", "debugGoroutines", "Stacks of this node's goroutines (text, for support bundles; system administrators)", local, nil, nil, []int{401, 403}, a.debugGoroutines, "sys"),
		noAudit(r("GET", "/api/v1/sys/health", "health", "Health: 200 open, 503 sealed, 501 uninitialised", openLocal, nil, Health{}, nil, a.health, "sys")),
		// Cluster
		noAudit(r("GET", "/api/v1/cluster/ca", "clusterCA", "The cluster CA certificate (PEM; a joining node checks it against its token)", openLocal, nil, nil, nil, a.clusterCA, "cluster")),
		r("POST", "/api/v1/cluster/join", "clusterJoin", "Admit a node presenting a one-time join token (node to leader)", openLeader, service.JoinRequest{}, service.JoinResponse{}, e400, a.clusterJoin, "cluster"),
		r("POST", "/api/v1/sys/cluster/join", "clusterJoinLocal", "Join this uninitialised node to a cluster (local control socket only)", openLocal, JoinLocalRequest{}, service.Status{}, []int{400, 403, 409, 503}, a.clusterJoinLocal, "cluster"),
		r("POST", "/api/v1/cluster/init", "clusterInit", "Make this node the first of a cluster (idempotent): records its addresses", leader, nil, service.ClusterStatus{}, e400, a.clusterInit, "cluster"),
		r("POST", "/api/v1/cluster/tokens", "clusterToken", "Create a one-time join token", leader, TokenRequest{}, service.JoinToken{}, e400, a.clusterToken, "cluster"),
		r("POST", "/api/v1/cluster/promote", "clusterPromote", "Make a caught-up node a voter (the node itself, or a system administrator)", leader, PromoteRequest{}, nil, eObj, a.clusterPromote, "cluster"),
		r("GET", "/api/v1/cluster", "clusterStatus", "Members, roles, last contact, applied index and lag", view, nil, service.ClusterStatus{}, e400, a.clusterStatus, "cluster"),
		r("POST", "/api/v1/cluster/switchover", "clusterSwitchover", "Hand leadership to another voter", leader, SwitchoverRequest{}, SwitchoverResult{}, eObj, a.clusterSwitchover, "cluster"),
		r("DELETE", "/api/v1/cluster/nodes/{id}", "clusterRemove", "Remove a node from the cluster", leader, nil, nil, eObj, a.clusterRemove, "cluster"),
		noAudit(r("GET", "/api/v1/openapi.json", "openapi", "This API's OpenAPI 3 document", openView, nil, nil, nil, a.openapi, "sys")),
		r("POST", "/api/v1/sys/init", "init", "Initialise the keystore (local control socket only)", openLocal, PassphraseRequest{}, InitResponse{}, []int{400, 403, 409}, a.init, "sys"),
		r("POST", "/api/v1/sys/open", "open", "Open the keystore with the passphrase, or with auto-open (auto: a system administrator's token)", openLocal, PassphraseRequest{}, service.Status{}, []int{400, 401, 403, 409, 501, 503}, a.open, "sys"),
		r("POST", "/api/v1/sys/seal", "seal", "Seal the keystore", local, nil, service.Status{}, e400, a.seal, "sys"),
		r("GET", "/api/v1/sys/status", "status", "Node status", view, nil, service.Status{}, e400, a.status, "sys"),
		status(r("POST", "/api/v1/sys/stop", "stop", "Stop the server (smart, fast or immediate)", local, StopRequest{}, nil, e400, a.stopServer, "sys"), 202),
		r("POST", "/api/v1/sys/root-token", "createRootToken", "Create a root token (local control socket only); ttl: it expires after that (e.g. 1h)", local, RootTokenRequest{}, InitResponse{}, e400, a.rootToken, "sys"),
		r("GET", "/api/v1/sys/root-tokens", "listRootTokens", "List root tokens by accessor (never the tokens)", view, nil, RootTokenList{}, e400, a.listRootTokens, "sys"),
		r("DELETE", "/api/v1/sys/root-tokens/{accessor}", "revokeRootToken", "Revoke the root token whose accessor starts with the given (at least 8) hex digits", leader, nil, nil, eObj, a.revokeRootToken, "sys"),
		r("POST", "/api/v1/sys/keystore/rotate-master-key", "rotateMasterKey", "Add a master key generation and re-wrap the data keys", leader, nil, GenerationResponse{}, e400, a.rotateMasterKey, "sys"),
		r("POST", "/api/v1/sys/keystore/rotate-data-key", "rotateDataKey", "Start a new data key", leader, nil, GenerationResponse{}, e400, a.rotateDataKey, "sys"),
		r("POST", "/api/v1/sys/keystore/change-passphrase", "changePassphrase", "Change the keystore passphrase", local, ChangePassphraseRequest{}, nil, e400, a.changePassphrase, "sys"),
		r("POST", "/api/v1/sys/keystore/reset-passphrase", "resetPassphrase", "Set a new passphrase without the old one (local control socket only)", local, ResetPassphraseRequest{}, nil, e400, a.resetPassphrase, "sys"),
		r("POST", "/api/v1/sys/keystore/enable-auto-open", "enableAutoOpen", "Write keystore.aks so the server opens without a passphrase", local, nil, nil, e400, a.enableAutoOpen, "sys"),
		r("POST", "/api/v1/sys/keystore/disable-auto-open", "disableAutoOpen", "Remove keystore.aks", local, nil, nil, e400, a.disableAutoOpen, "sys"),
		r("GET", "/api/v1/sys/journal", "listJournal", "Journal segments", view, nil, JournalList{}, e400, a.journalList, "sys"),
		r("POST", "/api/v1/sys/journal/rotate", "rotateJournal", "Close the current journal segment", local, nil, JournalRotated{}, e400, a.journalRotate, "sys"),
		r("POST", "/api/v1/sys/journal/prune", "pruneJournal", "Remove this node's closed journal segments that no destination needs any more (dry_run: only list them)", local, JournalPruneRequest{}, JournalPruned{}, e400, a.journalPrune, "sys"),
		withQuery(r("POST", "/api/v1/sys/journal/archive", "archiveJournal", "Close the current segment and ship every closed segment to the archiving destinations now (409 when a backup holds them for more than 15 s)", leader, nil, JournalArchived{}, []int{400, 401, 403, 409, 503}, a.journalArchive, "sys"),
			openapi.Param{Name: "progress", In: "query", Type: "string", Description: `ndjson: answer application/x-ndjson, one line {"progress":{destination,segment,done,total}} as each destination starts and after each segment shipped, then {"archived":true} or {"error":{status,code,message}}`}),

		// Sessions
		r("POST", "/api/v1/auth/login", "login", "Log in with a user name and password; returns an expiring session token", openLeader, LoginRequest{}, service.Session{}, []int{400, 401, 429, 503}, a.login, "auth"),
		r("POST", "/api/v1/auth/logout", "logout", "End the caller's session", leader, nil, nil, e400, a.logout, "auth"),
		r("GET", "/api/v1/auth/whoami", "whoami", "The caller's identity", leader, nil, service.Whoami{}, e400, a.whoami, "auth"),

		// Users
		status(r("POST", "/api/v1/users", "createUser", "Create an administrator", leader, CreateUserRequest{}, service.User{}, []int{400, 401, 403, 409, 503}, a.createUser, "users"), 201),
		withQuery(r("GET", "/api/v1/users", "listUsers", "List administrators", leader, nil, service.Page[service.User]{}, e400, a.listUsers, "users"), pageParams...),
		r("GET", "/api/v1/users/{name}", "getUser", "Get an administrator", leader, nil, service.User{}, []int{401, 403, 404}, a.getUser, "users"),
		r("PATCH", "/api/v1/users/{name}", "updateUser", "Change an administrator's password, roles or disabled flag", leader, service.UserChange{}, service.User{}, eObj, a.updateUser, "users"),
		status(r("DELETE", "/api/v1/users/{name}", "deleteUser", "Delete an administrator and end its sessions", leader, nil, nil, eObj, a.deleteUser, "users"), 204),

		// Wallets
		status(r("POST", "/api/v1/wallets", "createWallet", "Create a wallet", leader, CreateWalletRequest{}, service.Wallet{}, []int{400, 401, 403, 409, 503}, a.createWallet, "wallets"), 201),
		withQuery(r("GET", "/api/v1/wallets", "listWallets", "List wallets (endpoints see those granted to them)", leader, nil, service.Page[service.Wallet]{}, e400, a.listWallets, "wallets"), pageParams...),
		r("GET", "/api/v1/wallets/{wallet}", "getWallet", "Get a wallet and its grants", leader, nil, service.Wallet{}, []int{401, 403, 404}, a.getWallet, "wallets"),
		status(r("DELETE", "/api/v1/wallets/{wallet}", "deleteWallet", "Delete an empty wallet", leader, nil, nil, eObj, a.deleteWallet, "wallets"), 204),
		r("PUT", "/api/v1/wallets/{wallet}/grants/{endpoint}", "grant", "Give an endpoint read, read_modify or manage on a wallet", leader, GrantRequest{}, service.Wallet{}, eObj, a.grant, "wallets"),
		r("DELETE", "/api/v1/wallets/{wallet}/grants/{endpoint}", "revokeGrant", "Take an endpoint's permission on a wallet away", leader, nil, service.Wallet{}, eObj, a.revokeGrant, "wallets"),
		withQuery(r("GET", "/api/v1/wallets/{wallet}/objects/{name...}", "getObjectByName", "Get an object by wallet and name, with its material unless metadata_only", leader, nil, ObjectWithMaterial{}, []int{400, 401, 403, 404, 410, 503}, a.getByName, "objects"),
			version, openapi.Param{Name: "metadata_only", In: "query", Type: "boolean", Description: "omit the material"}),
		r("PUT", "/api/v1/wallets/{wallet}/secrets/{name...}", "putSecret", "Write a secret: create the secret-data object, or add a version", leader, PutSecretRequest{}, service.Object{}, eObj, a.putSecret, "objects"),

		// Objects
		status(r("POST", "/api/v1/objects", "createObject", "Create a symmetric key, secret data or key pair", leader, service.CreateObject{}, service.Object{}, eObj, a.createObject, "objects"), 201),
		withQuery(r("GET", "/api/v1/objects", "locateObjects", "List and search objects", leader, nil, service.Page[service.Object]{}, e400, a.listObjects, "objects"),
			append([]openapi.Param{
				{Name: "wallet", In: "query", Type: "string", Description: "only this wallet"},
				{Name: "name", In: "query", Type: "string", Description: "exact name, or a prefix ending in *"},
				{Name: "type", In: "query", Type: "string", Description: "symmetric_key, secret_data or key_pair"},
				{Name: "state", In: "query", Type: "string", Description: "pre-active, active, deactivated, compromised or destroyed"},
				{Name: "attr", In: "query", Type: "string", Description: "key=value; repeat for several (all must match)"},
			}, pageParams...)...),
		r("GET", "/api/v1/objects/{id}", "getObject", "Get an object's metadata", leader, nil, service.Object{}, []int{401, 403, 404}, a.getObject, "objects"),
		withQuery(r("GET", "/api/v1/objects/{id}/material", "getMaterial", "Get an object's metadata and the material of a version", leader, nil, ObjectWithMaterial{}, []int{400, 401, 403, 404, 410, 503}, a.getMaterial, "objects"), version),
		r("GET", "/api/v1/objects/{id}/versions", "listVersions", "List an object's versions", leader, nil, VersionList{}, []int{401, 403, 404}, a.listVersions, "objects"),
		r("POST", "/api/v1/objects/{id}/rotate", "rotateObject", "Add a new version (fresh material, or the given value)", leader, RotateRequest{}, service.Object{}, eObj, a.rotateObject, "objects"),
		r("POST", "/api/v1/objects/{id}/activate", "activateObject", "pre-active to active", leader, StateRequest{}, service.Object{}, eObj, a.transition(service.Activate), "objects"),
		r("POST", "/api/v1/objects/{id}/deactivate", "deactivateObject", "to deactivated (no longer used to protect data)", leader, StateRequest{}, service.Object{}, eObj, a.transition(service.Deactivate), "objects"),
		r("POST", "/api/v1/objects/{id}/revoke", "revokeObject", "to compromised", leader, StateRequest{}, service.Object{}, eObj, a.transition(service.Revoke), "objects"),
		r("POST", "/api/v1/objects/{id}/restore", "restoreObject", "Put the object's versions back as they were at a past time, from a backup destination (in place, or as a new object)", leader, service.RestoreObjectRequest{}, service.Object{}, eObj, a.restoreObject, "objects"),
		r("POST", "/api/v1/objects/{id}/restore/preview", "previewObjectRestore", "What restoreObject with the same body would do, without doing it: the object as it would be left and the versions whose material comes back (reads the same backups; changes nothing)", leader, service.RestoreObjectRequest{}, service.RestorePreview{}, eObj, a.previewObjectRestore, "objects"),
		r("POST", "/api/v1/objects/{id}/destroy", "destroyObject", "Erase the material (deactivated or compromised objects only); metadata stays", leader, StateRequest{}, service.Object{}, eObj, a.transition(service.Destroy), "objects"),
		r("PATCH", "/api/v1/objects/{id}/attributes", "setAttributes", "Set and delete custom attributes", leader, AttributesRequest{}, service.Object{}, eObj, a.setAttributes, "objects"),

		// Endpoints
		status(r("POST", "/api/v1/endpoints", "enrollEndpoint", "Enrol an endpoint: a token, and a client certificate when a CSR is sent", leader, EnrollRequest{}, service.Enrollment{}, []int{400, 401, 403, 409, 503}, a.enroll, "endpoints"), 201),
		withQuery(r("GET", "/api/v1/endpoints", "listEndpoints", "List endpoints", leader, nil, service.Page[service.Endpoint]{}, e400, a.listEndpoints, "endpoints"), pageParams...),
		r("GET", "/api/v1/endpoints/{name}", "getEndpoint", "Get an endpoint", leader, nil, service.Endpoint{}, []int{401, 403, 404}, a.getEndpoint, "endpoints"),
		r("POST", "/api/v1/endpoints/{name}/renew", "renewEndpoint", "Issue an endpoint a new client certificate, keeping its token and grants; the old certificate is refused at every TLS handshake", leader, RenewRequest{}, service.Enrollment{}, eObj, a.renewEndpoint, "endpoints"),
		r("POST", "/api/v1/endpoints/{name}/approle", "issueAppRole", "Issue an endpoint an AppRole secret id for the Vault API's auth/approle/login (role_id is the endpoint's name; the secret id is shown once)", leader, AppRoleRequest{}, service.AppRoleSecret{}, eObj, a.issueAppRole, "endpoints"),
		r("DELETE", "/api/v1/endpoints/{name}/approle", "revokeAppRole", "Revoke every AppRole secret id of an endpoint", leader, nil, AppRoleRevoked{}, eObj, a.revokeAppRole, "endpoints"),
		r("POST", "/api/v1/endpoints/{name}/revoke", "revokeEndpoint", "Revoke an endpoint's token, certificate and grants", leader, nil, service.Endpoint{}, eObj, a.revokeEndpoint, "endpoints"),

		// Backups
		r("GET", "/api/v1/backup/recovery-passphrase", "recoveryStatus", "Whether a recovery passphrase is set (never the passphrase)", leader, nil, service.RecoveryStatus{}, e400, a.recoveryStatus, "backup"),
		r("POST", "/api/v1/backup/recovery-passphrase", "setRecoveryPassphrase", "Set or change the recovery passphrase that encrypts backups", leader, RecoveryRequest{}, service.RecoveryStatus{}, e400, a.setRecovery, "backup"),
		status(r("POST", "/api/v1/backup/destinations", "addDestination", "Add a destination after writing, reading back and deleting a probe file", leader, service.DestinationConfig{}, service.DestinationView{}, []int{400, 401, 403, 409, 503}, a.addDestination, "backup"), 201),
		r("GET", "/api/v1/backup/destinations", "listDestinations", "Destinations, their archive state and disk use", leader, nil, DestinationList{}, e400, a.listDestinations, "backup"),
		r("PATCH", "/api/v1/backup/destinations/{name}", "editDestination", "Change a destination (empty secrets keep the old ones); validated like add", leader, service.DestinationConfig{}, service.DestinationView{}, eObj, a.editDestination, "backup"),
		status(r("DELETE", "/api/v1/backup/destinations/{name}", "deleteDestination", "Remove a destination's configuration; its backups stay where they are", leader, nil, nil, eObj, a.deleteDestination, "backup"), 204),
		r("POST", "/api/v1/backup/destinations/{name}/test", "testDestination", "Write, read back and delete a probe file", leader, nil, nil, eObj, a.testDestination, "backup"),
		withQuery(r("POST", "/api/v1/backup/destinations/{name}/verify", "verifyBackups", "Verify backups: decrypt, check, replay into a temporary directory, integrity check, compare with the manifest; the result goes into the catalog", leader, service.VerifyRequest{}, VerifyResults{}, eObj, a.verifyBackups, "backup"),
			openapi.Param{Name: "progress", In: "query", Type: "string", Description: `ndjson: answer application/x-ndjson, one line {"progress":{done,total,file,result}} as each backup starts and ends, then {"results":[...]} or {"error":{status,code,message}}`}),
		r("POST", "/api/v1/backup/destinations/{name}/drill", "runDrill", "Restore drill: restore the destination's newest backup chain into a scratch directory, open it with the recovery passphrase, check the state digest and replay to the newest archived record; result, duration and restore speed go into the catalog (a FAILED drill is a 200 with result FAILED)", leader, nil, service.Drill{}, eObj, a.runDrill, "backup"),
		r("POST", "/api/v1/backup/destinations/{name}/catalog/rebuild", "rebuildCatalog", "Rewrite the destination's catalog from the backup files' manifests", leader, nil, RebuildResult{}, eObj, a.rebuildCatalog, "backup"),
		r("POST", "/api/v1/backup/destinations/{name}/archive/pause", "pauseArchive", "Pause shipping journal segments to the destination", leader, nil, service.DestinationView{}, eObj, a.archivePause(true), "backup"),
		r("POST", "/api/v1/backup/destinations/{name}/archive/resume", "resumeArchive", "Resume shipping journal segments", leader, nil, service.DestinationView{}, eObj, a.archivePause(false), "backup"),
		status(r("POST", "/api/v1/backup/run", "runBackup", "Take a backup now (one at a time); 202 when started, 200 with wait", leader, service.BackupRequest{}, BackupRecord{}, eObj, a.runBackup, "backup"), 202),
		r("POST", "/api/v1/backup/resume-after-restore", "resumeAfterRestore", "End the hold on a restored node's backups; take_over claims every destination for its timeline and starts a full backup to each (409 when not held)", leader, ResumeAfterRestoreRequest{}, service.Timeline{}, eObj, a.resumeAfterRestore, "backup"),
		r("GET", "/api/v1/backup/current", "currentBackup", "The running backup and its progress", view, nil, CurrentBackup{}, e400, a.currentBackup, "backup"),
		withQuery(r("GET", "/api/v1/backup/backups", "listBackups", "Backups, newest first", leader, nil, BackupList{}, e400, a.listBackups, "backup"),
			openapi.Param{Name: "destination", In: "query", Type: "string", Description: "only this destination"}),
		status(r("POST", "/api/v1/backup/schedules", "addSchedule", "Add a schedule: once, periodic or cron", leader, service.ScheduleConfig{}, ScheduleView{}, eObj, a.putSchedule(false), "backup"), 201),
		r("GET", "/api/v1/backup/schedules", "listSchedules", "Schedules with their state and next run", leader, nil, ScheduleList{}, e400, a.listSchedules, "backup"),
		r("PATCH", "/api/v1/backup/schedules/{name}", "editSchedule", "Change a schedule", leader, service.ScheduleConfig{}, ScheduleView{}, eObj, a.putSchedule(true), "backup"),
		status(r("DELETE", "/api/v1/backup/schedules/{name}", "deleteSchedule", "Delete a schedule", leader, nil, nil, eObj, a.deleteSchedule, "backup"), 204),
		r("POST", "/api/v1/backup/schedules/{name}/pause", "pauseSchedule", "ACTIVE to PAUSED", leader, nil, ScheduleView{}, eObj, a.schedulePause(true), "backup"),
		r("POST", "/api/v1/backup/schedules/{name}/resume", "resumeSchedule", "PAUSED to ACTIVE", leader, nil, ScheduleView{}, eObj, a.schedulePause(false), "backup"),
		status(r("POST", "/api/v1/restore-points", "createRestorePoint", "Write a named restore point into the history", leader, RestorePointRequest{}, RestorePoint{}, eObj, a.createRestorePoint, "backup"), 201),
		r("GET", "/api/v1/restore-points", "listRestorePoints", "Restore points: name, index and time", leader, nil, RestorePointList{}, e400, a.listRestorePoints, "backup"),
		r("POST", "/api/v1/sys/freeze", "freeze", "Write a full dump under <data-dir>/dump, then refuse writes until thaw or the timeout", local, FreezeRequest{}, service.FreezeStatus{}, eObj, a.freeze, "sys"),
		r("POST", "/api/v1/sys/thaw", "thaw", "End a freeze", local, nil, service.FreezeStatus{}, eObj, a.thaw, "sys"),

		// Audit
		withQuery(r("GET", "/api/v1/audit", "readAudit", "Read audit records", view, nil, AuditPage{}, e400, a.readAudit, "audit"),
			openapi.Param{Name: "order", In: "query", Type: "string", Description: "oldest (default: oldest first, from `from`) or newest (newest first, below `before`)"},
			openapi.Param{Name: "from", In: "query", Type: "integer", Description: "order=oldest: first sequence number (default 1)"},
			openapi.Param{Name: "before", In: "query", Type: "integer", Description: "order=newest: records with a lower sequence number (default: from the end)"},
			openapi.Param{Name: "limit", In: "query", Type: "integer", Description: "1 to 1000 (default 100)"}),
		r("POST", "/api/v1/audit/verify", "verifyAudit", "Verify this node's audit hash chain", local, nil, service.AuditReport{}, []int{401, 403, 409}, a.verifyAudit, "audit"),
	}
	// Every audited route refuses a query parameter it does not declare
	// (serve); the unaudited probes take any.
	for i := range rts {
		if rts[i].facts.Audit != "" && !slices.Contains(rts[i].Errors, http.StatusBadRequest) {
			rts[i].Errors = append(slices.Clone(rts[i].Errors), http.StatusBadRequest)
		}
	}
	return rts
}

// Routes returns the route table's documentation (for the OpenAPI generator and tests).
func Routes() []openapi.Route {
	var out []openapi.Route
	for _, rt := range (&api{}).routes() {
		out = append(out, rt.Route)
	}
	return out
}

// BuildOpenAPI generates the OpenAPI document from the route table.
func BuildOpenAPI() ([]byte, error) {
	return openapi.Build(openapi.Info{Title: "Coffer API", Version: "1",
		Description: "Coffer's native REST API. Authenticate with Authorization: Bearer <token> (root, session or endpoint token) or an enrolled client certificate. Errors are {\"error\":{\"code\",\"message\"}}."},
		Routes(), ErrorBody{})
}
