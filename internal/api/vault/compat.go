package vault

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

// The paths Vault's CLI and client libraries call around the secrets
// engines: the UI mount lookups (the CLI's KV version preflight), the
// leader, capabilities, token self-service and certificate login.

// rawWithData answers data in the envelope and, as Vault does for sys
// paths, the same fields at the top level.
func (q *request) rawWithData(data map[string]any) {
	out := map[string]any{"request_id": q.reqID, "lease_id": "", "renewable": false, "lease_duration": 0, "data": data,
		"wrap_info": nil, "warnings": q.warningsOrNil(), "auth": nil}
	for k, v := range data {
		out[k] = v
	}
	writeJSON(q.w, http.StatusOK, out)
}

// authMounts are the auth methods Coffer answers, as sys/internal/ui/mounts lists them.
func authMounts() map[string]any {
	out := map[string]any{}
	for _, typ := range []string{"token", "cert"} {
		out[typ+"/"] = map[string]any{"type": typ, "description": "", "accessor": "auth_" + typ, "local": false, "seal_wrap": false,
			"external_entropy_access": false, "options": nil, "config": map[string]any{"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false}}
	}
	return out
}

// uiMounts is sys/internal/ui/mounts: the mounts the caller can see.
func (a *api) uiMounts(q *request) {
	ms, err := a.svc.Objects.ReadableMounts(q.r.Context())
	if err != nil {
		q.fail(err)
		return
	}
	secret := map[string]any{}
	for _, m := range ms {
		secret[m.Path+"/"] = mountInfo(m)
	}
	q.reply(http.StatusOK, "", map[string]any{"secret": secret, "auth": authMounts()})
}

// uiMount is sys/internal/ui/mounts/<path>: the mount a path is under, with
// its KV version (what the CLI's kv commands ask first). Like Vault, a path
// under no mount the caller may read is "permission denied".
func (a *api) uiMount(q *request, path string) {
	mount, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	m, err := a.svc.Objects.DescribeMount(q.r.Context(), mount)
	if err != nil {
		if errors.Is(err, service.ErrNotFound) {
			err = fmt.Errorf("%w: preflight capability check returned 403, please ensure client's policies grant access to path %q", service.ErrForbidden, path+"/")
		}
		q.fail(err)
		return
	}
	info := mountInfo(m)
	info["path"] = m.Path + "/"
	q.reply(http.StatusOK, "", info)
}

// leader is sys/leader, about this node (Vault answers it without a token).
func (a *api) leader(q *request) {
	url, self, ok := a.svc.Cluster.LeaderAPI()
	clustered := a.svc.Cluster.Clustered()
	if !clustered {
		self, ok = true, true
	}
	if !ok {
		url = ""
	}
	applied := a.svc.Cluster.AppliedIndex()
	writeJSON(q.w, http.StatusOK, map[string]any{"ha_enabled": clustered, "is_self": self, "active_time": "0001-01-01T00:00:00Z",
		"leader_address": url, "leader_cluster_address": url, "performance_standby": false, "performance_standby_last_remote_wal": 0,
		"raft_committed_index": applied, "raft_applied_index": applied})
}

// capabilities maps a permission to Vault's capability names.
func capabilities(p service.Permission) []string {
	switch p {
	case service.PermRead:
		return []string{"list", "read"}
	case service.PermReadModify:
		return []string{"create", "list", "patch", "read", "update"}
	case service.PermManage:
		return []string{"create", "delete", "list", "patch", "read", "update"}
	}
	return []string{"deny"}
}

// capabilitiesSelf is sys/capabilities-self: for each path, what the
// caller's grant on the wallet of the path's mount allows. Root is "root";
// paths outside a mount are "deny" for everyone else.
func (a *api) capabilitiesSelf(q *request) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("path", "paths")
	var paths []string
	for _, f := range []string{"paths", "path"} {
		raw, ok := q.body[f]
		if !ok || isNull(raw) {
			continue
		}
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			var one string
			if err := json.Unmarshal(raw, &one); err != nil {
				q.fail(invalid(f, "want a string or a list of strings"))
				return
			}
			list = strings.Split(one, ",")
		}
		paths = append(paths, list...)
	}
	if len(paths) == 0 {
		q.fail(fmt.Errorf("%w: missing paths", service.ErrInvalid))
		return
	}
	who, err := a.svc.Access.WhoAmI(q.r.Context())
	if err != nil {
		q.fail(err)
		return
	}
	data := map[string]any{}
	var all []string
	for _, p := range paths {
		p = strings.TrimPrefix(strings.TrimSpace(p), "/")
		caps := []string{"deny"}
		if who.Kind == service.KindRoot {
			caps = []string{"root"}
		} else if mount, _, _ := strings.Cut(p, "/"); !strings.HasPrefix(p, "sys/") && !strings.HasPrefix(p, "auth/") {
			if m, err := a.svc.Objects.ResolveMount(mount); err == nil {
				perm, err := a.svc.Objects.WalletPermission(q.r.Context(), m.Wallet)
				if err != nil {
					q.fail(err)
					return
				}
				caps = capabilities(perm)
			}
		}
		data[p] = caps
		all = append(all, caps...)
	}
	if len(paths) == 1 {
		data["capabilities"] = data[strings.TrimPrefix(strings.TrimSpace(paths[0]), "/")]
	} else {
		data["capabilities"] = all
	}
	q.rawWithData(data)
}

