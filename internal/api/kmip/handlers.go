package kmip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/coffer-kms/coffer/internal/service"
)

// Versions are the protocol versions served, most preferred first. KMIP
// 2.x changes the attribute encoding and is not served.
var Versions = []kmip.ProtocolVersion{kmip.V1_4, kmip.V1_3, kmip.V1_2, kmip.V1_1, kmip.V1_0}

// Operations are the operations served (Query lists them).
var Operations = []kmip.Operation{
	kmip.OperationDiscoverVersions, kmip.OperationQuery, kmip.OperationCreate, kmip.OperationCreateKeyPair,
	kmip.OperationRegister, kmip.OperationGet, kmip.OperationGetAttributes, kmip.OperationGetAttributeList,
	kmip.OperationAddAttribute, kmip.OperationModifyAttribute, kmip.OperationDeleteAttribute, kmip.OperationLocate,
	kmip.OperationActivate, kmip.OperationRevoke, kmip.OperationDestroy, kmip.OperationReKey,
}

// MaxLocate bounds the identifiers one Locate returns when the client sets
// no Maximum Items (Located Items, KMIP 1.3+, still counts every match).
const MaxLocate = 10000

type handler struct {
	s   *Server
	svc *service.Service
}

func route[Req, Resp kmip.OperationPayload](e *kmipserver.BatchExecutor, op kmip.Operation, s *Server, h func(context.Context, Req) (Resp, error)) {
	e.Route(op, kmipserver.HandleFunc(func(ctx context.Context, req Req) (Resp, error) {
		resp, err := h(ctx, req)
		if err != nil {
			var zero Resp
			return zero, s.mapErr(err)
		}
		return resp, nil
	}))
}

func newExecutor(s *Server) *kmipserver.BatchExecutor {
	h := &handler{s: s, svc: s.svc}
	s.h = h
	e := kmipserver.NewBatchExecutor()
	// The library's default list is Versions (1.4 down to 1.0); its setter
	// would sort it ascending, so it is left as is.
	e.Use(s.auditMessage)
	e.Use(s.limitBatch)
	e.Use(stopByDefault)
	e.BatchItemUse(s.auditItem)
	route(e, kmip.OperationDiscoverVersions, s, h.discover)
	route(e, kmip.OperationQuery, s, h.query)
	route(e, kmip.OperationCreate, s, h.create)
	route(e, kmip.OperationCreateKeyPair, s, h.createKeyPair)
	route(e, kmip.OperationRegister, s, h.register)
	route(e, kmip.OperationGet, s, h.get)
	route(e, kmip.OperationGetAttributes, s, h.getAttributes)
	route(e, kmip.OperationGetAttributeList, s, h.getAttributeList)
	route(e, kmip.OperationAddAttribute, s, h.addAttribute)
	route(e, kmip.OperationModifyAttribute, s, h.modifyAttribute)
	route(e, kmip.OperationDeleteAttribute, s, h.deleteAttribute)
	route(e, kmip.OperationLocate, s, h.locate)
	route(e, kmip.OperationActivate, s, h.activate)
	route(e, kmip.OperationRevoke, s, h.revoke)
	route(e, kmip.OperationDestroy, s, h.destroy)
	route(e, kmip.OperationReKey, s, h.rekey)
	return e
}

// auditMessage audits a message the executor refuses as a whole (an
// unsupported protocol version, a batch count that does not match, the Undo
// continuation option): no batch item runs, so auditItem writes nothing.
func (s *Server) auditMessage(next kmipserver.Next, ctx context.Context, msg *kmip.RequestMessage) (*kmip.ResponseMessage, error) {
	start := time.Now()
	resp, err := next(ctx, msg)
	if err != nil {
		p, _ := ctx.Value(peerKey{}).(peer)
		call := &service.Call{Identity: p.id, Source: p.source, Transport: "kmip", Start: start}
		v := msg.Header.ProtocolVersion
		s.svc.Audit(call, "kmipMessage", 400, "invalid_message",
			clip(fmt.Sprintf("%v (protocol version %d.%d, %d batch items)", err, v.ProtocolVersionMajor, v.ProtocolVersionMinor, len(msg.BatchItem)), 256))
	}
	return resp, err
}

// limitBatch refuses, as a whole and before any item runs, a message with
// more batch items than MaxBatchItems (auditMessage records it).
func (s *Server) limitBatch(next kmipserver.Next, ctx context.Context, msg *kmip.RequestMessage) (*kmip.ResponseMessage, error) {
	if n := max(len(msg.BatchItem), int(msg.Header.BatchCount)); n > s.opts.MaxBatchItems {
		return nil, kmipserver.Errorf(kmip.ResultReasonInvalidMessage, "%d batch items: at most %d batch items per message; send the rest in further messages", n, s.opts.MaxBatchItems)
	}
	return next(ctx, msg)
}

// stopByDefault gives a request without a Batch Error Continuation Option
// the KMIP default, Stop: after a failed item the next ones are not run
// (kmip-go's executor would go on with them, as for Continue).
func stopByDefault(next kmipserver.Next, ctx context.Context, msg *kmip.RequestMessage) (*kmip.ResponseMessage, error) {
	if msg.Header.BatchErrorContinuationOption == 0 {
		msg.Header.BatchErrorContinuationOption = kmip.BatchErrorContinuationOptionStop
	}
	return next(ctx, msg)
}

