package kmip

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipclient"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestBatchStopsAtTheFirstFailureByDefault: KMIP 1.x says a request
// without a Batch Error Continuation Option is handled as Stop. A batch
// whose first item fails must not go on to run (and apply) the next ones;
// with Continue asked for, it does.
func TestBatchStopsAtTheFirstFailureByDefault(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client("ep-manage")
	must[*payloads.CreateResponsePayload](t, c, aesCreate("taken"))

	res, err := c.Batch(context.Background(), aesCreate("taken"), aesCreate("second"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].ResultReason != kmip.ResultReasonObjectAlreadyExists || res[1].ResultStatus != kmip.ResultStatusOperationFailed {
		t.Fatalf("batch without a continuation option: %+v", res)
	}
	if r := res[1].ResultReason; r != kmip.ResultReasonOperationCanceledByRequester {
		t.Errorf("the item after the failure: reason %s, want Operation Canceled By Requester (not run)", ttlv.EnumStr(r))
	}
	if _, err := f.svc.Objects.DescribeObject(f.root, service.Ref{Wallet: "w", Name: "second"}); err == nil {
		t.Errorf("the item after the failure was applied: object \"second\" exists")
	}

	res, err = c.BatchOpt(context.Background(), []kmip.OperationPayload{aesCreate("taken"), aesCreate("third")},
		kmipclient.OnBatchErr(kmip.BatchErrorContinuationOptionContinue))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].ResultReason != kmip.ResultReasonObjectAlreadyExists || res[1].Err() != nil {
		t.Fatalf("batch with Continue: %+v", res)
	}
}

// TestRegisterRefusesAKeyBlockLengthThatIsNotTheKeys: the Key Block's
// Cryptographic Length describes the key; a 128-bit key sent as 256 bits
// is refused (Invalid Field), not stored as a 128-bit key the client
// believes is a 256-bit one.
func TestRegisterRefusesAKeyBlockLengthThatIsNotTheKeys(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client("ep-manage")
	key := make([]byte, 16)
	reg := func(bits int32) *payloads.RegisterRequestPayload {
		return &payloads.RegisterRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey,
			TemplateAttribute: kmip.TemplateAttribute{Attribute: []kmip.Attribute{nameAttr("imported")}},
			Object: &kmip.SymmetricKey{KeyBlock: kmip.KeyBlock{KeyFormatType: kmip.KeyFormatTypeRaw, CryptographicAlgorithm: kmip.CryptographicAlgorithmAES,
				CryptographicLength: bits, KeyValue: &kmip.KeyValue{Plain: &kmip.PlainKeyValue{KeyMaterial: kmip.KeyMaterial{Bytes: &key}}}}}}
	}
	if r := reason(t, c, reg(256)); r != kmip.ResultReasonInvalidField {
		t.Errorf("a 128-bit key sent as 256 bits: reason %s, want Invalid Field", ttlv.EnumStr(r))
	}
	if _, err := f.svc.Objects.DescribeObject(f.root, service.Ref{Wallet: "w", Name: "imported"}); err == nil {
		t.Errorf("the refused key was stored")
	}
	must[*payloads.RegisterResponsePayload](t, c, reg(128))
}

// TestDestroyTwiceDoesNotSayRevokeFirst: destroying a destroyed object is
// Illegal Operation saying it is destroyed, without the hint to Revoke it
// first (which would only send the operator round in a circle).
func TestDestroyTwiceDoesNotSayRevokeFirst(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client("ep-manage")
	cr := must[*payloads.CreateResponsePayload](t, c, aesCreate("gone"))
	must[*payloads.RevokeResponsePayload](t, c, &payloads.RevokeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier,
		RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeCessationOfOperation}})
	must[*payloads.DestroyResponsePayload](t, c, &payloads.DestroyRequestPayload{UniqueIdentifier: cr.UniqueIdentifier})
	res, err := c.Batch(context.Background(), &payloads.DestroyRequestPayload{UniqueIdentifier: cr.UniqueIdentifier})
	if err != nil {
		t.Fatal(err)
	}
	if r, msg := res[0].ResultReason, res[0].ResultMessage; r != kmip.ResultReasonIllegalOperation || !strings.Contains(msg, "destroyed") || strings.Contains(msg, "Revoke") {
		t.Errorf("second Destroy: %s %q, want Illegal Operation saying it is destroyed, with no Revoke hint", ttlv.EnumStr(r), msg)
	}
}

