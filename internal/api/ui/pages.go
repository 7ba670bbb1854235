package ui

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// login: GET shows the form, POST signs in through the API's login (its
// throttling and audit); the session token becomes an HttpOnly cookie.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	p := &page{u: u, w: w, r: r, s: &sess{}, Data: map[string]any{}, Title: "Sign in"}
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		c, err := r.Cookie(loginCookie)
		if err != nil || c.Value == "" || !hmac.Equal([]byte(c.Value), []byte(r.PostFormValue(csrfField))) {
			http.Error(w, "missing or wrong CSRF token", http.StatusForbidden)
			return
		}
		res := u.call(r, "", "POST", "/api/v1/auth/login", map[string]string{
			"username": r.PostFormValue("username"), "password": r.PostFormValue("password")})
		if res.ok() {
			tok, _ := res.Body["token"].(string)
			exp, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(res.Body["expires"]))
			http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: tok, Path: "/ui/", Expires: exp,
				Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/ui/", MaxAge: -1,
				Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, "/ui/", http.StatusSeeOther)
			return
		}
		p.Error, p.status = "sign-in failed: "+res.Err, res.Status
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		http.Error(w, "random", http.StatusInternalServerError)
		return
	}
	p.s.CSRF = hex.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: p.s.CSRF, Path: "/ui/", MaxAge: 600,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	p.render("login")
}

func (p *page) logout() {
	if p.post() {
		p.u.call(p.r, p.s.Token, "POST", "/api/v1/auth/logout", nil)
	}
	http.SetCookie(p.w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/ui/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(p.w, p.r, "/ui/login", http.StatusSeeOther)
}

// monitor is the home page: state, keystore, cluster, disks, backups,
// alerts. It reloads itself every 10 s.
func (p *page) monitor() {
	p.Title, p.Nav, p.Refresh = "Monitor", "monitor", 10
	if p.post() && p.form("action") == "recheck" {
		p.Flash = "Rechecked at " + time.Now().UTC().Format(time.RFC3339)
	}
	p.Data["status"] = p.get("/api/v1/sys/status")
	p.Data["cluster"] = p.get("/api/v1/cluster")
	if p.s.Sys {
		p.Data["destinations"] = p.get("/api/v1/backup/destinations")["destinations"]
		last := map[string]any{}
		if bl, ok := p.get("/api/v1/backup/backups")["backups"].([]any); ok {
			for _, b := range bl {
				m, _ := b.(map[string]any)
				d := fmt.Sprint(m["destination"])
				if _, seen := last[d]; !seen && strings.EqualFold(fmt.Sprint(m["status"]), "done") {
					last[d] = m
				}
			}
		}
		p.Data["last"] = last
	}
	p.render("monitor")
}

// keys: wallets and objects (search), create wallet and object.
func (p *page) keys() {
	p.Title, p.Nav = "Keys", "keys"
	if p.post() {
		switch p.form("action") {
		case "create-wallet":
			if !p.s.Key {
				p.forbidden("creating a wallet needs the key_admin role")
				break
			}
			p.do("POST", "/api/v1/wallets", map[string]string{"name": p.form("name"), "description": p.form("description")},
				"Wallet "+p.form("name")+" created")
		case "create-object":
			if !p.s.Key {
				p.forbidden("creating an object needs the key_admin role")
				break
			}
			req := map[string]any{"wallet": p.form("wallet"), "name": p.form("name"), "type": p.form("type")}
			if p.form("type") == "secret_data" {
				req["value"] = []byte(p.form("value"))
			}
			if attrs := parseAttrs(p.form("attributes")); len(attrs) > 0 {
				req["attributes"] = attrs
			}
			p.do("POST", "/api/v1/objects", req, "Object "+p.form("name")+" created")
		}
	}
	q := "?limit=1000"
	for _, k := range []string{"wallet", "name", "state", "type"} {
		if v := p.q(k); v != "" {
			q += "&" + k + "=" + qesc(v)
		}
	}
	if a := p.q("attr"); a != "" {
		q += "&attr=" + qesc(a)
	}
	p.Data["wallets"] = p.get("/api/v1/wallets?limit=1000")["items"]
	p.Data["objects"] = p.get("/api/v1/objects" + q)["items"]
	p.Data["query"] = p.r.URL.Query()
	p.render("keys")
}

func parseAttrs(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k != "" {
			out[k] = v
		}
	}
	return out
}