// auditItem gives every batch item its own service call (the caller from
// the connection's certificate) and writes one audit record for it.
func (s *Server) auditItem(next kmipserver.BatchItemNext, ctx context.Context, bi *kmip.RequestBatchItem) (*kmip.ResponseBatchItem, error) {
	p, _ := ctx.Value(peerKey{}).(peer)
	call := &service.Call{Identity: p.id, Source: p.source, Transport: "kmip", Start: time.Now()}
	ctx = service.WithCall(ctx, call)
	resp, err := next(ctx, bi)
	code, status := auditOutcome(resp, err)
	msg := ""
	if err != nil {
		msg = err.Error()
	} else if resp != nil {
		msg = resp.ResultMessage
	}
	op := operationAction(bi.Operation)
	s.svc.Audit(call, op, status, code, msg)
	// Checked first: the arguments cost allocations even when debug logging is off.
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("kmip request", "operation", op, "result", code, "actor", call.Identity.Actor(), "source", p.source, "latency", time.Since(call.Start))
	}
	return resp, err
}

// executorVersions are the protocol versions kmip-go's executor serves
// (its default list, which newExecutor keeps); TestServeGetMatchesExecutor
// holds serveGet to it.
var executorVersions = [...]kmip.ProtocolVersion{kmip.V1_4, kmip.V1_3, kmip.V1_2, kmip.V1_1, kmip.V1_0}

// serveGet executes a one-item Get request of the plain shape (a protocol
// version the executor serves; a header with no correlation values,
// asynchronous, attestation, authentication, batch order or continuation
// fields; no message extension; a unique identifier named) without
// kmip-go's executor and its middleware chain, answering and auditing it
// exactly as they do (TestServeGetMatchesExecutor compares the two), with
// none of the executor's closures, contexts and per-item copies (11 of a
// Get's allocations). ok is false for any other message, which the
// executor then handles.
func (s *Server) serveGet(ctx context.Context, id service.Identity, source string, msg *kmip.RequestMessage) (resp *kmip.ResponseMessage, ok bool) {
	hdr := &msg.Header
	if len(msg.BatchItem) != 1 || hdr.BatchCount != 1 || hdr.BatchErrorContinuationOption != 0 ||
		hdr.ClientCorrelationValue != "" || hdr.ServerCorrelationValue != "" || hdr.AsynchronousIndicator != nil ||
		hdr.AttestationCapableIndicator != nil || len(hdr.AttestationType) > 0 || hdr.Authentication != nil ||
		hdr.BatchOrderOption != nil {
		return nil, false
	}
	bi := &msg.BatchItem[0]
	req, isGet := bi.RequestPayload.(*payloads.GetRequestPayload)
	if bi.Operation != kmip.OperationGet || !isGet || req.UniqueIdentifier == "" || bi.MessageExtension != nil {
		return nil, false
	}
	supported := false
	for _, v := range executorVersions {
		supported = supported || hdr.ProtocolVersion == v
	}
	if !supported {
		return nil, false
	}
	// The call, the answer and its item in one allocation.
	g := &servedGet{call: service.Call{Identity: id, Source: source, Transport: "kmip", Start: time.Now()}}
	call := &g.call
	item := &g.items[0]
	*item = s.getItem(service.WithCall(ctx, call), bi, req)
	// As auditItem records an item the executor answered.
	code, status := auditOutcome(item, nil)
	op := operationAction(bi.Operation)
	s.svc.Audit(call, op, status, code, item.ResultMessage)
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("kmip request", "operation", op, "result", code, "actor", call.Identity.Actor(), "source", source, "latency", time.Since(call.Start))
	}
	g.resp = kmip.ResponseMessage{
		Header:    kmip.ResponseHeader{ProtocolVersion: hdr.ProtocolVersion, TimeStamp: time.Now(), BatchCount: 1},
		BatchItem: g.items[:],
	}
	return &g.resp, true
}

// servedGet is what serveGet allocates for one Get.
type servedGet struct {
	call  service.Call
	resp  kmip.ResponseMessage
	items [1]kmip.ResponseBatchItem
}

// getItem runs the Get handler as the executor runs a route: errors mapped
// by mapErr become a failed item with their reason and text, and so does a
// panic, turned into an error as the executor turns it (logged with its
// stack).
func (s *Server) getItem(ctx context.Context, bi *kmip.RequestBatchItem, req *payloads.GetRequestPayload) (item kmip.ResponseBatchItem) {
	item = kmip.ResponseBatchItem{Operation: bi.Operation, UniqueBatchItemID: bi.UniqueBatchItemID}
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("kmip: Get handler panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			item.ResponsePayload = nil
			failItem(&item, panicError(r))
		}
	}()
	payload, err := s.h.get(ctx, req)
	if err != nil {
		item.ResponsePayload = (*payloads.GetResponsePayload)(nil)
		failItem(&item, s.mapErr(err))
		return item
	}
	item.ResponsePayload = payload
	return item
}