// policies names the caller's rights as Vault policies: "root", an
// endpoint's grants ("wallet:permission"), or a user's roles.
func (a *api) policies(q *request, who service.Whoami) ([]string, error) {
	out := []string{}
	switch who.Kind {
	case service.KindRoot:
		out = append(out, "root")
	case service.KindEndpoint:
		g, err := a.svc.Access.CallerGrants(q.r.Context())
		if err != nil {
			return nil, err
		}
		out = append(out, g...)
	default:
		for _, r := range who.Roles {
			out = append(out, string(r))
		}
	}
	return out, nil
}

// renewSelf is auth/token/renew-self. Coffer's tokens are not renewable:
// one without an expiry is answered as renewed (nothing to do), one with an
// expiry is refused (log in again), as Vault refuses a non-renewable token.
func (a *api) renewSelf(q *request) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("increment")
	who, err := a.svc.Access.WhoAmI(q.r.Context())
	if err != nil {
		q.fail(err)
		return
	}
	if who.Expires != nil {
		q.fail(fmt.Errorf("%w: lease is not renewable; log in again before the token expires at %s", service.ErrInvalid, who.Expires.UTC().Format(time.RFC3339)))
		return
	}
	pol, err := a.policies(q, who)
	if err != nil {
		q.fail(err)
		return
	}
	writeJSON(q.w, http.StatusOK, envelope{RequestID: q.reqID, Warnings: q.warningsOrNil(), Auth: authBlock("", a.svc.Access.CallerAccessor(q.r.Context()), pol, 0, who)})
}

// revokeSelf is auth/token/revoke-self.
func (a *api) revokeSelf(q *request) {
	if err := a.svc.Access.RevokeSelf(q.r.Context()); err != nil {
		q.fail(err)
		return
	}
	q.noContent()
}

// authBlock is Vault's "auth" object of a login or renewal.
func authBlock(tok, accessor string, policies []string, ttl int, who service.Whoami) map[string]any {
	return map[string]any{"client_token": tok, "accessor": accessor, "policies": policies, "token_policies": policies,
		"identity_policies": nil, "metadata": map[string]string{"kind": who.Kind, "name": who.Name}, "lease_duration": ttl,
		"renewable": false, "entity_id": "", "token_type": "service", "orphan": true, "mfa_requirement": nil, "num_uses": 0}
}