// object: one object, its versions and actions; every state change needs a
// confirmation box naming the object; material only on request.
func (p *page) object() {
	p.Title, p.Nav = "Object", "keys"
	id := p.q("id")
	base := "/api/v1/objects/" + esc(id)
	if p.post() {
		act := p.form("action")
		obj := p.get(base)
		name := fmt.Sprint(obj["name"])
		switch {
		case !p.s.Key:
			p.forbidden(act + " needs the key_admin role")
		case act == "material":
			res := p.do("GET", base+"/material", nil, "Material of "+name+" (this read is audited)")
			if res.ok() {
				p.Data["material"] = res.Body["material"]
			}
		case act == "restore" || act == "preview":
			req := map[string]any{"destination": p.form("destination")}
			if rp := p.form("restore_point"); rp != "" {
				idx, _ := strconv.ParseUint(rp, 10, 64)
				req["index"] = idx
			} else if t := p.form("time"); t != "" {
				req["time"] = t
			}
			if as := p.form("as"); as != "" {
				req["as"] = as
			}
			if act == "restore" {
				p.do("POST", base+"/restore", req, "Restored "+name)
				break
			}
			// The preview runs the restore's own planning and writes
			// nothing; the confirmation form carries the same choice.
			res := p.do("POST", base+"/restore/preview", req, "")
			if res.ok() {
				p.Data["preview"] = res.Body
				p.Data["choice"] = map[string]string{"destination": p.form("destination"), "restore_point": p.form("restore_point"),
					"time": p.form("time"), "as": p.form("as")}
			}
		case slices.Contains([]string{"rotate", "activate", "deactivate", "revoke", "destroy"}, act):
			if p.form("confirm") != id {
				p.Error, p.status = "tick the box confirming "+act+" of "+name, http.StatusBadRequest
				break
			}
			var body any = map[string]string{"reason": p.form("reason")}
			if act == "rotate" {
				body = map[string]any{}
				if v := p.form("value"); v != "" {
					body = map[string]any{"value": []byte(v)}
				}
			}
			p.do("POST", base+"/"+act, body, strings.ToUpper(act[:1])+act[1:]+" of "+name+": done")
		default:
			p.Error, p.status = "unknown action", http.StatusBadRequest
		}
	}
	p.Data["object"] = p.get(base)
	p.Data["actions"] = []string{"rotate", "activate", "deactivate", "revoke", "destroy"}
	if p.s.Sys {
		p.Data["destinations"] = p.get("/api/v1/backup/destinations")["destinations"]
		p.Data["points"] = p.get("/api/v1/restore-points")["restore_points"]
	}
	p.render("object")
}

