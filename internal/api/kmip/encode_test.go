package kmip

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"
)

// getResponse builds a one-item Get answer the way the executor does.
func getResponse(minor int32, ts time.Time, batchID []byte, obj kmip.Object, uid string) *kmip.ResponseMessage {
	var ot kmip.ObjectType
	if obj != nil {
		ot = obj.ObjectType()
	}
	return &kmip.ResponseMessage{
		Header: kmip.ResponseHeader{ProtocolVersion: kmip.ProtocolVersion{ProtocolVersionMajor: 1, ProtocolVersionMinor: minor},
			TimeStamp: ts, BatchCount: 1},
		BatchItem: []kmip.ResponseBatchItem{{Operation: kmip.OperationGet, UniqueBatchItemID: batchID, ResultStatus: kmip.ResultStatusSuccess,
			ResponsePayload: &payloads.GetResponsePayload{ObjectType: ot, UniqueIdentifier: uid, Object: obj}}},
	}
}

func plainBlock(format kmip.KeyFormatType, key []byte, alg kmip.CryptographicAlgorithm, length int32) kmip.KeyBlock {
	kb := kmip.KeyBlock{KeyFormatType: format, KeyValue: &kmip.KeyValue{Plain: &kmip.PlainKeyValue{}},
		CryptographicAlgorithm: alg, CryptographicLength: length}
	if format == kmip.KeyFormatTypeTransparentSymmetricKey {
		kb.KeyValue.Plain.KeyMaterial.TransparentSymmetricKey = &kmip.TransparentSymmetricKey{Key: key}
	} else {
		kb.KeyValue.Plain.KeyMaterial.Bytes = &key
	}
	return kb
}

// getObjects are the objects a Get answers with, in every format it serves.
func getObjects() map[string]kmip.Object {
	key := bytes.Repeat([]byte{0xA5}, 32)
	der := bytes.Repeat([]byte{0x30}, 121)
	return map[string]kmip.Object{
		"symmetric raw":         &kmip.SymmetricKey{KeyBlock: plainBlock(kmip.KeyFormatTypeRaw, key, kmip.CryptographicAlgorithmAES, 256)},
		"symmetric transparent": &kmip.SymmetricKey{KeyBlock: plainBlock(kmip.KeyFormatTypeTransparentSymmetricKey, key[:16], kmip.CryptographicAlgorithmAES, 128)},
		"symmetric no alg":      &kmip.SymmetricKey{KeyBlock: plainBlock(kmip.KeyFormatTypeRaw, key[:24], 0, 0)},
		"symmetric empty key":   &kmip.SymmetricKey{KeyBlock: plainBlock(kmip.KeyFormatTypeRaw, []byte{}, kmip.CryptographicAlgorithmAES, 0)},
		"secret opaque":         &kmip.SecretData{SecretDataType: kmip.SecretDataTypePassword, KeyBlock: plainBlock(kmip.KeyFormatTypeOpaque, []byte("hunter2"), 0, 0)},
		"secret raw seed":       &kmip.SecretData{SecretDataType: kmip.SecretDataTypeSeed, KeyBlock: plainBlock(kmip.KeyFormatTypeRaw, key[:9], 0, 0)},
		"secret odd type":       &kmip.SecretData{SecretDataType: 0x8000_0001, KeyBlock: plainBlock(kmip.KeyFormatTypeOpaque, key[:8], 0, 0)},
		"private pkcs8":         &kmip.PrivateKey{KeyBlock: plainBlock(kmip.KeyFormatTypePKCS_8, der, kmip.CryptographicAlgorithmRSA, 2048)},
		"private ec":            &kmip.PrivateKey{KeyBlock: plainBlock(kmip.KeyFormatTypePKCS_8, der[:67], kmip.CryptographicAlgorithmECDSA, 256)},
		"public x509":           &kmip.PublicKey{KeyBlock: plainBlock(kmip.KeyFormatTypeX_509, der[:91], kmip.CryptographicAlgorithmEC, 256)},
		"public no alg":         &kmip.PublicKey{KeyBlock: plainBlock(kmip.KeyFormatTypeX_509, der, 0, 4096)},
	}
}