// certLogin is auth/cert/login: an enrolled endpoint's client certificate
// on the TLS connection gets a login token with the endpoint's grants.
// "name" (a cert role in Vault) may name the endpoint; nothing else.
func (a *api) certLogin(q *request) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("name")
	name, err := stringField(q.body, "name")
	if err != nil {
		q.fail(err)
		return
	}
	who, err := a.svc.Access.WhoAmI(q.r.Context())
	if err != nil {
		q.fail(err)
		return
	}
	if name != "" && (who.Kind != service.KindEndpoint || name != who.Name) {
		q.fail(fmt.Errorf("%w: cert role %q: Coffer's cert roles are endpoint names, and the certificate is not that endpoint's", service.ErrUnauthenticated, name))
		return
	}
	lt, err := a.svc.Access.CertLogin(q.r.Context())
	if err != nil {
		q.fail(err)
		return
	}
	q.loginReply(lt)
}

// approleLogin is auth/approle/login: an endpoint's role_id (its name) and
// a secret_id issued with "coffer endpoint approle" get a login token.
func (a *api) approleLogin(q *request) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("role_id", "secret_id")
	roleID, err := stringField(q.body, "role_id")
	if err != nil {
		q.fail(err)
		return
	}
	secretID, err := stringField(q.body, "secret_id")
	if err != nil {
		q.fail(err)
		return
	}
	lt, err := a.svc.Access.AppRoleLogin(q.r.Context(), roleID, secretID)
	if err != nil {
		q.fail(err)
		return
	}
	q.loginReply(lt)
}

// loginReply answers a login with Vault's auth block.
func (q *request) loginReply(lt service.LoginToken) {
	pol := lt.Grants
	if pol == nil {
		pol = []string{}
	}
	who := service.Whoami{Kind: service.KindEndpoint, Name: lt.Endpoint}
	ttl := int(time.Until(lt.Expires).Seconds())
	writeJSON(q.w, http.StatusOK, envelope{RequestID: q.reqID, Warnings: q.warningsOrNil(), Auth: authBlock(lt.Token, lt.Accessor, pol, ttl, who)})
}

// mergePatch applies an RFC 7386 JSON merge patch to target.
func mergePatch(target any, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], v)
	}
	return t
}

// kvPatch is PATCH <mount>/data/<path>: a JSON merge patch of the latest
// version's data, written as a new version (check-and-set on the version
// read, or on options.cas when given).
func (a *api) kvPatch(q *request, m service.Mount, path string) {
	if ct, _, _ := mime.ParseMediaType(q.r.Header.Get("Content-Type")); ct != "application/merge-patch+json" {
		q.failStatus(http.StatusUnsupportedMediaType, "invalid_request", fmt.Sprintf("PATCH requires Content-Type application/merge-patch+json, got %q", ct))
		return
	}
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("data", "options")
	patch, cas, err := kvWriteRequest(q.body)
	if err != nil {
		q.fail(err)
		return
	}
	var p any
	if err := json.Unmarshal(patch, &p); err != nil {
		q.fail(invalid("data", "want a JSON object"))
		return
	}
	cur, err := a.svc.Objects.KVGet(q.r.Context(), m.Wallet, path, 0)
	if err != nil {
		q.fail(err)
		return
	}
	var doc any
	if err := json.Unmarshal(cur.Data, &doc); err != nil {
		q.fail(fmt.Errorf("reading version %d of %s: %w", cur.Version.Version, path, err))
		return
	}
	merged, err := json.Marshal(mergePatch(doc, p))
	if err != nil {
		q.fail(fmt.Errorf("encoding the patched data: %w", err))
		return
	}
	if cas == nil {
		v := cur.Version.Version
		cas = &v
	}
	v, err := a.svc.Objects.KVPut(q.r.Context(), m.Wallet, path, merged, cas)
	if err != nil {
		q.fail(err)
		return
	}
	q.reply(http.StatusOK, "kv", versionMeta(v.Version, v.CustomMetadata))
}

