package kmip

import (
	"encoding/binary"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"
)

// appendResponse appends resp, TTLV-encoded, to dst. The answer to a
// one-item successful Get (the shape Get answers have: a key block with
// plain key material) is encoded by appendGetResponse without reflection;
// every other message goes through kmip-go's encoder. Both give the same
// bytes (encode_test.go holds them to it).
func appendResponse(dst []byte, resp *kmip.ResponseMessage) []byte {
	if b, ok := appendGetResponse(dst, resp); ok {
		return b
	}
	return append(dst, ttlv.MarshalTTLV(resp)...)
}

// TTLV item types (KMIP 1.4, 9.1.1.2).
const (
	ttlvStructure   = 0x01
	ttlvInteger     = 0x02
	ttlvEnumeration = 0x05
	ttlvTextString  = 0x07
	ttlvByteString  = 0x08
	ttlvDateTime    = 0x09
)

// appendGetResponse encodes resp when it has the fixed shape of a
// successful one-item Get answer, exactly as kmip-go's reflective encoder
// does; ok is false (and dst unchanged) for any other message.
func appendGetResponse(dst []byte, resp *kmip.ResponseMessage) (b []byte, ok bool) {
	h := &resp.Header
	// Fields the encoder writes depending on the protocol version are left
	// to it: only plain 1.x headers are taken.
	if h.ProtocolVersion.ProtocolVersionMajor != 1 || h.Nonce != nil || len(h.AttestationType) != 0 ||
		h.ClientCorrelationValue != "" || h.ServerCorrelationValue != "" || len(resp.BatchItem) != 1 {
		return dst, false
	}
	bi := &resp.BatchItem[0]
	if bi.Operation != kmip.OperationGet || bi.ResultStatus != kmip.ResultStatusSuccess || bi.ResultReason != 0 ||
		bi.ResultMessage != "" || len(bi.AsynchronousCorrelationValue) != 0 || bi.MessageExtension != nil {
		return dst, false
	}
	pl, isGet := bi.ResponsePayload.(*payloads.GetResponsePayload)
	if !isGet || pl == nil {
		return dst, false
	}
	var (
		objTag int
		kb     *kmip.KeyBlock
		sdt    kmip.SecretDataType
	)
	switch o := pl.Object.(type) {
	case *kmip.SymmetricKey:
		if o == nil {
			return dst, false
		}
		objTag, kb = kmip.TagSymmetricKey, &o.KeyBlock
	case *kmip.SecretData:
		if o == nil {
			return dst, false
		}
		objTag, kb, sdt = kmip.TagSecretData, &o.KeyBlock, o.SecretDataType
	case *kmip.PrivateKey:
		if o == nil {
			return dst, false
		}
		objTag, kb = kmip.TagPrivateKey, &o.KeyBlock
	case *kmip.PublicKey:
		if o == nil {
			return dst, false
		}
		objTag, kb = kmip.TagPublicKey, &o.KeyBlock
	default:
		return dst, false
	}
	if kb.KeyCompressionType != 0 || kb.KeyWrappingData != nil || kb.KeyValue == nil ||
		kb.KeyValue.Wrapped != nil || kb.KeyValue.Plain == nil || len(kb.KeyValue.Plain.Attribute) != 0 {
		return dst, false
	}
	km := &kb.KeyValue.Plain.KeyMaterial
	if km.TransparentRSAPrivateKey != nil || km.TransparentRSAPublicKey != nil || km.TransparentECDSAPrivateKey != nil ||
		km.TransparentECDSAPublicKey != nil || km.TransparentECPrivateKey != nil || km.TransparentECPublicKey != nil ||
		(km.Bytes == nil) == (km.TransparentSymmetricKey == nil) {
		return dst, false
	}

	b = dst
	msg := beginStruct(&b, kmip.TagResponseMessage)
	hdr := beginStruct(&b, kmip.TagResponseHeader)
	pv := beginStruct(&b, kmip.TagProtocolVersion)
	b = appendInteger(b, kmip.TagProtocolVersionMajor, h.ProtocolVersion.ProtocolVersionMajor)
	b = appendInteger(b, kmip.TagProtocolVersionMinor, h.ProtocolVersion.ProtocolVersionMinor)
	endStruct(b, pv)
	b = appendHeader(b, kmip.TagTimeStamp, ttlvDateTime, 8)
	b = binary.BigEndian.AppendUint64(b, uint64(h.TimeStamp.Unix())) // #nosec G115 -- the two's complement of the seconds, as kmip-go writes them
	b = appendInteger(b, kmip.TagBatchCount, h.BatchCount)
	endStruct(b, hdr)

	item := beginStruct(&b, kmip.TagBatchItem)
	b = appendEnum(b, kmip.TagOperation, uint32(bi.Operation))
	if len(bi.UniqueBatchItemID) > 0 {
		b = appendBytes(b, kmip.TagUniqueBatchItemID, ttlvByteString, bi.UniqueBatchItemID)
	}
	b = appendEnum(b, kmip.TagResultStatus, uint32(bi.ResultStatus))
	payload := beginStruct(&b, kmip.TagResponsePayload)
	b = appendEnum(b, kmip.TagObjectType, uint32(pl.ObjectType))
	b = appendString(b, kmip.TagUniqueIdentifier, pl.UniqueIdentifier)
	obj := beginStruct(&b, objTag)
	if objTag == kmip.TagSecretData {
		b = appendEnum(b, kmip.TagSecretDataType, uint32(sdt))
	}
	block := beginStruct(&b, kmip.TagKeyBlock)
	b = appendEnum(b, kmip.TagKeyFormatType, uint32(kb.KeyFormatType))
	value := beginStruct(&b, kmip.TagKeyValue)
	if km.Bytes != nil {
		b = appendBytes(b, kmip.TagKeyMaterial, ttlvByteString, *km.Bytes)
	} else {
		mat := beginStruct(&b, kmip.TagKeyMaterial)
		b = appendBytes(b, kmip.TagKey, ttlvByteString, km.TransparentSymmetricKey.Key)
		endStruct(b, mat)
	}
	endStruct(b, value)
	if kb.CryptographicAlgorithm != 0 {
		b = appendEnum(b, kmip.TagCryptographicAlgorithm, uint32(kb.CryptographicAlgorithm))
	}
	if kb.CryptographicLength != 0 {
		b = appendInteger(b, kmip.TagCryptographicLength, kb.CryptographicLength)
	}
	endStruct(b, block)
	endStruct(b, obj)
	endStruct(b, payload)
	endStruct(b, item)
	endStruct(b, msg)
	return b, true
}