// TestAppendGetResponseSameBytes holds the hand-written Get encoder to
// kmip-go's bytes for every object type and format a Get returns, every
// 1.x protocol version, with and without a batch item id.
func TestAppendGetResponseSameBytes(t *testing.T) {
	times := []time.Time{time.Unix(1_765_000_000, 0), {}, time.Unix(-5, 0), time.Unix(1<<40, 999)}
	for name, obj := range getObjects() {
		for minor := int32(0); minor <= 4; minor++ {
			for _, ts := range times {
				for _, id := range [][]byte{nil, {1}, []byte("batch-item-nine!")} {
					for _, uid := range []string{"", "7", "0193f1c2-8a7e-7d1b-9c3e-2f4a5b6c7d8e", "0193f1c2-8a7e-7d1b-9c3e-2f4a5b6c7d8e/public"} {
						resp := getResponse(minor, ts, id, obj, uid)
						want := ttlv.MarshalTTLV(resp)
						got, ok := appendGetResponse(nil, resp)
						if !ok {
							t.Fatalf("%s, 1.%d: not taken by the Get encoder", name, minor)
						}
						if !bytes.Equal(got, want) {
							t.Fatalf("%s, 1.%d, id %q, uid %q, time %v:\n got %x\nwant %x", name, minor, id, uid, ts, got, want)
						}
						prefix := []byte("prefix")
						if got := appendResponse(prefix, resp); !bytes.Equal(got, append([]byte("prefix"), want...)) {
							t.Fatalf("%s: appendResponse does not append to dst", name)
						}
					}
				}
			}
		}
	}
}

// TestAppendGetResponseFallsBack: every answer outside the fixed shape is
// left to kmip-go's encoder (and appendResponse gives its bytes).
func TestAppendGetResponseFallsBack(t *testing.T) {
	key := []byte("0123456789abcdef")
	sym := func() *kmip.SymmetricKey {
		return &kmip.SymmetricKey{KeyBlock: plainBlock(kmip.KeyFormatTypeRaw, key, kmip.CryptographicAlgorithmAES, 128)}
	}
	ts := time.Unix(1_765_000_000, 0)
	cases := map[string]func(r *kmip.ResponseMessage){
		"protocol 2.0":       func(r *kmip.ResponseMessage) { r.Header.ProtocolVersion = kmip.V2_0 },
		"client correlation": func(r *kmip.ResponseMessage) { r.Header.ClientCorrelationValue = "c" },
		"server correlation": func(r *kmip.ResponseMessage) { r.Header.ServerCorrelationValue = "s" },
		"nonce":              func(r *kmip.ResponseMessage) { r.Header.Nonce = &kmip.Nonce{NonceID: []byte{1}, NonceValue: []byte{2}} },
		"attestation": func(r *kmip.ResponseMessage) {
			r.Header.AttestationType = []kmip.AttestationType{kmip.AttestationTypeTPMQuote}
		},
		"two items": func(r *kmip.ResponseMessage) {
			r.BatchItem = append(r.BatchItem, r.BatchItem[0])
			r.Header.BatchCount = 2
		},
		"no items": func(r *kmip.ResponseMessage) { r.BatchItem = nil },
		"other op": func(r *kmip.ResponseMessage) { r.BatchItem[0].Operation = kmip.OperationGetAttributes },
		"failed":   func(r *kmip.ResponseMessage) { r.BatchItem[0].ResultStatus = kmip.ResultStatusOperationFailed },
		"reason":   func(r *kmip.ResponseMessage) { r.BatchItem[0].ResultReason = kmip.ResultReasonItemNotFound },
		"message":  func(r *kmip.ResponseMessage) { r.BatchItem[0].ResultMessage = "m" },
		"async":    func(r *kmip.ResponseMessage) { r.BatchItem[0].AsynchronousCorrelationValue = []byte{1} },
		"extension": func(r *kmip.ResponseMessage) {
			r.BatchItem[0].MessageExtension = &kmip.MessageExtension{VendorIdentification: "v"}
		},
		"no payload": func(r *kmip.ResponseMessage) { r.BatchItem[0].ResponsePayload = nil },
		"other payload": func(r *kmip.ResponseMessage) {
			r.BatchItem[0].ResponsePayload = &payloads.GetAttributesResponsePayload{UniqueIdentifier: "x"}
		},
		"nil object": func(r *kmip.ResponseMessage) {
			r.BatchItem[0].ResponsePayload.(*payloads.GetResponsePayload).Object = nil
		},
		"certificate": func(r *kmip.ResponseMessage) {
			r.BatchItem[0].ResponsePayload.(*payloads.GetResponsePayload).Object = &kmip.Certificate{CertificateType: kmip.CertificateTypeX_509, CertificateValue: []byte{1, 2}}
		},
		"compressed": func(r *kmip.ResponseMessage) {
			obj(r).KeyBlock.KeyCompressionType = kmip.KeyCompressionTypeECPublicKeyTypeUncompressed
		},
		"wrapped data": func(r *kmip.ResponseMessage) {
			obj(r).KeyBlock.KeyWrappingData = &kmip.KeyWrappingData{WrappingMethod: kmip.WrappingMethodEncrypt}
		},
		"wrapped value": func(r *kmip.ResponseMessage) { obj(r).KeyBlock.KeyValue = &kmip.KeyValue{Wrapped: &key} },
		"no key value":  func(r *kmip.ResponseMessage) { obj(r).KeyBlock.KeyValue = nil },
		"attributes": func(r *kmip.ResponseMessage) {
			obj(r).KeyBlock.KeyValue.Plain.Attribute = []kmip.Attribute{{AttributeName: "x-a", AttributeValue: "b"}}
		},
		"no material": func(r *kmip.ResponseMessage) { obj(r).KeyBlock.KeyValue.Plain.KeyMaterial = kmip.KeyMaterial{} },
		"two materials": func(r *kmip.ResponseMessage) {
			obj(r).KeyBlock.KeyValue.Plain.KeyMaterial.TransparentSymmetricKey = &kmip.TransparentSymmetricKey{Key: key}
		},
		"rsa public": func(r *kmip.ResponseMessage) {
			obj(r).KeyBlock.KeyValue.Plain.KeyMaterial.TransparentRSAPublicKey = &kmip.TransparentRSAPublicKey{}
		},
		"ec public": func(r *kmip.ResponseMessage) {
			obj(r).KeyBlock.KeyValue.Plain.KeyMaterial.TransparentECPublicKey = &kmip.TransparentECPublicKey{}
		},
		"ec private": func(r *kmip.ResponseMessage) {
			obj(r).KeyBlock.KeyValue.Plain.KeyMaterial.TransparentECPrivateKey = &kmip.TransparentECPrivateKey{}
		},
		"ecdsa private": func(r *kmip.ResponseMessage) {
			//lint:ignore SA1019 the encoder must leave this (KMIP 1.0-1.2) material form to kmip-go too
			obj(r).KeyBlock.KeyValue.Plain.KeyMaterial.TransparentECDSAPrivateKey = &kmip.TransparentECDSAPrivateKey{}
		},
		"typed nil": func(r *kmip.ResponseMessage) {
			r.BatchItem[0].ResponsePayload.(*payloads.GetResponsePayload).Object = (*kmip.SymmetricKey)(nil)
		},
		"typed nil body": func(r *kmip.ResponseMessage) { r.BatchItem[0].ResponsePayload = (*payloads.GetResponsePayload)(nil) },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			r := getResponse(4, ts, nil, sym(), "id")
			mutate(r)
			if _, ok := appendGetResponse(nil, r); ok {
				t.Fatal("taken by the Get encoder; want kmip-go's")
			}
			want, wantPanic := marshalOrPanic(r)
			got, gotPanic := appendOrPanic(r)
			if wantPanic != gotPanic || !bytes.Equal(got, want) {
				t.Fatalf("appendResponse: %x (panic %v), kmip-go: %x (panic %v)", got, gotPanic, want, wantPanic)
			}
		})
	}
}