// subkeysOf replaces every leaf of a JSON document with null, down to depth
// levels (0: all).
func subkeysOf(v any, depth, level int) any {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	out := map[string]any{}
	for k, c := range m {
		if depth > 0 && level >= depth {
			out[k] = nil
			continue
		}
		out[k] = subkeysOf(c, depth, level+1)
	}
	return out
}

// kvSubkeys is GET <mount>/subkeys/<path>: the secret's keys without values.
func (a *api) kvSubkeys(q *request, m service.Mount, path string) {
	var version uint64
	depth := 0
	qs := q.r.URL.Query()
	if v := qs.Get("version"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			q.fail(invalid("version", "want a non-negative integer"))
			return
		}
		version = n
	}
	if v := qs.Get("depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			q.fail(invalid("depth", "want a non-negative integer"))
			return
		}
		depth = n
	}
	sec, err := a.svc.Objects.KVGet(q.r.Context(), m.Wallet, path, version)
	if err != nil {
		if errors.Is(err, service.ErrNotFound) && sec.Version.Version != 0 {
			q.kvVersionGone(err, sec, "subkeys") // as a read
			return
		}
		q.fail(err)
		return
	}
	var doc any
	if err := json.Unmarshal(sec.Data, &doc); err != nil {
		q.fail(fmt.Errorf("reading version %d of %s: %w", sec.Version.Version, path, err))
		return
	}
	q.reply(http.StatusOK, "kv", map[string]any{"subkeys": subkeysOf(doc, depth, 1), "metadata": versionMeta(sec.Version, sec.CustomMetadata)})
}

// encodeBytes formats b as Transit's "format" asks: base64 (default) or hex.
func encodeBytes(b []byte, format string) (string, error) {
	switch format {
	case "", "base64":
		return base64.StdEncoding.EncodeToString(b), nil
	case "hex":
		return hex.EncodeToString(b), nil
	}
	return "", invalid("format", "unsupported encoding format %q (base64 or hex)", format)
}

// transitRandom is [<mount>/]random[/<source>][/<bytes>][/<format>].
func (a *api) transitRandom(q *request, parts []string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("bytes", "format", "source")
	n, err := intField(q.body, "bytes")
	if err != nil {
		q.fail(err)
		return
	}
	format, err := stringField(q.body, "format")
	if err != nil {
		q.fail(err)
		return
	}
	for _, p := range parts {
		switch p {
		case "", "platform", "all":
		case "hex", "base64":
			format = p
		default:
			v, err := strconv.Atoi(p)
			if err != nil {
				q.fail(invalid("bytes", "%q is not a number of bytes", p))
				return
			}
			n = v
		}
	}
	if src, _ := stringField(q.body, "source"); src == "seal" {
		q.fail(fmt.Errorf("%w: source %q: Coffer has no seal entropy source; use platform", service.ErrInvalid, src))
		return
	}
	b, err := a.svc.Objects.TransitRandom(q.r.Context(), n)
	if err != nil {
		q.fail(err)
		return
	}
	out, err := encodeBytes(b, format)
	clear(b)
	if err != nil {
		q.fail(err)
		return
	}
	q.reply(http.StatusOK, "transit", map[string]any{"random_bytes": out})
}

// transitHash is [<mount>/]hash[/<algorithm>].
func (a *api) transitHash(q *request, alg string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("input", "algorithm", "format")
	if alg == "" {
		var err error
		if alg, err = stringField(q.body, "algorithm"); err != nil {
			q.fail(err)
			return
		}
	}
	format, err := stringField(q.body, "format")
	if err != nil {
		q.fail(err)
		return
	}
	if _, ok := q.body["input"]; !ok {
		q.fail(fmt.Errorf("%w: missing input to hash", service.ErrInvalid))
		return
	}
	in, err := base64Field(q.body, "input")
	if err != nil {
		q.fail(err)
		return
	}
	sum, err := a.svc.Objects.TransitHash(q.r.Context(), alg, in)
	if err != nil {
		q.fail(err)
		return
	}
	out, err := encodeBytes(sum, format)
	if err != nil {
		q.fail(err)
		return
	}
	q.reply(http.StatusOK, "transit", map[string]any{"sum": out})
}