func appendHeader(b []byte, tag int, typ byte, n int) []byte {
	b = append(b, byte(tag>>16), byte(tag>>8), byte(tag), typ)
	return binary.BigEndian.AppendUint32(b, uint32(n)) // #nosec G115 -- lengths of values in a message bounded far below 4 GiB
}

// beginStruct appends a structure's header with a zero length and returns
// where the length goes; endStruct writes it once the fields are appended.
func beginStruct(b *[]byte, tag int) int {
	*b = appendHeader(*b, tag, ttlvStructure, 0)
	return len(*b)
}

func endStruct(b []byte, start int) {
	binary.BigEndian.PutUint32(b[start-4:start], uint32(len(b)-start)) // #nosec G115 -- a message bounded far below 4 GiB
}

func appendInteger(b []byte, tag int, v int32) []byte {
	b = appendHeader(b, tag, ttlvInteger, 4)
	b = binary.BigEndian.AppendUint32(b, uint32(v)) // #nosec G115 -- the two's complement, as TTLV encodes integers
	return append(b, 0, 0, 0, 0)
}

func appendEnum(b []byte, tag int, v uint32) []byte {
	b = appendHeader(b, tag, ttlvEnumeration, 4)
	b = binary.BigEndian.AppendUint32(b, v)
	return append(b, 0, 0, 0, 0)
}

func appendBytes(b []byte, tag int, typ byte, v []byte) []byte {
	b = appendHeader(b, tag, typ, len(v))
	b = append(b, v...)
	return append(b, make([]byte, (8-len(v)%8)%8)...)
}

func appendString(b []byte, tag int, v string) []byte {
	b = appendHeader(b, tag, ttlvTextString, len(v))
	b = append(b, v...)
	return append(b, make([]byte, (8-len(v)%8)%8)...)
}
