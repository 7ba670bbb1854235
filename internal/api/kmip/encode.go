package kmip

import (
	"bytes"
	"encoding/binary"
	"time"

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
	b = append(b, byte(tag>>16), byte(tag>>8), byte(tag), typ) // #nosec G115 -- the three bytes of a 24-bit TTLV tag, taken apart on purpose
	return binary.BigEndian.AppendUint32(b, uint32(n))         // #nosec G115 -- lengths of values in a message bounded far below 4 GiB
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

// ttlvItem is one decoded item header: its value is b[val:val+n], the next
// item starts at next.
type ttlvItem struct {
	tag       int
	typ       byte
	val, n    int
	next, end int
}

// item reads the item header at off of b, which must lie before end with
// its padded value.
func item(b []byte, off, end int) (ttlvItem, bool) {
	if off+8 > end {
		return ttlvItem{}, false
	}
	n := int(binary.BigEndian.Uint32(b[off+4 : off+8]))
	val := off + 8
	next := val + n + (8-n%8)%8
	if n < 0 || next > end || next < val {
		return ttlvItem{}, false
	}
	return ttlvItem{tag: int(b[off])<<16 | int(b[off+1])<<8 | int(b[off+2]), typ: b[off+3], val: val, n: n, next: next, end: val + n}, true
}

func (it ttlvItem) is(tag int, typ byte, n int) bool {
	return it.tag == tag && it.typ == typ && (n < 0 || it.n == n)
}

func (it ttlvItem) uint32(b []byte) uint32 { return binary.BigEndian.Uint32(b[it.val:]) }

// decodeGetRequest decodes b when it is a one-item Get request of the
// plain shape clients send (a 1.x header with at most a maximum response
// size and a time stamp besides the version and batch count; a batch item
// id; a payload with at most a unique identifier and a key format type),
// giving what kmip-go's reflective decoder gives for the same bytes
// (encode_test.go holds the two to it). ok is false for any other message,
// which is then left to kmip-go.
func decodeGetRequest(b []byte) (msg *kmip.RequestMessage, ok bool) {
	top, ok := item(b, 0, len(b))
	if !ok || !top.is(kmip.TagRequestMessage, ttlvStructure, -1) || top.next != len(b) || top.end != len(b) {
		return nil, false
	}
	// The message, its item, payload and time stamp in one allocation.
	d := new(decodedGet)
	msg = &d.msg
	h := &msg.Header
	hdr, ok := item(b, top.val, top.end)
	if !ok || !hdr.is(kmip.TagRequestHeader, ttlvStructure, -1) {
		return nil, false
	}
	pv, ok := item(b, hdr.val, hdr.end)
	if !ok || !pv.is(kmip.TagProtocolVersion, ttlvStructure, 32) {
		return nil, false
	}
	major, ok1 := item(b, pv.val, pv.end)
	minor, ok2 := item(b, major.next, pv.end)
	if !ok1 || !ok2 || !major.is(kmip.TagProtocolVersionMajor, ttlvInteger, 4) || !minor.is(kmip.TagProtocolVersionMinor, ttlvInteger, 4) {
		return nil, false
	}
	h.ProtocolVersion.ProtocolVersionMajor = int32(major.uint32(b)) // #nosec G115 -- two's complement, as TTLV encodes integers
	h.ProtocolVersion.ProtocolVersionMinor = int32(minor.uint32(b)) // #nosec G115 -- as above
	if h.ProtocolVersion.ProtocolVersionMajor != 1 {
		return nil, false
	}
	f, ok := item(b, pv.next, hdr.end)
	if ok && f.is(kmip.TagMaximumResponseSize, ttlvInteger, 4) {
		h.MaximumResponseSize = int32(f.uint32(b)) // #nosec G115 -- as above
		f, ok = item(b, f.next, hdr.end)
	}
	if ok && f.is(kmip.TagTimeStamp, ttlvDateTime, 8) {
		d.ts = time.Unix(int64(binary.BigEndian.Uint64(b[f.val:])), 0) // #nosec G115 -- as kmip-go reads a date-time
		h.TimeStamp = &d.ts
		f, ok = item(b, f.next, hdr.end)
	}
	if !ok || !f.is(kmip.TagBatchCount, ttlvInteger, 4) || f.next != hdr.end || hdr.end != hdr.next {
		return nil, false
	}
	h.BatchCount = int32(f.uint32(b)) // #nosec G115 -- as above

	bi, ok := item(b, hdr.next, top.end)
	if !ok || !bi.is(kmip.TagBatchItem, ttlvStructure, -1) || bi.next != top.end || bi.end != bi.next {
		return nil, false
	}
	op, ok := item(b, bi.val, bi.end)
	if !ok || !op.is(kmip.TagOperation, ttlvEnumeration, 4) || kmip.Operation(op.uint32(b)) != kmip.OperationGet {
		return nil, false
	}
	msg.BatchItem = d.items[:]
	it := &msg.BatchItem[0]
	it.Operation = kmip.OperationGet
	f, ok = item(b, op.next, bi.end)
	if ok && f.is(kmip.TagUniqueBatchItemID, ttlvByteString, -1) && f.n > 0 {
		it.UniqueBatchItemID = bytes.Clone(b[f.val:f.end])
		f, ok = item(b, f.next, bi.end)
	}
	if !ok || !f.is(kmip.TagRequestPayload, ttlvStructure, -1) || f.next != bi.end || f.end != f.next {
		return nil, false
	}
	pl := &d.payload
	it.RequestPayload = pl
	end := f.end
	off := f.val
	if off < end {
		if f, ok = item(b, off, end); ok && f.is(kmip.TagUniqueIdentifier, ttlvTextString, -1) {
			pl.UniqueIdentifier = string(b[f.val:f.end])
			off = f.next
		}
	}
	if off < end {
		if f, ok = item(b, off, end); ok && f.is(kmip.TagKeyFormatType, ttlvEnumeration, 4) {
			pl.KeyFormatType = kmip.KeyFormatType(f.uint32(b))
			off = f.next
		}
	}
	if off != end {
		return nil, false
	}
	return msg, true
}

// decodedGet is what decodeGetRequest allocates for one request.
type decodedGet struct {
	msg     kmip.RequestMessage
	items   [1]kmip.RequestBatchItem
	payload payloads.GetRequestPayload
	ts      time.Time
}