// failItem marks item failed by err as kmip-go's executor does: the reason
// of a kmipserver.Error (else a general failure) and the error's text.
func failItem(item *kmip.ResponseBatchItem, err error) {
	item.ResultStatus, item.ResultReason = kmip.ResultStatusOperationFailed, kmip.ResultReasonGeneralFailure
	if ke := (kmipserver.Error{}); errors.As(err, &ke) {
		item.ResultReason = ke.Reason
	}
	item.ResultMessage = err.Error()
}

// panicError is the error kmip-go's executor makes of a handler's panic
// value r.
func panicError(r any) error {
	switch v := r.(type) {
	case error:
		return v
	case string:
		return errors.New(v)
	case fmt.Stringer:
		return errors.New(v.String())
	default:
		//lint:ignore ST1005 the executor's text, kept so that both paths answer alike
		return fmt.Errorf("Internal Server Error: %s", v)
	}
}

// operationActions maps KMIP operations to their audit actions ("kmip"
// and the operation's name without spaces), so that auditing an item
// builds no string. Operations outside the standard's are client-chosen
// numbers: the cache stops growing at maxOperationActions.
var (
	operationActions    sync.Map
	operationActionsLen atomic.Int32
)

const maxOperationActions = 256

func operationAction(op kmip.Operation) string {
	if a, ok := operationActions.Load(op); ok {
		return a.(string)
	}
	a := clip("kmip"+strings.ReplaceAll(ttlv.EnumStr(op), " ", ""), 64)
	if operationActionsLen.Load() < maxOperationActions {
		if _, loaded := operationActions.LoadOrStore(op, a); !loaded {
			operationActionsLen.Add(1)
		}
	}
	return a
}

// target is the object a request names.
type target struct {
	ref    service.Ref
	public bool
}

func (h *handler) target(ctx context.Context, id string) (target, error) {
	id, err := kmipserver.GetIdOrPlaceholder(ctx, id)
	if err != nil {
		return target{}, kerr(kmip.ResultReasonMissingData, "Unique Identifier is missing (and no earlier batch item set one)")
	}
	if len(id) > 128 {
		return target{}, kerr(kmip.ResultReasonItemNotFound, "no object with that Unique Identifier")
	}
	base, public := strings.CutSuffix(id, PublicSuffix)
	return target{ref: service.Ref{ID: base}, public: public}, nil
}

// describe loads the object a target names (metadata only).
func (h *handler) describe(ctx context.Context, id string) (target, service.Object, error) {
	t, err := h.target(ctx, id)
	if err != nil {
		return t, service.Object{}, err
	}
	o, err := h.svc.Objects.DescribeObject(ctx, t.ref)
	if err != nil {
		return t, o, err
	}
	if t.public && o.Type != service.TypeKeyPair {
		return t, o, kerr(kmip.ResultReasonItemNotFound, "object %s is a %s: it has no public key", o.ID, o.Type)
	}
	return t, o, nil
}

func (h *handler) discover(_ context.Context, req *payloads.DiscoverVersionsRequestPayload) (*payloads.DiscoverVersionsResponsePayload, error) {
	resp := &payloads.DiscoverVersionsResponsePayload{}
	for _, v := range Versions {
		if len(req.ProtocolVersion) == 0 || slices.Contains(req.ProtocolVersion, v) {
			resp.ProtocolVersion = append(resp.ProtocolVersion, v)
		}
	}
	return resp, nil
}

func (h *handler) query(_ context.Context, req *payloads.QueryRequestPayload) (*payloads.QueryResponsePayload, error) {
	resp := &payloads.QueryResponsePayload{}
	for _, f := range req.QueryFunction {
		switch f {
		case kmip.QueryFunctionOperations:
			resp.Operations = slices.Clone(Operations)
		case kmip.QueryFunctionObjects:
			resp.ObjectType = []kmip.ObjectType{kmip.ObjectTypeSymmetricKey, kmip.ObjectTypeSecretData, kmip.ObjectTypePrivateKey, kmip.ObjectTypePublicKey}
		case kmip.QueryFunctionServerInformation:
			resp.VendorIdentification = "Coffer " + service.Version
		}
	}
	return resp, nil
}

// wallet picks the wallet a new object goes to: the Object Group attribute
// when given, otherwise the one wallet on which the endpoint holds
// read_modify or manage.
func (h *handler) wallet(ctx context.Context, group string) (string, error) {
	if group != "" {
		return group, nil
	}
	c := service.CallFrom(ctx)
	var can []string
	token := ""
	for {
		page, err := h.svc.Access.ListWallets(ctx, service.MaxListLimit, token)
		if err != nil {
			return "", err
		}
		for _, w := range page.Items {
			if w.Grants[c.Identity.Name].Includes(service.PermReadModify) {
				can = append(can, w.Name)
			}
		}
		if token = page.NextToken; token == "" {
			break
		}
	}
	switch len(can) {
	case 0:
		return "", fmt.Errorf("%w: endpoint %q holds read_modify or manage on no wallet, so it cannot create objects", service.ErrForbidden, c.Identity.Name)
	case 1:
		return can[0], nil
	}
	return "", invalidf("endpoint %q may create objects in %d wallets (%s): name one with the Object Group attribute", c.Identity.Name, len(can), strings.Join(can, ", "))
}

