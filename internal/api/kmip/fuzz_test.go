package kmip

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"
)

// FuzzKMIPRequest feeds arbitrary bytes through what the connection loop
// does with one message: TTLV decoding, authentication (an enrolled
// endpoint with manage on wallet w) and execution against a real service.
// Whatever the input, the answer is a well-formed KMIP response: never a
// panic, and a request that does not decode closes the connection with
// Invalid Message. The seed corpus (testdata/fuzz/FuzzKMIPRequest) holds
// valid requests of most operations, a batch, KMIP 1.0 to 2.0 headers and
// malformed messages.
func FuzzKMIPRequest(f *testing.F) {
	fx := newFixture(f, Options{})
	block, _ := pem.Decode(fx.pems["ep-manage"][0])
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ttlv.MarshalTTLV(kmip.NewRequestMessage(kmip.V1_4, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}})))
	f.Add(ttlv.MarshalTTLV(kmip.NewRequestMessage(kmip.V1_4, &payloads.LocateRequestPayload{})))
	f.Fuzz(func(t *testing.T, data []byte) {
		resp, keep := fx.srv.handleMessage(context.Background(), cert.Raw, "fuzz", data)
		if resp == nil || len(resp.BatchItem) == 0 {
			t.Fatalf("no response (keep %v)", keep)
		}
		_, derr := decodeRequest(data)
		if derr != nil && (keep || resp.BatchItem[0].ResultReason != kmip.ResultReasonInvalidMessage) {
			t.Fatalf("undecodable request: keep %v, reason %s", keep, ttlv.EnumStr(resp.BatchItem[0].ResultReason))
		}
		var back kmip.ResponseMessage
		if err := ttlv.UnmarshalTTLV(ttlv.MarshalTTLV(resp), &back); err != nil {
			t.Fatalf("response does not re-decode: %v", err)
		}
	})
}