// noBatch refuses a batch_input on a route that takes one input, naming
// it (it would otherwise be ignored and the request fail on the missing
// single input).
func noBatch(body map[string]json.RawMessage, route string) error {
	if raw, ok := body["batch_input"]; ok && !isNull(raw) {
		return invalid("batch_input", "Coffer's Transit %s takes one input per request; send the items one by one", route)
	}
	return nil
}

// transitHMAC is <mount>/hmac/<name>[/<algorithm>].
func (a *api) transitHMAC(q *request, m service.Mount, name, alg string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("input", "algorithm", "hash_algorithm", "key_version", "name")
	if err := noBatch(q.body, "hmac"); err != nil {
		q.fail(err)
		return
	}
	alg, version, in, err := macRequest(q.body, alg)
	if err != nil {
		q.fail(err)
		return
	}
	mac, _, err := a.svc.Objects.TransitHMAC(q.r.Context(), m.Wallet, name, alg, version, in)
	if err != nil {
		q.fail(err)
		return
	}
	q.reply(http.StatusOK, "transit", map[string]any{"hmac": mac})
}

func macRequest(body map[string]json.RawMessage, alg string) (string, uint64, []byte, error) {
	// hash_algorithm is Vault's name for it; algorithm its older alias.
	for _, f := range []string{"hash_algorithm", "algorithm"} {
		if alg != "" {
			break
		}
		var err error
		if alg, err = stringField(body, f); err != nil {
			return "", 0, nil, err
		}
	}
	version, _, err := uintField(body, "key_version")
	if err != nil {
		return "", 0, nil, err
	}
	if _, ok := body["input"]; !ok {
		return "", 0, nil, fmt.Errorf("%w: missing input", service.ErrInvalid)
	}
	in, err := base64Field(body, "input")
	return alg, version, in, err
}

// signRequest decodes a sign or verify body (hash algorithm from the URL
// or hash_algorithm/algorithm, prehashed, marshaling_algorithm asn1 or jws).
func signRequest(body map[string]json.RawMessage, alg string) (service.SignRequest, error) {
	var r service.SignRequest
	var err error
	if r.HashAlgorithm, r.KeyVersion, r.Input, err = macRequest(body, alg); err != nil {
		return r, err
	}
	if r.Prehashed, err = boolField(body, "prehashed"); err != nil {
		return r, err
	}
	switch m, err := stringField(body, "marshaling_algorithm"); {
	case err != nil:
		return r, err
	case m == "jws":
		r.JWS = true
	case m != "" && m != "asn1":
		return r, invalid("marshaling_algorithm", "%q: use asn1 or jws", m)
	}
	if sa, err := stringField(body, "signature_algorithm"); err != nil || (sa != "" && sa != "pss" && sa != "pkcs1v15") {
		if err == nil {
			err = invalid("signature_algorithm", "%q: use pss or pkcs1v15 (RSA only; ignored for ECDSA)", sa)
		}
		return r, err
	}
	if _, ok := body["batch_input"]; ok {
		return r, fmt.Errorf("%w: batch_input is not supported by Coffer's sign and verify", service.ErrInvalid)
	}
	if ctx, err := stringField(body, "context"); err != nil || ctx != "" {
		if err == nil {
			err = fmt.Errorf("%w: context is for derived keys, which Coffer's Transit does not support", service.ErrInvalid)
		}
		return r, err
	}
	return r, nil
}

