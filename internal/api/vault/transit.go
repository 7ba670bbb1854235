package vault

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

// serveTransit dispatches a Transit request: rest is what follows /v1/<mount>/.
func (a *api) serveTransit(q *request, m service.Mount, rest, method string) {
	parts := strings.Split(rest, "/")
	post := method == http.MethodPost || method == http.MethodPut
	switch {
	case len(parts) == 1 && parts[0] == "keys" && method == "LIST",
		len(parts) == 2 && parts[0] == "keys" && parts[1] == "" && method == "LIST":
		q.op = "transit.keys.list"
		a.transitList(q, m)
	case len(parts) == 2 && parts[0] == "keys" && parts[1] != "":
		switch method {
		case http.MethodGet:
			q.op = "transit.keys.read"
			a.transitRead(q, m, parts[1])
		case http.MethodPost, http.MethodPut:
			q.op = "transit.keys.create"
			a.transitCreate(q, m, parts[1])
		default:
			q.op = "transit.keys"
			unsupportedOperation(q)
		}
	case len(parts) == 3 && parts[0] == "keys" && parts[1] != "" && parts[2] == "rotate":
		q.op = "transit.keys.rotate"
		onlyPost(post, q, func(q *request) { a.transitRotate(q, m, parts[1]) })
	case len(parts) == 2 && parts[1] != "" && (parts[0] == "encrypt" || parts[0] == "decrypt" || parts[0] == "rewrap"):
		q.op = "transit." + parts[0]
		onlyPost(post, q, func(q *request) { a.transitCrypt(q, m, parts[0], parts[1]) })
	case len(parts) == 3 && parts[0] == "datakey" && (parts[1] == "plaintext" || parts[1] == "wrapped") && parts[2] != "":
		q.op = "transit.datakey"
		onlyPost(post, q, func(q *request) { a.transitDataKey(q, m, parts[1] == "plaintext", parts[2]) })
	case len(parts) == 3 && parts[0] == "keys" && parts[1] != "" && parts[2] == "config":
		q.op = "transit.keys.config"
		onlyPost(post, q, func(q *request) { a.transitKeyConfig(q, m, parts[1]) })
	case (len(parts) == 2 || len(parts) == 3) && parts[1] != "" && (parts[0] == "hmac" || parts[0] == "verify"):
		q.op = "transit." + parts[0]
		alg := ""
		if len(parts) == 3 {
			alg = parts[2]
		}
		if parts[0] == "hmac" {
			onlyPost(post, q, func(q *request) { a.transitHMAC(q, m, parts[1], alg) })
		} else {
			onlyPost(post, q, func(q *request) { a.transitVerify(q, m, parts[1], alg) })
		}
	case (len(parts) == 2 || len(parts) == 3) && parts[1] != "" && parts[0] == "sign":
		q.op = "transit.sign"
		alg := ""
		if len(parts) == 3 {
			alg = parts[2]
		}
		onlyPost(post, q, func(q *request) { a.transitSign(q, m, parts[1], alg) })
	case parts[0] == "random" && len(parts) <= 4:
		q.op = "transit.random"
		onlyPost(post, q, func(q *request) { a.transitRandom(q, parts[1:]) })
	case parts[0] == "hash" && len(parts) <= 2:
		q.op = "transit.hash"
		alg := ""
		if len(parts) == 2 {
			alg = parts[1]
		}
		onlyPost(post, q, func(q *request) { a.transitHash(q, alg) })
	default:
		q.op = "unsupported"
		unsupportedPath(q)
	}
}

func onlyPost(post bool, q *request, h handler) {
	if !post {
		unsupportedOperation(q)
		return
	}
	h(q)
}