// TestRevokeWithALongNonASCIIMessage: a Revocation Message longer than the
// reason Coffer keeps is cut at a character boundary; cut inside a
// multi-byte character it was no longer UTF-8, and the Revoke was refused
// as Invalid Field for a message the client sent correctly.
func TestRevokeWithALongNonASCIIMessage(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client("ep-manage")
	cr := must[*payloads.CreateResponsePayload](t, c, aesCreate("long-reason"))
	msg := "x" + strings.Repeat("鍵", 400)
	must[*payloads.RevokeResponsePayload](t, c, &payloads.RevokeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier,
		RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeCessationOfOperation, RevocationMessage: msg}})
	o, err := f.svc.Objects.DescribeObject(f.root, service.Ref{ID: cr.UniqueIdentifier})
	if err != nil || o.State != "deactivated" {
		t.Fatalf("after Revoke: %+v %v", o, err)
	}
}

// TestBatchItemsPerMessageAreBounded: a message holding more batch items
// than the limit (DefaultMaxBatchItems unless configured) is refused as a
// whole with Invalid Message naming the limit, and none of its items runs;
// a message at the limit is served.
func TestBatchItemsPerMessageAreBounded(t *testing.T) {
	var c net.Conn
	send := func(t *testing.T, f *fixture, items ...kmip.OperationPayload) *kmip.ResponseMessage {
		t.Helper()
		if c == nil {
			c = f.rawConn("ep-manage")
		}
		if _, err := c.Write(ttlv.MarshalTTLV(kmip.NewRequestMessage(kmip.V1_4, items...))); err != nil {
			t.Fatal(err)
		}
		resp, err := readResponse(c)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	locates := func(n int) []kmip.OperationPayload {
		out := make([]kmip.OperationPayload, n)
		for i := range out {
			out[i] = &payloads.LocateRequestPayload{}
		}
		return out
	}
	refused := func(t *testing.T, resp *kmip.ResponseMessage, limit int) {
		t.Helper()
		if len(resp.BatchItem) != 1 || resp.BatchItem[0].ResultReason != kmip.ResultReasonInvalidMessage ||
			!strings.Contains(resp.BatchItem[0].ResultMessage, fmt.Sprintf("at most %d batch items", limit)) {
			t.Fatalf("refusal: %d items, first %+v; want one Invalid Message naming the limit", len(resp.BatchItem), resp.BatchItem[0])
		}
	}
	f := newFixture(t, Options{})
	resp := send(t, f, locates(DefaultMaxBatchItems)...)
	if len(resp.BatchItem) != DefaultMaxBatchItems || resp.BatchItem[0].ResultStatus != kmip.ResultStatusSuccess {
		t.Fatalf("a message of %d items: %d results, first %+v", DefaultMaxBatchItems, len(resp.BatchItem), resp.BatchItem[0])
	}
	refused(t, send(t, f, locates(DefaultMaxBatchItems+1)...), DefaultMaxBatchItems)

	// Configured lower: the creates of a refused message never run, and the
	// connection serves the next message.
	f, c = newFixture(t, Options{MaxBatchItems: 2}), nil
	refused(t, send(t, f, aesCreate("b1"), aesCreate("b2"), aesCreate("b3")), 2)
	if _, err := f.svc.Objects.DescribeObject(f.root, service.Ref{Wallet: "w", Name: "b1"}); err == nil {
		t.Errorf("an item of a refused message ran: object \"b1\" exists")
	}
	if resp := send(t, f, aesCreate("b1"), aesCreate("b2")); len(resp.BatchItem) != 2 || resp.BatchItem[1].ResultStatus != kmip.ResultStatusSuccess {
		t.Fatalf("2 items with a limit of 2: %+v", resp.BatchItem)
	}
}