func obj(r *kmip.ResponseMessage) *kmip.SymmetricKey {
	return r.BatchItem[0].ResponsePayload.(*payloads.GetResponsePayload).Object.(*kmip.SymmetricKey)
}

func marshalOrPanic(r *kmip.ResponseMessage) (b []byte, panicked bool) {
	defer func() {
		if recover() != nil {
			b, panicked = nil, true
		}
	}()
	return ttlv.MarshalTTLV(r), false
}

func appendOrPanic(r *kmip.ResponseMessage) (b []byte, panicked bool) {
	defer func() {
		if recover() != nil {
			b, panicked = nil, true
		}
	}()
	return appendResponse(nil, r), false
}

// FuzzAppendGetResponse: for any key material, identifiers, time, version
// and object type, the Get encoder gives kmip-go's bytes.
func FuzzAppendGetResponse(f *testing.F) {
	f.Add(uint8(0), uint8(4), int64(1_765_000_000), []byte("batch"), "uid", []byte("0123456789abcdef0123456789abcdef"), uint32(3), int32(256), uint32(2))
	f.Add(uint8(5), uint8(0), int64(-1), []byte{}, "", []byte{}, uint32(0), int32(0), uint32(0))
	f.Fuzz(func(t *testing.T, kind, minor uint8, sec int64, batchID []byte, uid string, key []byte, alg uint32, length int32, sdt uint32) {
		var o kmip.Object
		a := kmip.CryptographicAlgorithm(alg)
		switch kind % 6 {
		case 0:
			o = &kmip.SymmetricKey{KeyBlock: plainBlock(kmip.KeyFormatTypeRaw, key, a, length)}
		case 1:
			o = &kmip.SymmetricKey{KeyBlock: plainBlock(kmip.KeyFormatTypeTransparentSymmetricKey, key, a, length)}
		case 2:
			o = &kmip.SecretData{SecretDataType: kmip.SecretDataType(sdt), KeyBlock: plainBlock(kmip.KeyFormatTypeOpaque, key, a, length)}
		case 3:
			o = &kmip.SecretData{SecretDataType: kmip.SecretDataType(sdt), KeyBlock: plainBlock(kmip.KeyFormatTypeRaw, key, a, length)}
		case 4:
			o = &kmip.PrivateKey{KeyBlock: plainBlock(kmip.KeyFormatTypePKCS_8, key, a, length)}
		default:
			o = &kmip.PublicKey{KeyBlock: plainBlock(kmip.KeyFormatTypeX_509, key, a, length)}
		}
		r := getResponse(int32(minor%5), time.Unix(sec, 0), batchID, o, uid)
		want := ttlv.MarshalTTLV(r)
		got, ok := appendGetResponse(nil, r)
		if !ok || !bytes.Equal(got, want) {
			t.Fatalf("ok %v\n got %x\nwant %x", ok, got, want)
		}
	})
}