// transitSign is <mount>/sign/<name>[/<hash_algorithm>].
func (a *api) transitSign(q *request, m service.Mount, name, alg string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("input", "algorithm", "hash_algorithm", "key_version", "prehashed", "marshaling_algorithm", "signature_algorithm", "name", "context")
	if err := noBatch(q.body, "sign"); err != nil {
		q.fail(err)
		return
	}
	r, err := signRequest(q.body, alg)
	if err != nil {
		q.fail(err)
		return
	}
	sig, v, err := a.svc.Objects.TransitSign(q.r.Context(), m.Wallet, name, r)
	if err != nil {
		q.fail(err)
		return
	}
	q.reply(http.StatusOK, "transit", map[string]any{"signature": sig, "key_version": v})
}

// transitVerify is <mount>/verify/<name>[/<hash_algorithm>], for an hmac or
// a signature.
func (a *api) transitVerify(q *request, m service.Mount, name, alg string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("input", "algorithm", "hmac", "signature", "hash_algorithm", "signature_algorithm", "prehashed", "marshaling_algorithm", "name", "context")
	if err := noBatch(q.body, "verify"); err != nil {
		q.fail(err)
		return
	}
	mac, err := stringField(q.body, "hmac")
	if err != nil {
		q.fail(err)
		return
	}
	sig, err := stringField(q.body, "signature")
	if err != nil {
		q.fail(err)
		return
	}
	if (mac == "") == (sig == "") {
		q.fail(fmt.Errorf("%w: send either hmac or signature to verify", service.ErrInvalid))
		return
	}
	var ok bool
	if sig != "" {
		r, err := signRequest(q.body, alg)
		if err != nil {
			q.fail(err)
			return
		}
		r.Signature = sig
		ok, err = a.svc.Objects.TransitVerifySignature(q.r.Context(), m.Wallet, name, r)
		if err != nil {
			q.fail(err)
			return
		}
	} else {
		alg, _, in, err := macRequest(q.body, alg)
		if err != nil {
			q.fail(err)
			return
		}
		if ok, err = a.svc.Objects.TransitVerifyHMAC(q.r.Context(), m.Wallet, name, alg, mac, in); err != nil {
			q.fail(err)
			return
		}
	}
	q.reply(http.StatusOK, "transit", map[string]any{"valid": ok})
}

// transitKeyConfig is <mount>/keys/<name>/config. Coffer keeps no per-key
// Transit settings: a request that would change nothing is answered with
// the key; one that would change something is refused with what to use.
func (a *api) transitKeyConfig(q *request, m service.Mount, name string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("min_decryption_version", "min_encryption_version", "deletion_allowed", "exportable", "allow_plaintext_backup", "auto_rotate_period")
	k, err := a.svc.Objects.TransitKeyInfo(q.r.Context(), m.Wallet, name)
	if err != nil {
		q.fail(err)
		return
	}
	info := keyInfo(k)
	if v, ok, err := uintField(q.body, "min_decryption_version"); err != nil {
		q.fail(err)
		return
	} else if ok && v != 0 && v != info["min_decryption_version"].(uint64) {
		q.fail(fmt.Errorf("%w: min_decryption_version: Coffer keeps every version that is not destroyed usable for decryption; destroy old versions with coffer's object commands", service.ErrInvalid))
		return
	}
	if v, _, err := uintField(q.body, "min_encryption_version"); err != nil || v != 0 {
		if err == nil {
			err = fmt.Errorf("%w: min_encryption_version: encryption uses the latest version or the key_version asked for", service.ErrInvalid)
		}
		q.fail(err)
		return
	}
	if err := refuseTrue(q.body, "deletion_allowed", "exportable", "allow_plaintext_backup"); err != nil {
		q.fail(fmt.Errorf("%w (a Transit key is deleted through Coffer's object lifecycle: deactivate, then destroy)", err))
		return
	}
	if p, err := stringField(q.body, "auto_rotate_period"); err == nil && p != "" && p != "0" && p != "0s" {
		q.fail(fmt.Errorf("%w: auto_rotate_period is not supported; rotate with keys/<name>/rotate", service.ErrInvalid))
		return
	}
	q.reply(http.StatusOK, "transit", info)
}
