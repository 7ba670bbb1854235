package vault

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

// serveKV dispatches a KV v2 request: rest is what follows /v1/<mount>/.
func (a *api) serveKV(q *request, m service.Mount, rest, method string) {
	section, path, _ := strings.Cut(rest, "/")
	switch section {
	case "config":
		if path != "" {
			break
		}
		q.op = "kv.config"
		onlyMethods(method, func(q *request) {
			q.reply(http.StatusOK, "kv", map[string]any{"cas_required": false, "delete_version_after": "0s", "max_versions": 0})
		}, http.MethodGet)(q)
		return
	case "data":
		switch method {
		case http.MethodGet:
			q.op = "kv.read"
			a.kvRead(q, m, path)
		case http.MethodPost, http.MethodPut:
			q.op = "kv.write"
			a.kvWrite(q, m, path)
		case http.MethodPatch:
			q.op = "kv.patch"
			a.kvPatch(q, m, path)
		case http.MethodDelete:
			q.op = "kv.delete-latest"
			a.kvVersions(q, m, path, service.KVDelete, false)
		default:
			q.op = "kv.data"
			unsupportedOperation(q)
		}
		return
	case "metadata":
		switch method {
		case "LIST":
			q.op = "kv.list"
			a.kvList(q, m, path)
		case http.MethodGet:
			q.op = "kv.metadata.read"
			a.kvMetadata(q, m, path)
		case http.MethodPost, http.MethodPut:
			q.op = "kv.metadata.write"
			a.kvPutMetadata(q, m, path)
		case http.MethodDelete:
			q.op = "kv.metadata.delete"
			a.kvDeleteMetadata(q, m, path)
		default:
			q.op = "kv.metadata"
			unsupportedOperation(q)
		}
		return
	case "subkeys":
		q.op = "kv.subkeys"
		onlyMethods(method, func(q *request) { a.kvSubkeys(q, m, path) }, http.MethodGet)(q)
		return
	case "delete", "undelete", "destroy":
		q.op = "kv." + section
		if method != http.MethodPost && method != http.MethodPut {
			unsupportedOperation(q)
			return
		}
		a.kvVersions(q, m, path, section, true)
		return
	}
	q.op = "unsupported"
	unsupportedPath(q)
}

// vaultTime formats a time as Vault does (RFC 3339 with nanoseconds, UTC).
func vaultTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// versionMeta is one version's metadata as KV v2 shows it.
func versionMeta(v service.KVVersion, custom map[string]string) map[string]any {
	out := map[string]any{"created_time": vaultTime(v.Created), "deletion_time": "", "destroyed": v.Destroyed,
		"version": v.Version, "custom_metadata": custom}
	if v.Deleted != nil {
		out["deletion_time"] = vaultTime(*v.Deleted)
	}
	return out
}

func (a *api) kvRead(q *request, m service.Mount, path string) {
	var version uint64
	if v := queryValue(q.r, "version"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			q.fail(invalid("version", "want a non-negative integer"))
			return
		}
		version = n
	}
	sec, err := a.svc.Objects.KVGet(q.r.Context(), m.Wallet, path, version)
	if err != nil {
		if errors.Is(err, service.ErrNotFound) && sec.Version.Version != 0 {
			q.kvVersionGone(err, sec, "data")
			return
		}
		q.fail(err)
		return
	}
	q.kvReadReply(sec)
	clear(sec.Data) // the plaintext, the handler's own
}

// kvWriteRequest decodes a KV write body: {"data":{...},"options":{"cas":N}}.
func kvWriteRequest(body map[string]json.RawMessage) (data []byte, cas *uint64, err error) {
	raw, ok := body["data"]
	if !ok || isNull(raw) {
		return nil, nil, fmt.Errorf("%w: no data provided", service.ErrInvalid)
	}
	if _, err := objectField(body, "data"); err != nil {
		return nil, nil, err
	}
	opts, err := objectField(body, "options")
	if err != nil {
		return nil, nil, err
	}
	if v, ok, err := uintField(opts, "cas"); err != nil {
		return nil, nil, fmt.Errorf("options.%w", err)
	} else if ok {
		cas = &v
	}
	return raw, cas, nil
}

func (a *api) kvWrite(q *request, m service.Mount, path string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("data", "options")
	data, cas, err := kvWriteRequest(q.body)
	if err != nil {
		q.fail(err)
		return
	}
	v, err := a.svc.Objects.KVPut(q.r.Context(), m.Wallet, path, data, cas)
	if err != nil {
		q.fail(err)
		return
	}
	q.reply(http.StatusOK, "kv", versionMeta(v.Version, v.CustomMetadata))
}