// endpoints: enrol (the credentials bundle is the answer, once), grants,
// revoke.
func (p *page) endpoints() {
	p.Title, p.Nav = "Endpoints", "endpoints"
	if p.post() {
		if !p.s.Key {
			p.forbidden("endpoints need the key_admin role")
		} else {
			switch p.form("action") {
			case "enrol":
				res := p.do("POST", "/api/v1/endpoints", map[string]string{"name": p.form("name"), "description": p.form("description")}, "")
				if res.ok() {
					p.w.Header().Set("Content-Type", "application/json")
					p.w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", "coffer-endpoint-"+sanitize(p.form("name"))+".json"))
					p.w.Write(res.Raw) // #nosec G104 -- the client went away; nothing to do
					return
				}
			case "grant":
				p.do("PUT", "/api/v1/wallets/"+esc(p.form("wallet"))+"/grants/"+esc(p.form("endpoint")),
					map[string]string{"permission": p.form("permission")}, "Granted "+p.form("permission")+" on "+p.form("wallet")+" to "+p.form("endpoint"))
			case "ungrant":
				p.do("DELETE", "/api/v1/wallets/"+esc(p.form("wallet"))+"/grants/"+esc(p.form("endpoint")), nil, "Grant removed")
			case "revoke":
				if p.form("confirm") != p.form("endpoint") {
					p.Error, p.status = "tick the box confirming the revocation", http.StatusBadRequest
					break
				}
				p.do("POST", "/api/v1/endpoints/"+esc(p.form("endpoint"))+"/revoke", nil, "Endpoint "+p.form("endpoint")+" revoked")
			}
		}
	}
	if p.s.Key {
		p.Data["endpoints"] = p.get("/api/v1/endpoints?limit=1000")["items"]
		p.Data["wallets"] = p.get("/api/v1/wallets?limit=1000")["items"]
	}
	p.render("endpoints")
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// backups: recovery passphrase, destinations, schedules, back up now,
// catalog, verify.
func (p *page) backups() {
	p.Title, p.Nav = "Backups", "backups"
	if p.post() {
		name := p.form("name")
		d := "/api/v1/backup/destinations/" + esc(name)
		switch {
		case !p.s.Sys:
			p.forbidden("backups need the system_admin role")
		case p.form("action") == "run":
			res := p.do("POST", "/api/v1/backup/run", map[string]string{"destination": p.form("destination"), "mode": p.form("mode")}, "Backup started")
			if res.ok() {
				http.Redirect(p.w, p.r, "/ui/backups/progress?id="+qesc(fmt.Sprint(res.Body["id"])), http.StatusSeeOther)
				return
			}
		case p.form("action") == "recovery":
			p.do("POST", "/api/v1/backup/recovery-passphrase", map[string]string{"old_passphrase": p.form("old"), "new_passphrase": p.form("new")}, "Recovery passphrase set")
		case p.form("action") == "add-destination" || p.form("action") == "edit-destination":
			cfg := map[string]any{"name": name, "kind": p.form("kind"), "path": p.form("path"), "host": p.form("host"),
				"user": p.form("user"), "password": p.form("password"), "endpoint": p.form("endpoint"), "bucket": p.form("bucket"),
				"prefix": p.form("prefix"), "access_key": p.form("access_key"), "secret_key": p.form("secret_key"),
				"archiving": p.form("archiving") == "on"}
			if p.form("action") == "add-destination" {
				p.do("POST", "/api/v1/backup/destinations", cfg, "Destination "+name+" added")
			} else {
				p.do("PATCH", d, cfg, "Destination "+name+" changed")
			}
		case p.form("action") == "drill":
			res := p.do("POST", d+"/drill", nil, "")
			if res.ok() {
				if fmt.Sprint(res.Body["result"]) == "OK" {
					n, _ := res.Body["duration_seconds"].(json.Number)
					secs, _ := n.Float64()
					p.Flash = fmt.Sprintf("Restore drill of %s: OK, restored to index %v in %.1f s", name, res.Body["index"], secs)
				} else {
					p.Error, p.status = fmt.Sprintf("Restore drill of %s FAILED: %v", name, res.Body["reason"]), http.StatusOK
				}
			}
		case p.form("action") == "test":
			p.do("POST", d+"/test", nil, "Destination "+name+": probe written, read back and deleted")
		case p.form("action") == "pause":
			p.do("POST", d+"/archive/pause", nil, "Archiving to "+name+" paused")
		case p.form("action") == "resume":
			p.do("POST", d+"/archive/resume", nil, "Archiving to "+name+" resumed")
		case p.form("action") == "verify":
			http.Redirect(p.w, p.r, "/ui/backups/verify?job="+p.u.startVerify(p.r, p.s, name), http.StatusSeeOther)
			return
		case p.form("action") == "add-schedule" || p.form("action") == "edit-schedule":
			sc := map[string]any{"name": name, "destination": p.form("destination"), "type": p.form("type")}
			if p.form("kind") == "verify" {
				sc["kind"] = "verify" // a restore drill: no mode, no verify
			} else {
				sc["mode"], sc["verify"] = p.form("mode"), p.form("verify") == "on"
			}
			switch p.form("type") {
			case "once":
				sc["at"] = p.form("at")
			case "periodic":
				sc["every"] = p.form("every")
			case "cron":
				sc["cron"] = p.form("cron")
			}
			if p.form("action") == "add-schedule" {
				p.do("POST", "/api/v1/backup/schedules", sc, "Schedule "+name+" added")
			} else {
				p.do("PATCH", "/api/v1/backup/schedules/"+esc(name), sc, "Schedule "+name+" changed")
			}
		case p.form("action") == "schedule-pause":
			p.do("POST", "/api/v1/backup/schedules/"+esc(name)+"/pause", nil, "Schedule "+name+" paused")
		case p.form("action") == "schedule-resume":
			p.do("POST", "/api/v1/backup/schedules/"+esc(name)+"/resume", nil, "Schedule "+name+" resumed")
		case p.form("action") == "schedule-delete":
			p.do("DELETE", "/api/v1/backup/schedules/"+esc(name), nil, "Schedule "+name+" deleted")
		}
	}
	if p.s.Sys {
		p.Data["recovery"] = p.get("/api/v1/backup/recovery-passphrase")
		p.Data["destinations"] = p.get("/api/v1/backup/destinations")["destinations"]
		p.Data["schedules"] = p.get("/api/v1/backup/schedules")["schedules"]
		cat := "/api/v1/backup/backups"
		if d := p.q("destination"); d != "" {
			cat += "?destination=" + qesc(d)
			p.Data["catalogFor"] = d
		}
		p.Data["catalog"] = p.get(cat)["backups"]
		p.Data["current"] = p.get("/api/v1/backup/current")["running"]
	}
	p.render("backups")
}

// progress follows one backup: reloads itself every second while it runs.
func (p *page) progress() {
	p.Title, p.Nav = "Backup progress", "backups"
	id := p.q("id")
	p.Data["id"] = id
	cur, _ := p.get("/api/v1/backup/current")["running"].(map[string]any)
	if cur != nil && fmt.Sprint(cur["id"]) == id {
		p.Data["running"], p.Refresh = cur, 1
	} else if bl, ok := p.get("/api/v1/backup/backups")["backups"].([]any); ok {
		for _, b := range bl {
			if m, _ := b.(map[string]any); fmt.Sprint(m["id"]) == id {
				p.Data["record"] = m
				if st := strings.ToLower(fmt.Sprint(m["status"])); st != "done" && st != "failed" {
					p.Refresh = 1
				}
			}
		}
	}
	if p.Data["running"] == nil && p.Data["record"] == nil {
		p.Refresh = 1
	}
	p.render("progress")
}

// restore: restore points; object-level restore is on each object's page;
// a full restore is offline: the page shows the command.
func (p *page) restore() {
	p.Title, p.Nav = "Restore", "restore"
	if p.post() && p.form("action") == "create-point" {
		if !p.s.Sys {
			p.forbidden("restore points need the system_admin role")
		} else {
			p.do("POST", "/api/v1/restore-points", map[string]string{"name": p.form("name")}, "Restore point "+p.form("name")+" created")
		}
	}
	if p.s.Sys {
		p.Data["points"] = p.get("/api/v1/restore-points")["restore_points"]
		p.Data["destinations"] = p.get("/api/v1/backup/destinations")["destinations"]
	}
	target := p.q("to")
	from := p.q("from")
	if from == "" {
		from = "/mnt/backup"
	}
	cmd := "coffer restore --from " + shellQuote(from) + " --data-dir /var/lib/coffer --force"
	switch {
	case target == "" || target == "latest":
	case strings.HasPrefix(target, "point:"):
		cmd += " --to-restore-point " + shellQuote(strings.TrimPrefix(target, "point:"))
	default:
		cmd += " --to-time " + shellQuote(target)
	}
	p.Data["command"] = cmd + " --take-over"
	p.Data["from"], p.Data["to"] = from, target
	p.render("restore")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// cluster: members, leader, join tokens, switchover, remove node.
func (p *page) cluster() {
	p.Title, p.Nav = "Cluster", "cluster"
	if p.post() {
		switch {
		case !p.s.Sys:
			p.forbidden("cluster changes need the system_admin role")
		case p.form("action") == "switchover":
			res := p.do("POST", "/api/v1/cluster/switchover", map[string]string{"to": p.form("to")}, "")
			if res.ok() {
				p.Flash = "Switchover done: the leader is " + fmt.Sprint(res.Body["leader"])
			}
		case p.form("action") == "token":
			res := p.do("POST", "/api/v1/cluster/tokens", map[string]string{"ttl": p.form("ttl")}, "Join token created (shown once)")
			if res.ok() {
				p.Data["token"] = res.Body
			}
		case p.form("action") == "remove":
			if p.form("confirm") != p.form("node") {
				p.Error, p.status = "tick the box confirming the removal", http.StatusBadRequest
				break
			}
			p.do("DELETE", "/api/v1/cluster/nodes/"+esc(p.form("node")), nil, "Node "+p.form("node")+" removed")
		}
	}
	p.Data["cluster"] = p.get("/api/v1/cluster")
	p.render("cluster")
}

// audit: newest first, filtered here by actor, action, object and time.
func (p *page) audit() {
	p.Title, p.Nav = "Audit", "audit"
	if p.post() && p.form("action") == "verify" {
		if !p.s.Aud {
			p.forbidden("verifying the audit log needs the audit_manager role")
		} else if res := p.do("POST", "/api/v1/audit/verify", nil, "Audit chain verified"); res.ok() {
			p.Data["report"] = res.Body
		}
	}
	if p.s.Aud {
		path := "/api/v1/audit?order=newest&limit=1000"
		if b := p.q("before"); b != "" {
			path += "&before=" + qesc(b)
		}
		page := p.get(path)
		var recs []any
		all, _ := page["records"].([]any)
		actor, action, object, since := p.q("actor"), p.q("op"), p.q("object"), p.q("since")
		for _, r := range all {
			m, _ := r.(map[string]any)
			if actor != "" && !strings.Contains(fmt.Sprint(m["actor"]), actor) ||
				action != "" && !strings.Contains(fmt.Sprint(m["operation"]), action) ||
				object != "" && !strings.Contains(fmt.Sprint(m["objects"]), object) ||
				since != "" && fmt.Sprint(m["time"]) < since {
				continue
			}
			recs = append(recs, m)
		}
		p.Data["records"] = recs
		p.Data["next"] = page["next_before"]
	}
	p.Data["query"] = p.r.URL.Query()
	p.render("audit")
}

// users: create, roles, disable, reset password (system administrators).
func (p *page) users() {
	p.Title, p.Nav = "Users", "users"
	if p.post() {
		name := p.form("name")
		u := "/api/v1/users/" + esc(name)
		switch {
		case !p.s.Sys:
			p.forbidden("users need the system_admin role")
		case p.form("action") == "create":
			p.do("POST", "/api/v1/users", map[string]any{"name": name, "password": p.form("password"), "roles": p.r.PostForm["roles"]}, "User "+name+" created")
		case p.form("action") == "roles":
			roles := p.r.PostForm["roles"]
			p.do("PATCH", u, map[string]any{"roles": roles}, "Roles of "+name+" set")
		case p.form("action") == "disable":
			p.do("PATCH", u, map[string]any{"disabled": true}, "User "+name+" disabled")
		case p.form("action") == "enable":
			p.do("PATCH", u, map[string]any{"disabled": false}, "User "+name+" enabled")
		case p.form("action") == "password":
			p.do("PATCH", u, map[string]any{"password": p.form("password")}, "Password of "+name+" reset")
		}
	}
	if p.s.Sys {
		p.Data["users"] = p.get("/api/v1/users?limit=1000")["items"]
	}
	p.Data["roles"] = []string{"system_admin", "key_admin", "audit_manager"}
	p.render("users")
}