func (h *handler) create(ctx context.Context, req *payloads.CreateRequestPayload) (*payloads.CreateResponsePayload, error) {
	if req.ObjectType != kmip.ObjectTypeSymmetricKey {
		return nil, invalidf("Create makes symmetric keys only (got %s): use CreateKeyPair or Register", ttlv.EnumStr(req.ObjectType))
	}
	var t template
	//lint:ignore SA1019 KMIP 1.0 to 1.2 clients, which Coffer serves, name the object in the template attribute
	if err := parseTemplate(&t, req.TemplateAttribute.Name, req.TemplateAttribute.Attribute); err != nil {
		return nil, err
	}
	if t.alg != 0 && t.alg != kmip.CryptographicAlgorithmAES {
		return nil, invalidf("symmetric key algorithm %s: Coffer makes AES keys only", ttlv.EnumStr(t.alg))
	}
	w, err := h.wallet(ctx, t.group)
	if err != nil {
		return nil, err
	}
	o, err := h.svc.Objects.CreateObject(ctx, service.CreateObject{Wallet: w, Name: t.objectName(), Type: service.TypeSymmetricKey,
		Algorithm: "AES", Length: int(t.length), Attrs: t.attrs(attrUsageMask), PreActive: !t.active})
	if err != nil {
		return nil, err
	}
	kmipserver.SetIdPlaceholder(ctx, o.ID)
	return &payloads.CreateResponsePayload{ObjectType: kmip.ObjectTypeSymmetricKey, UniqueIdentifier: o.ID}, nil
}

func (h *handler) createKeyPair(ctx context.Context, req *payloads.CreateKeyPairRequestPayload) (*payloads.CreateKeyPairResponsePayload, error) {
	var common, priv, pub template
	for _, x := range []struct {
		t   *template
		tpl *kmip.TemplateAttribute
	}{{&common, req.CommonTemplateAttribute}, {&priv, req.PrivateKeyTemplateAttribute}, {&pub, req.PublicKeyTemplateAttribute}} {
		if x.tpl != nil {
			//lint:ignore SA1019 KMIP 1.0 to 1.2 clients, which Coffer serves, name the object in the template attribute
			if err := parseTemplate(x.t, x.tpl.Name, x.tpl.Attribute); err != nil {
				return nil, err
			}
		}
	}
	// The pair is one Coffer object: private settings win over common ones;
	// the public template may only repeat them.
	t := common
	if priv.name != "" {
		t.name = priv.name
	}
	if priv.alg != 0 {
		t.alg = priv.alg
	}
	if priv.length != 0 {
		t.length = priv.length
	}
	if priv.usage != nil {
		t.usage = priv.usage
	}
	if priv.group != "" {
		t.group = priv.group
	}
	t.active = t.active || priv.active
	for k, v := range priv.custom {
		if t.custom == nil {
			t.custom = map[string]string{}
		}
		t.custom[k] = v
	}
	if (pub.alg != 0 && t.alg != 0 && pub.alg != t.alg) || (pub.length != 0 && t.length != 0 && pub.length != t.length) ||
		(pub.group != "" && pub.group != t.group) || len(pub.custom) > 0 || (pub.name != "" && t.name != "" && pub.name != t.name) {
		return nil, invalidf("the public key template may only repeat the common and private settings (plus its own usage mask): a key pair is one Coffer object")
	}
	if t.alg == 0 {
		t.alg = pub.alg
	}
	if t.length == 0 {
		t.length = pub.length
	}
	if t.name == "" {
		t.name = pub.name
	}
	if t.group == "" {
		t.group = pub.group
	}
	var alg string
	switch t.alg {
	case kmip.CryptographicAlgorithmRSA:
		alg = "RSA"
	case kmip.CryptographicAlgorithmEC, kmip.CryptographicAlgorithmECDSA:
		alg = "EC"
	case 0:
		return nil, kerr(kmip.ResultReasonMissingData, "CreateKeyPair needs the Cryptographic Algorithm attribute (RSA, EC or ECDSA)")
	default:
		return nil, invalidf("key pair algorithm %s: use RSA, EC or ECDSA", ttlv.EnumStr(t.alg))
	}
	w, err := h.wallet(ctx, t.group)
	if err != nil {
		return nil, err
	}
	attrs := t.attrs(attrUsageMask)
	if pub.usage != nil {
		if attrs == nil {
			attrs = map[string]string{}
		}
		attrs[attrPublicUsageMask] = strconv.FormatInt(int64(*pub.usage), 10)
	}
	o, err := h.svc.Objects.CreateObject(ctx, service.CreateObject{Wallet: w, Name: t.objectName(), Type: service.TypeKeyPair,
		Algorithm: alg, Length: int(t.length), Attrs: attrs, PreActive: !t.active})
	if err != nil {
		return nil, err
	}
	kmipserver.SetIdPlaceholder(ctx, o.ID)
	return &payloads.CreateKeyPairResponsePayload{PrivateKeyUniqueIdentifier: o.ID, PublicKeyUniqueIdentifier: o.ID + PublicSuffix}, nil
}