// kvVersions serves delete/undelete/destroy (with a body naming versions)
// and DELETE data/<path> (the latest version).
func (a *api) kvVersions(q *request, m service.Mount, path, op string, withBody bool) {
	var versions []uint64
	if withBody {
		if err := q.readBody(); err != nil {
			q.fail(err)
			return
		}
		q.take("versions")
		var err error
		if versions, err = versionsField(q.body, "versions"); err != nil {
			q.fail(err)
			return
		}
		if len(versions) == 0 {
			q.fail(fmt.Errorf("%w: no version number provided", service.ErrInvalid))
			return
		}
	}
	if err := a.svc.Objects.KVVersions(q.r.Context(), m.Wallet, path, op, versions); err != nil {
		q.fail(err)
		return
	}
	q.noContent()
}

func (a *api) kvMetadata(q *request, m service.Mount, path string) {
	md, err := a.svc.Objects.KVMetadataOf(q.r.Context(), m.Wallet, path)
	if err != nil {
		q.fail(err)
		return
	}
	versions := map[string]any{}
	for _, v := range md.Versions {
		vm := versionMeta(v, nil)
		delete(vm, "version")
		delete(vm, "custom_metadata")
		versions[strconv.FormatUint(v.Version, 10)] = vm
	}
	q.reply(http.StatusOK, "kv", map[string]any{"cas_required": md.CASRequired, "created_time": vaultTime(md.Created),
		"current_version": md.Current, "custom_metadata": md.CustomMetadata, "delete_version_after": "0s", "max_versions": 0,
		"oldest_version": md.Oldest, "updated_time": vaultTime(md.Updated), "versions": versions})
}

func (a *api) kvPutMetadata(q *request, m service.Mount, path string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("max_versions", "cas_required", "delete_version_after", "custom_metadata")
	maxVersions, err := intField(q.body, "max_versions")
	if err != nil {
		q.fail(err)
		return
	}
	if d, err := durationField(q.body, "delete_version_after"); err != nil {
		q.fail(err)
		return
	} else if d != 0 {
		q.fail(fmt.Errorf("%w: delete_version_after %s: Coffer never deletes versions by age; use 0s", service.ErrInvalid, d))
		return
	}
	custom, customSet, err := stringMapField(q.body, "custom_metadata")
	if err != nil {
		q.fail(err)
		return
	}
	// Fields not sent keep their values, as in Vault; the service changes
	// only those named, atomically.
	ch := service.KVMetadataChange{MaxVersions: maxVersions, SetCustomMetadata: customSet, CustomMetadata: custom}
	if _, ok := q.body["cas_required"]; ok {
		b, err := boolField(q.body, "cas_required")
		if err != nil {
			q.fail(err)
			return
		}
		ch.CASRequired = &b
	}
	if err := a.svc.Objects.KVPutMetadata(q.r.Context(), m.Wallet, path, ch); err != nil {
		q.fail(err)
		return
	}
	q.noContent()
}

func (a *api) kvDeleteMetadata(q *request, m service.Mount, path string) {
	if err := a.svc.Objects.KVDeleteMetadata(q.r.Context(), m.Wallet, path); err != nil {
		q.fail(err)
		return
	}
	q.noContent()
}

func (a *api) kvList(q *request, m service.Mount, prefix string) {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	keys, more, err := a.svc.Objects.KVList(q.r.Context(), m.Wallet, prefix)
	if err != nil {
		q.fail(err)
		return
	}
	if more {
		q.warnings = append(q.warnings, fmt.Sprintf("the list stops at %d keys: list a deeper prefix to see the others", service.MaxKVListKeys()))
	}
	q.reply(http.StatusOK, "kv", map[string]any{"keys": keys})
}

// kvVersionGone answers a read of a deleted or destroyed version (err, and
// sec with its metadata) as Vault does: 404 with the version's metadata
// and dataKey ("data", "subkeys") null.
func (q *request) kvVersionGone(err error, sec service.KVSecret, dataKey string) {
	q.w.code, q.w.msg = "not_found", err.Error()
	q.reply(http.StatusNotFound, "kv", map[string]any{dataKey: nil, "metadata": versionMeta(sec.Version, sec.CustomMetadata)})
}
