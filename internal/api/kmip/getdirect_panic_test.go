package kmip

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/payloads"
)

// A Get whose handler panics (here a nil dereference, a runtime error) is
// answered and audited by the direct path as kmip-go's executor answers and
// audits it: a general failure carrying the panic's error text.
func TestServeGetPanicMatchesExecutor(t *testing.T) {
	f := newFixture(t, Options{})
	id, err := f.svc.Access.AuthenticateCert(f.creds["ep-manage"].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	msg := func() *kmip.RequestMessage {
		return &kmip.RequestMessage{Header: kmip.RequestHeader{ProtocolVersion: kmip.V1_4, BatchCount: 1},
			BatchItem: []kmip.RequestBatchItem{{Operation: kmip.OperationGet,
				RequestPayload: &payloads.GetRequestPayload{UniqueIdentifier: "some-object"}}}}
	}
	lastAudit := func() string {
		t.Helper()
		rs, err := f.svc.AuditRecordsNewest(f.root, 0, 1)
		if err != nil || len(rs) != 1 {
			t.Fatalf("audit records: %v %v", rs, err)
		}
		r := rs[0]
		r.Seq, r.Time, r.Prev, r.LatencyMS = 0, time.Time{}, "", 0
		return fmt.Sprintf("%+v", r)
	}
	svc := f.srv.h.svc
	f.srv.h.svc = nil // the handler dereferences it: a runtime error panic
	defer func() { f.srv.h.svc = svc }()

	direct, ok := f.srv.serveGet(context.Background(), id, "192.0.2.7:1", msg())
	if !ok {
		t.Fatal("not taken by the direct path")
	}
	directAudit := lastAudit()
	viaExec := f.srv.exec.HandleRequest(context.WithValue(context.Background(), peerKey{}, peer{id: id, source: "192.0.2.7:1"}), msg())
	execAudit := lastAudit()
	d, e := direct.BatchItem[0], viaExec.BatchItem[0]
	if d.ResultStatus != e.ResultStatus || d.ResultReason != e.ResultReason || d.ResultMessage != e.ResultMessage {
		t.Fatalf("answers differ:\ndirect:   %v %v %q\nexecutor: %v %v %q", d.ResultStatus, d.ResultReason, d.ResultMessage,
			e.ResultStatus, e.ResultReason, e.ResultMessage)
	}
	if directAudit != execAudit {
		t.Fatalf("audit records differ:\ndirect:   %s\nexecutor: %s", directAudit, execAudit)
	}
}

type stringer struct{}

func (stringer) String() string { return "a stringer" }

// panicError and failItem turn every kind of panic value into the item
// kmip-go's executor makes of it.
func TestPanicItemMatchesExecutor(t *testing.T) {
	for _, v := range []any{kerr(kmip.ResultReasonItemNotFound, "an error of kmip's"), errors.New("an error"), "a string", stringer{}, 42} {
		e := kmipserver.NewBatchExecutor()
		e.Route(kmip.OperationGet, kmipserver.HandleFunc(func(context.Context, *payloads.GetRequestPayload) (*payloads.GetResponsePayload, error) {
			panic(v)
		}))
		resp := e.HandleRequest(context.Background(), &kmip.RequestMessage{Header: kmip.RequestHeader{ProtocolVersion: kmip.V1_4, BatchCount: 1},
			BatchItem: []kmip.RequestBatchItem{{Operation: kmip.OperationGet, RequestPayload: &payloads.GetRequestPayload{UniqueIdentifier: "x"}}}})
		want := resp.BatchItem[0]
		var got kmip.ResponseBatchItem
		failItem(&got, panicError(v))
		if got.ResultStatus != want.ResultStatus || got.ResultReason != want.ResultReason || got.ResultMessage != want.ResultMessage {
			t.Errorf("panic(%#v): %v %v %q, the executor answers %v %v %q", v, got.ResultStatus, got.ResultReason, got.ResultMessage,
				want.ResultStatus, want.ResultReason, want.ResultMessage)
		}
	}
}