func (h *handler) register(ctx context.Context, req *payloads.RegisterRequestPayload) (*payloads.RegisterResponsePayload, error) {
	var t template
	//lint:ignore SA1019 KMIP 1.0 to 1.2 clients, which Coffer serves, name the object in the template attribute
	if err := parseTemplate(&t, req.TemplateAttribute.Name, req.TemplateAttribute.Attribute); err != nil {
		return nil, err
	}
	if req.Object == nil {
		return nil, kerr(kmip.ResultReasonMissingData, "Register needs an object")
	}
	var (
		typ, alg string
		value    []byte
		err      error
		usageKey = attrUsageMask
	)
	attrs := t.attrs(usageKey)
	switch obj := req.Object.(type) {
	case *kmip.SymmetricKey:
		if obj.KeyBlock.KeyWrappingData != nil {
			return nil, kerr(kmip.ResultReasonFeatureNotSupported, "Coffer does not import wrapped keys")
		}
		ka := obj.KeyBlock.CryptographicAlgorithm
		if ka == 0 {
			ka = t.alg
		}
		if ka != 0 && ka != kmip.CryptographicAlgorithmAES {
			return nil, invalidf("symmetric key algorithm %s: Coffer keeps AES keys only", ttlv.EnumStr(ka))
		}
		if value, err = obj.KeyMaterial(); err != nil {
			return nil, invalidf("symmetric key: %v (use Raw or Transparent Symmetric Key format)", err)
		}
		typ, alg = service.TypeSymmetricKey, "AES"
	case *kmip.SecretData:
		if obj.KeyBlock.KeyWrappingData != nil {
			return nil, kerr(kmip.ResultReasonFeatureNotSupported, "Coffer does not import wrapped secrets")
		}
		if value, err = obj.Data(); err != nil {
			return nil, invalidf("secret data: %v (use Opaque or Raw format)", err)
		}
		typ = service.TypeSecretData
		if obj.SecretDataType != kmip.SecretDataTypePassword && obj.SecretDataType != 0 {
			if attrs == nil {
				attrs = map[string]string{}
			}
			attrs[attrSecretDataType] = strconv.FormatUint(uint64(obj.SecretDataType), 10)
		}
	default:
		return nil, kerr(kmip.ResultReasonFeatureNotSupported, "Register of %s: Coffer registers symmetric keys and secret data only", ttlv.EnumStr(req.Object.ObjectType()))
	}
	if req.ObjectType != 0 && req.ObjectType != req.Object.ObjectType() {
		return nil, invalidf("Object Type %s does not match the object (%s)", ttlv.EnumStr(req.ObjectType), ttlv.EnumStr(req.Object.ObjectType()))
	}
	defer clear(value)
	if t.length != 0 && typ == service.TypeSymmetricKey && int(t.length) != len(value)*8 {
		return nil, invalidf("Cryptographic Length %d does not match the %d-bit key", t.length, len(value)*8)
	}
	if sk, ok := req.Object.(*kmip.SymmetricKey); ok && sk.KeyBlock.CryptographicLength != 0 && int(sk.KeyBlock.CryptographicLength) != len(value)*8 {
		return nil, invalidf("the Key Block's Cryptographic Length %d does not match the %d-bit key", sk.KeyBlock.CryptographicLength, len(value)*8)
	}
	w, err := h.wallet(ctx, t.group)
	if err != nil {
		return nil, err
	}
	o, err := h.svc.Objects.CreateObject(ctx, service.CreateObject{Wallet: w, Name: t.objectName(), Type: typ, Algorithm: alg,
		Value: value, Attrs: attrs, PreActive: !t.active})
	if err != nil {
		return nil, err
	}
	kmipserver.SetIdPlaceholder(ctx, o.ID)
	return &payloads.RegisterResponsePayload{UniqueIdentifier: o.ID}, nil
}