// keyInfo is a Transit key as Vault's keys/<name> read shows it.
func keyInfo(k service.TransitKey) map[string]any {
	keys := map[string]int64{}
	minDec := uint64(0)
	for v, t := range k.Versions {
		keys[strconv.FormatUint(v, 10)] = t.Unix()
		if minDec == 0 || v < minDec {
			minDec = v
		}
	}
	if minDec == 0 {
		minDec = 1
	}
	signing := len(k.PublicKeys) > 0 || k.Type == service.TransitECDSAP256 || k.Type == service.TransitECDSAP384
	var keyMap any = keys
	if signing {
		// Vault shows a signing key's versions with their public keys.
		pk := map[string]any{}
		for v, t := range k.Versions {
			pk[strconv.FormatUint(v, 10)] = map[string]any{"name": strings.ToUpper(strings.TrimPrefix(k.Type, "ecdsa-")),
				"creation_time": t.UTC().Format(time.RFC3339Nano),
				"public_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k.PublicKeys[v]}))}
		}
		keyMap = pk
	}
	return map[string]any{"name": k.Name, "type": k.Type, "keys": keyMap, "latest_version": k.Latest,
		"min_available_version": 0, "min_decryption_version": minDec, "min_encryption_version": 0,
		"deletion_allowed": false, "derived": false, "exportable": false, "allow_plaintext_backup": false,
		"supports_encryption": !signing, "supports_decryption": !signing, "supports_derivation": false, "supports_signing": signing,
		"imported_key": false, "auto_rotate_period": 0, "state": k.State}
}

func (a *api) transitList(q *request, m service.Mount) {
	keys, err := a.svc.Objects.TransitKeys(q.r.Context(), m.Wallet)
	if err != nil {
		q.fail(err)
		return
	}
	q.reply(http.StatusOK, "transit", map[string]any{"keys": keys})
}

func (a *api) transitRead(q *request, m service.Mount, name string) {
	k, err := a.svc.Objects.TransitKeyInfo(q.r.Context(), m.Wallet, name)
	if err != nil {
		q.fail(err)
		return
	}
	q.reply(http.StatusOK, "transit", keyInfo(k))
}

// refuseTrue fails when a feature Coffer's Transit does not offer is asked for.
func refuseTrue(body map[string]json.RawMessage, fields ...string) error {
	for _, f := range fields {
		b, err := boolField(body, f)
		if err != nil {
			return err
		}
		if b {
			return fmt.Errorf("%w: %s is not supported by Coffer's Transit", service.ErrInvalid, f)
		}
	}
	return nil
}

// transitCreateRequest decodes a keys/<name> create body.
func transitCreateRequest(body map[string]json.RawMessage) (typ string, err error) {
	if err := refuseTrue(body, "derived", "exportable", "allow_plaintext_backup", "convergent_encryption"); err != nil {
		return "", err
	}
	if p, err := stringField(body, "auto_rotate_period"); err == nil && p != "" && p != "0" && p != "0s" {
		return "", fmt.Errorf("%w: auto_rotate_period is not supported; rotate with keys/<name>/rotate", service.ErrInvalid)
	}
	return stringField(body, "type")
}

func (a *api) transitCreate(q *request, m service.Mount, name string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("type", "derived", "exportable", "allow_plaintext_backup", "convergent_encryption", "auto_rotate_period")
	typ, err := transitCreateRequest(q.body)
	if err != nil {
		q.fail(err)
		return
	}
	k, err := a.svc.Objects.CreateTransitKey(q.r.Context(), m.Wallet, name, typ)
	if err != nil {
		q.fail(err)
		return
	}
	q.reply(http.StatusOK, "transit", keyInfo(k))
}

func (a *api) transitRotate(q *request, m service.Mount, name string) {
	k, err := a.svc.Objects.RotateTransitKey(q.r.Context(), m.Wallet, name)
	if err != nil {
		q.fail(err)
		return
	}
	q.reply(http.StatusOK, "transit", keyInfo(k))
}

// transitItem decodes one encrypt/decrypt/rewrap input (the body itself, or
// one batch_input element).
func transitItem(op string, in map[string]json.RawMessage) (service.TransitItem, error) {
	var it service.TransitItem
	var err error
	if ctx, err := stringField(in, "context"); err != nil {
		return it, err
	} else if ctx != "" {
		return it, fmt.Errorf("%w: context is for derived keys, which Coffer's Transit does not support", service.ErrInvalid)
	}
	if it.AssociatedData, err = base64Field(in, "associated_data"); err != nil {
		return it, err
	}
	if it.Reference, err = stringField(in, "reference"); err != nil {
		return it, err
	}
	if op != "decrypt" {
		if it.KeyVersion, _, err = uintField(in, "key_version"); err != nil {
			return it, err
		}
	}
	switch op {
	case "encrypt":
		if _, ok := in["plaintext"]; !ok {
			return it, fmt.Errorf("%w: missing plaintext to encrypt", service.ErrInvalid)
		}
		if it.Plaintext, err = base64Field(in, "plaintext"); err != nil {
			return it, err
		}
		if it.Plaintext == nil {
			it.Plaintext = []byte{}
		}
	default:
		if it.Ciphertext, err = stringField(in, "ciphertext"); err != nil {
			return it, err
		}
		if it.Ciphertext == "" {
			return it, fmt.Errorf("%w: missing ciphertext to %s", service.ErrInvalid, op)
		}
	}
	return it, nil
}

// transitCryptRequest decodes an encrypt, decrypt or rewrap body into its
// items; batch is whether it was a batch_input. An item that does not decode
// fails that item only (bad[i]).
func transitCryptRequest(op string, body map[string]json.RawMessage) (items []service.TransitItem, bad []error, batch bool, err error) {
	if err := refuseTrue(body, "convergent_encryption"); err != nil {
		return nil, nil, false, err
	}
	if t, err := stringField(body, "type"); err != nil {
		return nil, nil, false, err
	} else if t != "" && t != service.TransitAES256 && t != service.TransitAES128 {
		return nil, nil, false, fmt.Errorf("%w: type %q: Transit keys here are %s or %s", service.ErrInvalid, t, service.TransitAES256, service.TransitAES128)
	}
	list, err := batchField(body)
	if err != nil {
		return nil, nil, false, err
	}
	if list == nil {
		it, err := transitItem(op, body)
		if err != nil {
			return nil, nil, false, err
		}
		return []service.TransitItem{it}, []error{nil}, false, nil
	}
	items, bad = make([]service.TransitItem, len(list)), make([]error, len(list))
	for i, in := range list {
		items[i], bad[i] = transitItem(op, in)
	}
	return items, bad, true, nil
}

func (a *api) transitCrypt(q *request, m service.Mount, op, name string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("plaintext", "ciphertext", "associated_data", "context", "key_version", "reference", "batch_input", "type",
		"convergent_encryption", "partial_failure_response_code", "nonce")
	items, bad, batch, err := transitCryptRequest(op, q.body)
	if err != nil {
		q.fail(err)
		return
	}
	partialCode, err := intField(q.body, "partial_failure_response_code")
	if err == nil && partialCode != 0 && (partialCode < 200 || partialCode > 599) {
		err = invalid("partial_failure_response_code", "want an HTTP status code from 200 to 599")
	}
	if err != nil {
		q.fail(err)
		return
	}
	// Items that did not decode are not sent to the service; their slot
	// keeps the decoding error.
	var send []service.TransitItem
	var idx []int
	for i, it := range items {
		if bad[i] == nil {
			send, idx = append(send, it), append(idx, i)
		}
	}
	results := make([]service.TransitResult, len(items))
	for i := range items {
		results[i] = service.TransitResult{Reference: items[i].Reference, Err: bad[i]}
	}
	if len(send) > 0 {
		var got []service.TransitResult
		ctx := q.r.Context()
		switch op {
		case "encrypt":
			got, err = a.svc.Objects.TransitEncrypt(ctx, m.Wallet, name, send, true)
		case "decrypt":
			got, err = a.svc.Objects.TransitDecrypt(ctx, m.Wallet, name, send)
		default:
			got, err = a.svc.Objects.TransitRewrap(ctx, m.Wallet, name, send)
		}
		if err != nil {
			q.fail(err)
			return
		}
		for j, i := range idx {
			results[i] = got[j]
		}
	}
	if !batch {
		r := results[0]
		if r.Err != nil {
			q.fail(r.Err)
			return
		}
		q.reply(http.StatusOK, "transit", resultData(op, r))
		return
	}
	out := make([]map[string]any, len(results))
	failed := 0
	var firstErr error
	for i, r := range results {
		if r.Err != nil {
			failed++
			if firstErr == nil {
				firstErr = r.Err
			}
			out[i] = map[string]any{"error": r.Err.Error(), "reference": r.Reference}
			continue
		}
		out[i] = resultData(op, r)
		out[i]["reference"] = r.Reference
	}
	status := http.StatusOK
	if failed > 0 {
		// Vault: 400 when an item failed, unless partial_failure_response_code
		// says otherwise and not every item failed.
		status = http.StatusBadRequest
		if partialCode != 0 && failed < len(results) {
			status = partialCode
		}
		_, code := classify(firstErr)
		q.w.code, q.w.msg = code, fmt.Sprintf("%d of %d batch items failed; first: %v", failed, len(results), firstErr)
	}
	q.reply(status, "transit", map[string]any{"batch_results": out})
}

func resultData(op string, r service.TransitResult) map[string]any {
	if op == "decrypt" {
		return map[string]any{"plaintext": base64.StdEncoding.EncodeToString(r.Plaintext)}
	}
	return map[string]any{"ciphertext": r.Ciphertext, "key_version": r.KeyVersion}
}

func (a *api) transitDataKey(q *request, m service.Mount, plaintext bool, name string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("bits", "context", "nonce", "associated_data")
	bits, err := intField(q.body, "bits")
	if err != nil {
		q.fail(err)
		return
	}
	if ctx, err := stringField(q.body, "context"); err != nil || ctx != "" {
		if err == nil {
			err = fmt.Errorf("%w: context is for derived keys, which Coffer's Transit does not support", service.ErrInvalid)
		}
		q.fail(err)
		return
	}
	aad, err := base64Field(q.body, "associated_data")
	if err != nil {
		q.fail(err)
		return
	}
	dk, err := a.svc.Objects.TransitDataKey(q.r.Context(), m.Wallet, name, bits, plaintext, aad)
	if err != nil {
		q.fail(err)
		return
	}
	data := map[string]any{"ciphertext": dk.Ciphertext, "key_version": dk.KeyVersion}
	if plaintext {
		data["plaintext"] = base64.StdEncoding.EncodeToString(dk.Plaintext)
		clear(dk.Plaintext)
	}
	q.reply(http.StatusOK, "transit", data)
}