// getRequests are encoded Get requests of the shapes clients send, and
// some the Get decoder must leave to kmip-go.
func getRequests() [][]byte {
	ts := time.Unix(1_765_000_000, 0)
	var out [][]byte
	for _, v := range []kmip.ProtocolVersion{kmip.V1_0, kmip.V1_2, kmip.V1_4, kmip.V2_0} {
		for _, pl := range []*payloads.GetRequestPayload{{UniqueIdentifier: "0193f1c2-8a7e-7d1b-9c3e-2f4a5b6c7d8e"}, {}, {UniqueIdentifier: "k/public", KeyFormatType: kmip.KeyFormatTypeRaw},
			{KeyFormatType: kmip.KeyFormatTypeTransparentSymmetricKey}, {UniqueIdentifier: "x", KeyCompressionType: kmip.KeyCompressionTypeECPublicKeyTypeUncompressed}} {
			m := kmip.NewRequestMessage(v, pl)
			out = append(out, ttlv.MarshalTTLV(&m))
			m.Header.TimeStamp = nil
			out = append(out, ttlv.MarshalTTLV(&m))
			m.Header.MaximumResponseSize = 4096
			m.BatchItem[0].UniqueBatchItemID = []byte{7, 7}
			out = append(out, ttlv.MarshalTTLV(&m))
			m.Header.TimeStamp = &ts
			m.Header.ClientCorrelationValue = "corr"
			out = append(out, ttlv.MarshalTTLV(&m))
			m.Header.ClientCorrelationValue = ""
			m.BatchItem = append(m.BatchItem, m.BatchItem[0])
			m.Header.BatchCount = 2
			out = append(out, ttlv.MarshalTTLV(&m))
		}
	}
	locate := kmip.NewRequestMessage(kmip.V1_4, &payloads.LocateRequestPayload{})
	out = append(out, ttlv.MarshalTTLV(&locate))
	return out
}

// TestDecodeGetRequestSameMessage: whatever the Get decoder takes, kmip-go
// decodes to the same message; the common shapes are taken.
func TestDecodeGetRequestSameMessage(t *testing.T) {
	taken := 0
	for _, b := range getRequests() {
		checkGetDecoder(t, b)
		if _, ok := decodeGetRequest(b); ok {
			taken++
		}
		// Cut short, or with a byte changed anywhere: still the same.
		for j := range b {
			checkGetDecoder(t, b[:j])
			c := bytes.Clone(b)
			c[j] ^= 0x41
			checkGetDecoder(t, c)
		}
	}
	// Four versions less 2.0, five payloads less the compressed one, three
	// headers each, and the fourth header where kmip-go's encoder leaves the
	// correlation value out (before 1.4); two items are left to kmip-go.
	if want := 3*4*3 + 2*4; taken != want {
		t.Fatalf("the Get decoder took %d of the requests, want %d", taken, want)
	}
}

func checkGetDecoder(t *testing.T, b []byte) {
	t.Helper()
	got, ok := decodeGetRequest(b)
	if !ok {
		return
	}
	want := new(kmip.RequestMessage)
	if err := ttlv.UnmarshalTTLV(b, want); err != nil {
		t.Fatalf("the Get decoder took %x, which kmip-go refuses: %v", b, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%x:\n got %#v\nwant %#v", b, got, want)
	}
}

// FuzzDecodeGetRequest: any bytes the Get decoder takes decode to the same
// message through kmip-go.
func FuzzDecodeGetRequest(f *testing.F) {
	for _, b := range getRequests() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := decodeGetRequest(b); ok {
					t.Fatalf("kmip-go panics on %x, which the Get decoder takes: %v", b, r)
				}
			}
		}()
		checkGetDecoder(t, b)
	})
}
