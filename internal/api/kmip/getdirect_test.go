package kmip

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestServeGetMatchesExecutor: every Get the direct path takes is answered
// and audited exactly as kmip-go's executor with the server's middleware
// answers and audits it: each object type and key format, each protocol
// version the executor serves, with and without a batch item id, an
// endpoint without a grant, an unknown and a destroyed object. Messages of
// any other shape are left to the executor.
func TestServeGetMatchesExecutor(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client("ep-manage")
	sym := must[*payloads.CreateResponsePayload](t, c, &payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey,
		TemplateAttribute: kmip.TemplateAttribute{Attribute: []kmip.Attribute{
			attr(kmip.AttributeNameCryptographicAlgorithm, kmip.CryptographicAlgorithmAES),
			attr(kmip.AttributeNameCryptographicLength, int32(256)), nameAttr("direct/sym")}}}).UniqueIdentifier
	secret := []byte("s3cret-value")
	sec := must[*payloads.RegisterResponsePayload](t, c, &payloads.RegisterRequestPayload{ObjectType: kmip.ObjectTypeSecretData,
		TemplateAttribute: kmip.TemplateAttribute{Attribute: []kmip.Attribute{nameAttr("direct/secret")}},
		Object: &kmip.SecretData{SecretDataType: kmip.SecretDataTypePassword, KeyBlock: kmip.KeyBlock{KeyFormatType: kmip.KeyFormatTypeOpaque,
			KeyValue: &kmip.KeyValue{Plain: &kmip.PlainKeyValue{KeyMaterial: kmip.KeyMaterial{Bytes: &secret}}}}}}).UniqueIdentifier
	kp := must[*payloads.CreateKeyPairResponsePayload](t, c, &payloads.CreateKeyPairRequestPayload{
		CommonTemplateAttribute: &kmip.TemplateAttribute{Attribute: []kmip.Attribute{attr(kmip.AttributeNameCryptographicAlgorithm, kmip.CryptographicAlgorithmECDSA),
			attr(kmip.AttributeNameCryptographicLength, int32(256))}},
		PrivateKeyTemplateAttribute: &kmip.TemplateAttribute{Attribute: []kmip.Attribute{nameAttr("direct/pair")}}})
	gone := must[*payloads.CreateResponsePayload](t, c, &payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey,
		TemplateAttribute: kmip.TemplateAttribute{Attribute: []kmip.Attribute{
			attr(kmip.AttributeNameCryptographicAlgorithm, kmip.CryptographicAlgorithmAES),
			attr(kmip.AttributeNameCryptographicLength, int32(128))}}}).UniqueIdentifier
	must[*payloads.RevokeResponsePayload](t, c, &payloads.RevokeRequestPayload{UniqueIdentifier: gone,
		RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeCessationOfOperation}})
	must[*payloads.DestroyResponsePayload](t, c, &payloads.DestroyRequestPayload{UniqueIdentifier: gone})

	identity := func(name string) service.Identity {
		id, err := f.svc.Access.AuthenticateCert(f.creds[name].Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	// lastAudit is the newest record, which must be the only one written
	// since the previous call.
	var seq uint64
	lastAudit := func() service.AuditRecord {
		t.Helper()
		rs, err := f.svc.AuditRecordsNewest(f.root, 0, 1)
		if err != nil || len(rs) != 1 {
			t.Fatalf("audit records: %v %v", rs, err)
		}
		r := rs[0]
		if seq != 0 && r.Seq != seq+1 {
			t.Fatalf("%d audit records written for one Get, want 1", r.Seq-seq)
		}
		seq = r.Seq
		r.Seq, r.Time, r.Prev, r.LatencyMS = 0, time.Time{}, "", 0
		return r
	}
	lastAudit()
	encode := func(r *kmip.ResponseMessage) []byte {
		r.Header.TimeStamp = time.Time{}
		return ttlv.MarshalTTLV(r)
	}
	msg := func(v kmip.ProtocolVersion, batchID []byte, id string, format kmip.KeyFormatType) *kmip.RequestMessage {
		return &kmip.RequestMessage{Header: kmip.RequestHeader{ProtocolVersion: v, BatchCount: 1},
			BatchItem: []kmip.RequestBatchItem{{Operation: kmip.OperationGet, UniqueBatchItemID: batchID,
				RequestPayload: &payloads.GetRequestPayload{UniqueIdentifier: id, KeyFormatType: format}}}}
	}

	ids := []string{sym, sec, kp.PrivateKeyUniqueIdentifier, kp.PublicKeyUniqueIdentifier, gone, "no-such-object"}
	formats := []kmip.KeyFormatType{0, kmip.KeyFormatTypeRaw, kmip.KeyFormatTypeOpaque, kmip.KeyFormatTypeTransparentSymmetricKey,
		kmip.KeyFormatTypePKCS_8, kmip.KeyFormatTypeX_509}
	n := 0
	for _, ep := range []string{"ep-manage", "ep-none"} {
		who := identity(ep)
		for _, v := range executorVersions {
			for _, batchID := range [][]byte{nil, {1, 2, 3}} {
				for _, id := range ids {
					for _, format := range formats {
						name := fmt.Sprintf("%s v%d.%d batch id %x %s format %d", ep, v.ProtocolVersionMajor, v.ProtocolVersionMinor, batchID, id, format)
						direct, ok := f.srv.serveGet(context.Background(), who, "192.0.2.7:1", msg(v, batchID, id, format))
						if !ok {
							t.Fatalf("%s: not taken by the direct path", name)
						}
						directAudit := lastAudit()
						ectx := context.WithValue(context.Background(), peerKey{}, peer{id: who, source: "192.0.2.7:1"})
						viaExec := f.srv.exec.HandleRequest(ectx, msg(v, batchID, id, format))
						execAudit := lastAudit()
						if d, e := encode(direct), encode(viaExec); !bytes.Equal(d, e) {
							t.Fatalf("%s: answers differ\ndirect:   %x\nexecutor: %x", name, d, e)
						}
						if !bytes.Equal(appendResponse(nil, direct), appendResponse(nil, viaExec)) {
							t.Fatalf("%s: encoded answers differ", name)
						}
						if fmt.Sprint(directAudit) != fmt.Sprint(execAudit) {
							t.Fatalf("%s: audit records differ\ndirect:   %+v\nexecutor: %+v", name, directAudit, execAudit)
						}
						n++
					}
				}
			}
		}
	}
	t.Logf("%d Gets compared", n)

	// Other shapes go to the executor.
	others := map[string]*kmip.RequestMessage{
		"KMIP 1.5":      msg(kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: 5}, nil, sym, 0),
		"KMIP 2.0":      msg(kmip.ProtocolVersion{ProtocolVersionMajor: 2, ProtocolVersionMinor: 0}, nil, sym, 0),
		"no unique id":  msg(kmip.V1_4, nil, "", 0),
		"batch count 2": func() *kmip.RequestMessage { m := msg(kmip.V1_4, nil, sym, 0); m.Header.BatchCount = 2; return m }(),
		"correlation value": func() *kmip.RequestMessage {
			m := msg(kmip.V1_4, nil, sym, 0)
			m.Header.ClientCorrelationValue = "x"
			return m
		}(),
		"continuation option": func() *kmip.RequestMessage {
			m := msg(kmip.V1_4, nil, sym, 0)
			m.Header.BatchErrorContinuationOption = kmip.BatchErrorContinuationOptionStop
			return m
		}(),
		"message extension": func() *kmip.RequestMessage {
			m := msg(kmip.V1_4, nil, sym, 0)
			m.BatchItem[0].MessageExtension = &kmip.MessageExtension{VendorIdentification: "x"}
			return m
		}(),
		"two items": func() *kmip.RequestMessage {
			m := msg(kmip.V1_4, nil, sym, 0)
			m.BatchItem = append(m.BatchItem, m.BatchItem[0])
			m.Header.BatchCount = 2
			return m
		}(),
		"not a Get": {Header: kmip.RequestHeader{ProtocolVersion: kmip.V1_4, BatchCount: 1},
			BatchItem: []kmip.RequestBatchItem{{Operation: kmip.OperationGetAttributes,
				RequestPayload: &payloads.GetAttributesRequestPayload{UniqueIdentifier: sym}}}},
	}
	for name, m := range others {
		if _, ok := f.srv.serveGet(context.Background(), identity("ep-manage"), "192.0.2.7:1", m); ok {
			t.Errorf("%s: taken by the direct path", name)
		}
	}
}