func (h *handler) get(ctx context.Context, req *payloads.GetRequestPayload) (*payloads.GetResponsePayload, error) {
	if req.KeyWrappingSpecification != nil || req.KeyWrapType != 0 {
		return nil, kerr(kmip.ResultReasonFeatureNotSupported, "Coffer does not wrap keys on Get")
	}
	if req.KeyCompressionType != 0 {
		return nil, kerr(kmip.ResultReasonKeyCompressionTypeNotSupported, "Coffer does not compress keys")
	}
	t, err := h.target(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	var (
		o     service.Object
		bytes []byte
	)
	if t.public {
		_, o, err = h.describe(ctx, req.UniqueIdentifier)
		if err != nil {
			return nil, err
		}
		if o.State == "destroyed" {
			return nil, fmt.Errorf("%w: object %s was destroyed", service.ErrGone, o.ID)
		}
		for _, v := range o.Versions {
			if v.Version == o.Latest {
				bytes = v.Public
			}
		}
	} else {
		var m service.Material
		o, m, err = h.svc.Objects.GetObject(ctx, t.ref, 0)
		if err != nil {
			return nil, err
		}
		bytes = m.Value
	}
	otype := objectType(o, t.public)
	var format kmip.KeyFormatType
	switch otype {
	case kmip.ObjectTypeSymmetricKey:
		format = kmip.KeyFormatTypeRaw
		if req.KeyFormatType == kmip.KeyFormatTypeTransparentSymmetricKey {
			format = req.KeyFormatType
		}
	case kmip.ObjectTypeSecretData:
		format = kmip.KeyFormatTypeOpaque
		if req.KeyFormatType == kmip.KeyFormatTypeRaw {
			format = req.KeyFormatType
		}
	case kmip.ObjectTypePrivateKey:
		format = kmip.KeyFormatTypePKCS_8
	case kmip.ObjectTypePublicKey:
		format = kmip.KeyFormatTypeX_509
	}
	if req.KeyFormatType != 0 && req.KeyFormatType != format {
		return nil, kerr(kmip.ResultReasonKeyFormatTypeNotSupported, "%s is served as %s only", ttlv.EnumStr(otype), ttlv.EnumStr(format))
	}
	// The answer's parts in one allocation (the payload points into it).
	a := new(getAnswer)
	a.material = bytes
	a.value.Plain = &a.plain
	kb := kmip.KeyBlock{KeyFormatType: format, KeyValue: &a.value}
	if format == kmip.KeyFormatTypeTransparentSymmetricKey {
		a.transparent.Key = bytes
		a.plain.KeyMaterial.TransparentSymmetricKey = &a.transparent
	} else {
		a.plain.KeyMaterial.Bytes = &a.material
	}
	if alg, ok := algorithm(o); ok {
		kb.CryptographicAlgorithm, kb.CryptographicLength = alg, int32(o.Length) // #nosec G115 -- key lengths in bits are validated at creation (at most 4096)
	}
	var obj kmip.Object
	switch otype {
	case kmip.ObjectTypeSymmetricKey:
		a.symmetric.KeyBlock = kb
		obj = &a.symmetric
	case kmip.ObjectTypeSecretData:
		sdt := kmip.SecretDataTypePassword
		if v, err := strconv.ParseUint(o.Attributes[attrSecretDataType], 10, 32); err == nil {
			sdt = kmip.SecretDataType(v)
		}
		obj = &kmip.SecretData{SecretDataType: sdt, KeyBlock: kb}
	case kmip.ObjectTypePrivateKey:
		obj = &kmip.PrivateKey{KeyBlock: kb}
	default:
		obj = &kmip.PublicKey{KeyBlock: kb}
	}
	a.payload = payloads.GetResponsePayload{ObjectType: otype, UniqueIdentifier: uid(o, t.public), Object: obj}
	return &a.payload, nil
}

// getAnswer holds the parts of a Get's answer that are allocated for
// every Get (a symmetric key's object too: the most common Get).
type getAnswer struct {
	payload     payloads.GetResponsePayload
	value       kmip.KeyValue
	plain       kmip.PlainKeyValue
	material    []byte
	transparent kmip.TransparentSymmetricKey
	symmetric   kmip.SymmetricKey
}

func (h *handler) getAttributes(ctx context.Context, req *payloads.GetAttributesRequestPayload) (*payloads.GetAttributesResponsePayload, error) {
	t, o, err := h.describe(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	all := attributes(o, t.public)
	if len(req.AttributeName) == 0 {
		return &payloads.GetAttributesResponsePayload{UniqueIdentifier: uid(o, t.public), Attribute: all}, nil
	}
	var out []kmip.Attribute
	for _, a := range all {
		if slices.Contains(req.AttributeName, a.AttributeName) {
			out = append(out, a)
		}
	}
	return &payloads.GetAttributesResponsePayload{UniqueIdentifier: uid(o, t.public), Attribute: out}, nil
}

func (h *handler) getAttributeList(ctx context.Context, req *payloads.GetAttributeListRequestPayload) (*payloads.GetAttributeListResponsePayload, error) {
	t, o, err := h.describe(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	resp := &payloads.GetAttributeListResponsePayload{UniqueIdentifier: uid(o, t.public)}
	for _, a := range attributes(o, t.public) {
		if !slices.Contains(resp.AttributeName, a.AttributeName) {
			resp.AttributeName = append(resp.AttributeName, a.AttributeName)
		}
	}
	return resp, nil
}

// customOnly refuses changes to anything but x- custom attributes.
func customOnly(a kmip.Attribute) error {
	if !strings.HasPrefix(string(a.AttributeName), customPrefix) {
		return kerr(kmip.ResultReasonPermissionDenied, "attribute %q cannot be changed through KMIP in Coffer: only x- custom attributes can", a.AttributeName)
	}
	return nil
}

func (h *handler) addAttribute(ctx context.Context, req *payloads.AddAttributeRequestPayload) (*payloads.AddAttributeResponsePayload, error) {
	if err := customOnly(req.Attribute); err != nil {
		return nil, err
	}
	k, v, err := customAttr(req.Attribute)
	if err != nil {
		return nil, err
	}
	t, o, err := h.describe(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	if _, ok := o.Attributes[k]; ok {
		return nil, invalidf("object %s already has attribute %q: Coffer keeps one value per custom attribute (use ModifyAttribute)", o.ID, req.Attribute.AttributeName)
	}
	if _, err := h.svc.Objects.SetAttributes(ctx, t.ref, map[string]string{k: v}, nil); err != nil {
		return nil, err
	}
	return &payloads.AddAttributeResponsePayload{UniqueIdentifier: uid(o, t.public), Attribute: kmip.Attribute{AttributeName: req.Attribute.AttributeName, AttributeValue: v}}, nil
}

func (h *handler) modifyAttribute(ctx context.Context, req *payloads.ModifyAttributeRequestPayload) (*payloads.ModifyAttributeResponsePayload, error) {
	if err := customOnly(req.Attribute); err != nil {
		return nil, err
	}
	k, v, err := customAttr(req.Attribute)
	if err != nil {
		return nil, err
	}
	t, o, err := h.describe(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	if _, ok := o.Attributes[k]; !ok {
		return nil, kerr(kmip.ResultReasonItemNotFound, "object %s has no attribute %q (use AddAttribute)", o.ID, req.Attribute.AttributeName)
	}
	if _, err := h.svc.Objects.SetAttributes(ctx, t.ref, map[string]string{k: v}, nil); err != nil {
		return nil, err
	}
	return &payloads.ModifyAttributeResponsePayload{UniqueIdentifier: uid(o, t.public), Attribute: kmip.Attribute{AttributeName: req.Attribute.AttributeName, AttributeValue: v}}, nil
}

func (h *handler) deleteAttribute(ctx context.Context, req *payloads.DeleteAttributeRequestPayload) (*payloads.DeleteAttributeResponsePayload, error) {
	if err := customOnly(kmip.Attribute{AttributeName: req.AttributeName}); err != nil {
		return nil, err
	}
	k, ok := strings.CutPrefix(string(req.AttributeName), customPrefix)
	if !ok || k == "" || strings.HasPrefix(k, reservedPrefix) {
		return nil, kerr(kmip.ResultReasonItemNotFound, "no attribute %q", req.AttributeName)
	}
	if req.AttributeIndex != nil && *req.AttributeIndex != 0 {
		return nil, kerr(kmip.ResultReasonIndexOutofBounds, "attribute %q has one value (index 0)", req.AttributeName)
	}
	t, o, err := h.describe(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	old, ok := o.Attributes[k]
	if !ok {
		return nil, kerr(kmip.ResultReasonItemNotFound, "object %s has no attribute %q", o.ID, req.AttributeName)
	}
	if _, err := h.svc.Objects.SetAttributes(ctx, t.ref, nil, []string{k}); err != nil {
		return nil, err
	}
	return &payloads.DeleteAttributeResponsePayload{UniqueIdentifier: uid(o, t.public), Attribute: kmip.Attribute{AttributeName: req.AttributeName, AttributeValue: old}}, nil
}

func (h *handler) locate(ctx context.Context, req *payloads.LocateRequestPayload) (*payloads.LocateResponsePayload, error) {
	q := service.Query{Limit: service.MaxListLimit}
	var (
		halves           = 3 // bit 1: private (or the whole object), bit 2: public half
		alg              kmip.CryptographicAlgorithm
		length           int32
		destroyedCompro  *bool
		offset, maxItems = int(req.OffsetItems), int(req.MaximumItems)
	)
	if offset < 0 || maxItems < 0 {
		return nil, invalidf("Offset Items and Maximum Items must not be negative")
	}
	for _, a := range req.Attribute {
		switch a.AttributeName {
		case kmip.AttributeNameName:
			n, ok := a.AttributeValue.(kmip.Name)
			if !ok || n.NameValue == "" {
				return nil, invalidf("Locate: attribute Name: malformed value")
			}
			q.Name = n.NameValue
		case kmip.AttributeNameObjectType:
			ot, _ := a.AttributeValue.(kmip.ObjectType)
			switch ot {
			case kmip.ObjectTypeSymmetricKey:
				q.Type, halves = service.TypeSymmetricKey, 1
			case kmip.ObjectTypeSecretData:
				q.Type, halves = service.TypeSecretData, 1
			case kmip.ObjectTypePrivateKey:
				q.Type, halves = service.TypeKeyPair, 1
			case kmip.ObjectTypePublicKey:
				q.Type, halves = service.TypeKeyPair, 2
			default:
				return &payloads.LocateResponsePayload{LocatedItems: new(int32)}, nil // Coffer holds no such objects
			}
		case kmip.AttributeNameState:
			st, _ := a.AttributeValue.(kmip.State)
			s, ok := cofferState(st)
			if !ok {
				return nil, invalidf("Locate: unknown State %d", st)
			}
			q.State = s
			if s == "destroyed" {
				b := st == kmip.StateDestroyedCompromised
				destroyedCompro = &b
			}
		case kmip.AttributeNameObjectGroup:
			g, ok := a.AttributeValue.(string)
			if !ok || g == "" {
				return nil, invalidf("Locate: attribute Object Group: must be a wallet name")
			}
			q.Wallet = g
		case kmip.AttributeNameCryptographicAlgorithm:
			alg, _ = a.AttributeValue.(kmip.CryptographicAlgorithm)
		case kmip.AttributeNameCryptographicLength:
			length, _ = a.AttributeValue.(int32)
		default:
			if !strings.HasPrefix(string(a.AttributeName), customPrefix) {
				return nil, invalidf("Locate: attribute %q is not a supported filter (Name, Object Type, State, Object Group, Cryptographic Algorithm, Cryptographic Length, x- custom attributes)", a.AttributeName)
			}
			k, v, err := customAttr(a)
			if err != nil {
				return nil, err
			}
			if q.Attributes == nil {
				q.Attributes = map[string]string{}
			}
			q.Attributes[k] = v
		}
	}
	var ids []string
	total := 0
	limit := maxItems
	if limit == 0 {
		limit = MaxLocate
	}
	add := func(id string) {
		total++
		if total > offset && len(ids) < limit {
			ids = append(ids, id)
		}
	}
	for {
		page, err := h.svc.Objects.ListObjects(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Items {
			if a, ok := algorithm(o); alg != 0 && (!ok || (a != alg && !(alg == kmip.CryptographicAlgorithmECDSA && a == kmip.CryptographicAlgorithmEC))) {
				continue
			}
			if length != 0 && int32(o.Length) != length { // #nosec G115 -- key lengths in bits are validated at creation (at most 4096)
				continue
			}
			if destroyedCompro != nil && (o.Compromised != nil) != *destroyedCompro {
				continue
			}
			if halves&1 != 0 {
				add(o.ID)
			}
			if halves&2 != 0 && o.Type == service.TypeKeyPair {
				add(o.ID + PublicSuffix)
			}
		}
		if page.NextToken == "" {
			break
		}
		q.PageToken = page.NextToken
	}
	n := int32(min(total, 1<<31-1))
	return &payloads.LocateResponsePayload{LocatedItems: &n, UniqueIdentifier: ids}, nil
}

func (h *handler) activate(ctx context.Context, req *payloads.ActivateRequestPayload) (*payloads.ActivateResponsePayload, error) {
	// describe resolves the target and checks the object exists and is
	// visible to the caller.
	t, _, err := h.describe(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	o, err := h.svc.Objects.ChangeState(ctx, t.ref, service.Activate, "KMIP Activate")
	if err != nil {
		return nil, err
	}
	return &payloads.ActivateResponsePayload{UniqueIdentifier: uid(o, t.public)}, nil
}

func (h *handler) revoke(ctx context.Context, req *payloads.RevokeRequestPayload) (*payloads.RevokeResponsePayload, error) {
	// describe resolves the target and checks the object exists and is
	// visible to the caller.
	t, _, err := h.describe(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	code := req.RevocationReason.RevocationReasonCode
	if code == 0 {
		return nil, kerr(kmip.ResultReasonMissingData, "Revoke needs a Revocation Reason")
	}
	tr := service.Deactivate
	if code == kmip.RevocationReasonCodeKeyCompromise || code == kmip.RevocationReasonCodeCACompromise {
		tr = service.Revoke
	}
	reason := "KMIP Revoke: " + ttlv.EnumStr(code)
	if m := req.RevocationReason.RevocationMessage; m != "" {
		reason += ": " + clip(m, 900)
	}
	o, err := h.svc.Objects.ChangeState(ctx, t.ref, tr, reason)
	if err != nil {
		return nil, err
	}
	return &payloads.RevokeResponsePayload{UniqueIdentifier: uid(o, t.public)}, nil
}

func (h *handler) destroy(ctx context.Context, req *payloads.DestroyRequestPayload) (*payloads.DestroyResponsePayload, error) {
	// describe resolves the target and checks the object exists and is
	// visible to the caller.
	t, cur, err := h.describe(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	o, err := h.svc.Objects.ChangeState(ctx, t.ref, service.Destroy, "KMIP Destroy")
	if err != nil {
		if errors.Is(err, service.ErrState) && cur.State != "destroyed" {
			// Say what KMIP clients do about it.
			return nil, kerr(kmip.ResultReasonIllegalOperation, "%v (with KMIP: Revoke the object first; any reason but Key Compromise deactivates it)", err)
		}
		return nil, err
	}
	return &payloads.DestroyResponsePayload{UniqueIdentifier: uid(o, t.public)}, nil
}

func (h *handler) rekey(ctx context.Context, req *payloads.RekeyRequestPayload) (*payloads.RekeyResponsePayload, error) {
	if req.Offset != nil {
		return nil, kerr(kmip.ResultReasonFeatureNotSupported, "ReKey with an Offset: Coffer does not schedule activation")
	}
	//lint:ignore SA1019 KMIP 1.0 to 1.2 clients, which Coffer serves, name the object in the template attribute
	if req.TemplateAttribute != nil && (len(req.TemplateAttribute.Attribute) > 0 || len(req.TemplateAttribute.Name) > 0) {
		return nil, kerr(kmip.ResultReasonFeatureNotSupported, "ReKey with attributes: Coffer re-keys in place and keeps the object's attributes")
	}
	t, o, err := h.describe(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	if t.public || o.Type != service.TypeSymmetricKey {
		return nil, kerr(kmip.ResultReasonIllegalOperation, "ReKey applies to symmetric keys; object %s is a %s", o.ID, ttlv.EnumStr(objectType(o, t.public)))
	}
	o, err = h.svc.Objects.RotateObject(ctx, t.ref, nil)
	if err != nil {
		return nil, err
	}
	kmipserver.SetIdPlaceholder(ctx, o.ID)
	return &payloads.RekeyResponsePayload{UniqueIdentifier: o.ID}, nil
}
