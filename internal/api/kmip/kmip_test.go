package kmip

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipclient"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/coffer-kms/coffer/internal/api/forward"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/testutil"
)

func attr(name kmip.AttributeName, v any) kmip.Attribute {
	return kmip.Attribute{AttributeName: name, AttributeValue: v}
}

func nameAttr(n string) kmip.Attribute {
	return attr(kmip.AttributeNameName, kmip.Name{NameValue: n, NameType: kmip.NameTypeUninterpretedTextString})
}

func aesCreate(name string, extra ...kmip.Attribute) *payloads.CreateRequestPayload {
	return &payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey, TemplateAttribute: kmip.TemplateAttribute{
		Attribute: append([]kmip.Attribute{nameAttr(name), attr(kmip.AttributeNameCryptographicAlgorithm, kmip.CryptographicAlgorithmAES),
			attr(kmip.AttributeNameCryptographicLength, int32(256))}, extra...)}}
}

func findAttr(attrs []kmip.Attribute, n kmip.AttributeName) (any, bool) {
	for _, a := range attrs {
		if a.AttributeName == n {
			if v, ok := a.AttributeValue.(ttlv.Value); ok { // custom attributes
				return v.Value, true
			}
			return a.AttributeValue, true
		}
	}
	return nil, false
}

func getState(t *testing.T, c *kmipclient.Client, id string) kmip.State {
	t.Helper()
	r := must[*payloads.GetAttributesResponsePayload](t, c, &payloads.GetAttributesRequestPayload{UniqueIdentifier: id, AttributeName: []kmip.AttributeName{kmip.AttributeNameState}})
	v, ok := findAttr(r.Attribute, kmip.AttributeNameState)
	if !ok {
		t.Fatalf("no State attribute for %s", id)
	}
	return v.(kmip.State)
}

// TestOperations drives every operation through kmip-go's client as an
// endpoint with manage on wallet w, and checks each result against what the
// service (the same objects REST serves) holds.
func TestOperations(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client("ep-manage")
	if v := c.Version(); v != kmip.V1_4 {
		t.Fatalf("negotiated version %v, want 1.4", v)
	}

	dv := must[*payloads.DiscoverVersionsResponsePayload](t, c, &payloads.DiscoverVersionsRequestPayload{})
	if !slices.Equal(dv.ProtocolVersion, Versions) {
		t.Fatalf("DiscoverVersions %v", dv.ProtocolVersion)
	}
	dv = must[*payloads.DiscoverVersionsResponsePayload](t, c, &payloads.DiscoverVersionsRequestPayload{ProtocolVersion: []kmip.ProtocolVersion{kmip.V2_0, kmip.V1_2}})
	if !slices.Equal(dv.ProtocolVersion, []kmip.ProtocolVersion{kmip.V1_2}) {
		t.Fatalf("DiscoverVersions(2.0, 1.2) %v", dv.ProtocolVersion)
	}
	q := must[*payloads.QueryResponsePayload](t, c, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{
		kmip.QueryFunctionOperations, kmip.QueryFunctionObjects, kmip.QueryFunctionServerInformation}})
	if !slices.Contains(q.Operations, kmip.OperationReKey) || len(q.Operations) != len(Operations) || !slices.Contains(q.ObjectType, kmip.ObjectTypeSecretData) ||
		!strings.HasPrefix(q.VendorIdentification, "Coffer") {
		t.Fatalf("Query %+v", q)
	}

	// Create: pre-active, in the endpoint's one writable wallet.
	cr := must[*payloads.CreateResponsePayload](t, c, aesCreate("db1/tde", attr("x-owner", "dba")))
	obj, err := f.svc.Objects.DescribeObject(f.root, service.Ref{ID: cr.UniqueIdentifier})
	if err != nil || obj.Wallet != "w" || obj.Name != "db1/tde" || obj.State != "pre-active" || obj.Length != 256 || obj.Attributes["owner"] != "dba" {
		t.Fatalf("created object %+v (%v)", obj, err)
	}
	// Get: the material REST returns.
	g := must[*payloads.GetResponsePayload](t, c, &payloads.GetRequestPayload{UniqueIdentifier: cr.UniqueIdentifier})
	key, err := g.Object.(*kmip.SymmetricKey).KeyMaterial()
	_, mat, _ := f.svc.Objects.GetObject(f.root, service.Ref{ID: cr.UniqueIdentifier}, 0)
	if err != nil || len(key) != 32 || !bytes.Equal(key, mat.Value) {
		t.Fatalf("Get material %d bytes (%v), differs from the service's: %v", len(key), err, !bytes.Equal(key, mat.Value))
	}
	// GetAttributes / GetAttributeList.
	ga := must[*payloads.GetAttributesResponsePayload](t, c, &payloads.GetAttributesRequestPayload{UniqueIdentifier: cr.UniqueIdentifier})
	if n, _ := findAttr(ga.Attribute, kmip.AttributeNameName); n.(kmip.Name).NameValue != "db1/tde" {
		t.Fatalf("Name %v", n)
	}
	if g, _ := findAttr(ga.Attribute, kmip.AttributeNameObjectGroup); g != "w" {
		t.Fatalf("Object Group %v", g)
	}
	if o, _ := findAttr(ga.Attribute, "x-owner"); o != "dba" {
		t.Fatalf("x-owner %v", o)
	}
	if s, _ := findAttr(ga.Attribute, kmip.AttributeNameState); s != kmip.StatePreActive {
		t.Fatalf("State %v", s)
	}
	gl := must[*payloads.GetAttributeListResponsePayload](t, c, &payloads.GetAttributeListRequestPayload{UniqueIdentifier: cr.UniqueIdentifier})
	for _, n := range []kmip.AttributeName{kmip.AttributeNameName, kmip.AttributeNameState, kmip.AttributeNameCryptographicLength, "x-owner"} {
		if !slices.Contains(gl.AttributeName, n) {
			t.Fatalf("GetAttributeList %v lacks %s", gl.AttributeName, n)
		}
	}
	// Activate.
	must[*payloads.ActivateResponsePayload](t, c, &payloads.ActivateRequestPayload{UniqueIdentifier: cr.UniqueIdentifier})
	if s := getState(t, c, cr.UniqueIdentifier); s != kmip.StateActive {
		t.Fatalf("after Activate: %v", s)
	}
	if r := reason(t, c, &payloads.ActivateRequestPayload{UniqueIdentifier: cr.UniqueIdentifier}); r != kmip.ResultReasonIllegalOperation {
		t.Fatalf("second Activate: %v", ttlv.EnumStr(r))
	}
	// Add / Modify / Delete custom attributes, seen by the service as "env".
	must[*payloads.AddAttributeResponsePayload](t, c, &payloads.AddAttributeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier, Attribute: attr("x-env", "prod")})
	if r := reason(t, c, &payloads.AddAttributeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier, Attribute: attr("x-env", "dev")}); r != kmip.ResultReasonInvalidField {
		t.Fatalf("AddAttribute of an existing attribute: %v", ttlv.EnumStr(r))
	}
	must[*payloads.ModifyAttributeResponsePayload](t, c, &payloads.ModifyAttributeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier, Attribute: attr("x-env", "staging")})
	if obj, _ := f.svc.Objects.DescribeObject(f.root, service.Ref{ID: cr.UniqueIdentifier}); obj.Attributes["env"] != "staging" {
		t.Fatalf("after ModifyAttribute: %v", obj.Attributes)
	}
	if r := reason(t, c, &payloads.ModifyAttributeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier, Attribute: attr("x-missing", "v")}); r != kmip.ResultReasonItemNotFound {
		t.Fatalf("ModifyAttribute of a missing attribute: %v", ttlv.EnumStr(r))
	}
	if r := reason(t, c, &payloads.ModifyAttributeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier, Attribute: attr(kmip.AttributeNameCryptographicLength, int32(128))}); r != kmip.ResultReasonPermissionDenied {
		t.Fatalf("ModifyAttribute of Cryptographic Length: %v", ttlv.EnumStr(r))
	}
	del := must[*payloads.DeleteAttributeResponsePayload](t, c, &payloads.DeleteAttributeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier, AttributeName: "x-env"})
	if v, _ := findAttr([]kmip.Attribute{del.Attribute}, "x-env"); v != "staging" {
		t.Fatalf("DeleteAttribute returned %v", del.Attribute.AttributeValue)
	}
	if obj, _ := f.svc.Objects.DescribeObject(f.root, service.Ref{ID: cr.UniqueIdentifier}); obj.Attributes["env"] != "" || obj.Attributes["owner"] != "dba" {
		t.Fatalf("after DeleteAttribute: %v", obj.Attributes)
	}
	// ReKey: a new version of the same object.
	rk := must[*payloads.RekeyResponsePayload](t, c, &payloads.RekeyRequestPayload{UniqueIdentifier: cr.UniqueIdentifier})
	g2 := must[*payloads.GetResponsePayload](t, c, &payloads.GetRequestPayload{UniqueIdentifier: rk.UniqueIdentifier})
	key2, _ := g2.Object.(*kmip.SymmetricKey).KeyMaterial()
	if obj, _ := f.svc.Objects.DescribeObject(f.root, service.Ref{ID: cr.UniqueIdentifier}); rk.UniqueIdentifier != cr.UniqueIdentifier || obj.Latest != 2 || bytes.Equal(key, key2) {
		t.Fatalf("ReKey: id %s latest %d same material %v", rk.UniqueIdentifier, obj.Latest, bytes.Equal(key, key2))
	}

	// Register a symmetric key and secret data.
	aes := bytes.Repeat([]byte{7}, 16)
	reg := must[*payloads.RegisterResponsePayload](t, c, &payloads.RegisterRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey,
		TemplateAttribute: kmip.TemplateAttribute{Attribute: []kmip.Attribute{nameAttr("imported")}},
		Object: &kmip.SymmetricKey{KeyBlock: kmip.KeyBlock{KeyFormatType: kmip.KeyFormatTypeRaw, CryptographicAlgorithm: kmip.CryptographicAlgorithmAES,
			CryptographicLength: 128, KeyValue: &kmip.KeyValue{Plain: &kmip.PlainKeyValue{KeyMaterial: kmip.KeyMaterial{Bytes: &aes}}}}}})
	if _, m, err := f.svc.Objects.GetObject(f.root, service.Ref{ID: reg.UniqueIdentifier}, 0); err != nil || !bytes.Equal(m.Value, aes) {
		t.Fatalf("registered key: %v", err)
	}
	secret := []byte("s3cret-value")
	regS := must[*payloads.RegisterResponsePayload](t, c, &payloads.RegisterRequestPayload{ObjectType: kmip.ObjectTypeSecretData,
		TemplateAttribute: kmip.TemplateAttribute{Attribute: []kmip.Attribute{nameAttr("app/password")}},
		Object: &kmip.SecretData{SecretDataType: kmip.SecretDataTypePassword, KeyBlock: kmip.KeyBlock{KeyFormatType: kmip.KeyFormatTypeOpaque,
			KeyValue: &kmip.KeyValue{Plain: &kmip.PlainKeyValue{KeyMaterial: kmip.KeyMaterial{Bytes: &secret}}}}}})
	gs := must[*payloads.GetResponsePayload](t, c, &payloads.GetRequestPayload{UniqueIdentifier: regS.UniqueIdentifier})
	if d, err := gs.Object.(*kmip.SecretData).Data(); err != nil || !bytes.Equal(d, secret) {
		t.Fatalf("secret data round trip: %q %v", d, err)
	}
	if obj, _ := f.svc.Objects.DescribeObject(f.root, service.Ref{Wallet: "w", Name: "app/password"}); obj.Type != service.TypeSecretData || obj.ID != regS.UniqueIdentifier {
		t.Fatalf("REST view of the registered secret: %+v", obj)
	}

	// CreateKeyPair: one Coffer object, two KMIP halves.
	kp := must[*payloads.CreateKeyPairResponsePayload](t, c, &payloads.CreateKeyPairRequestPayload{
		CommonTemplateAttribute: &kmip.TemplateAttribute{Attribute: []kmip.Attribute{attr(kmip.AttributeNameCryptographicAlgorithm, kmip.CryptographicAlgorithmRSA),
			attr(kmip.AttributeNameCryptographicLength, int32(2048))}},
		PrivateKeyTemplateAttribute: &kmip.TemplateAttribute{Attribute: []kmip.Attribute{nameAttr("signing")}}})
	if kp.PublicKeyUniqueIdentifier != kp.PrivateKeyUniqueIdentifier+PublicSuffix {
		t.Fatalf("key pair ids %s %s", kp.PrivateKeyUniqueIdentifier, kp.PublicKeyUniqueIdentifier)
	}
	gp := must[*payloads.GetResponsePayload](t, c, &payloads.GetRequestPayload{UniqueIdentifier: kp.PrivateKeyUniqueIdentifier})
	gpub := must[*payloads.GetResponsePayload](t, c, &payloads.GetRequestPayload{UniqueIdentifier: kp.PublicKeyUniqueIdentifier})
	privDER, _ := gp.Object.(*kmip.PrivateKey).KeyBlock.GetBytes()
	pubDER, _ := gpub.Object.(*kmip.PublicKey).KeyBlock.GetBytes()
	priv, err1 := x509.ParsePKCS8PrivateKey(privDER)
	pub, err2 := x509.ParsePKIXPublicKey(pubDER)
	if err1 != nil || err2 != nil || !priv.(*rsa.PrivateKey).PublicKey.Equal(pub) || priv.(*rsa.PrivateKey).N.BitLen() != 2048 {
		t.Fatalf("key pair halves do not match: %v %v", err1, err2)
	}
	if gpub.ObjectType != kmip.ObjectTypePublicKey || gp.ObjectType != kmip.ObjectTypePrivateKey {
		t.Fatalf("object types %v %v", gpub.ObjectType, gp.ObjectType)
	}
	if r := reason(t, c, &payloads.RekeyRequestPayload{UniqueIdentifier: kp.PrivateKeyUniqueIdentifier}); r != kmip.ResultReasonIllegalOperation {
		t.Fatalf("ReKey of a private key: %v", ttlv.EnumStr(r))
	}

	// Locate by name, custom attribute, object type, group.
	loc := func(attrs ...kmip.Attribute) []string {
		return must[*payloads.LocateResponsePayload](t, c, &payloads.LocateRequestPayload{Attribute: attrs}).UniqueIdentifier
	}
	if ids := loc(nameAttr("db1/tde")); !slices.Equal(ids, []string{cr.UniqueIdentifier}) {
		t.Fatalf("Locate by name: %v", ids)
	}
	if ids := loc(attr("x-owner", "dba")); !slices.Equal(ids, []string{cr.UniqueIdentifier}) {
		t.Fatalf("Locate by x-owner: %v", ids)
	}
	if ids := loc(attr(kmip.AttributeNameObjectType, kmip.ObjectTypePublicKey)); !slices.Equal(ids, []string{kp.PublicKeyUniqueIdentifier}) {
		t.Fatalf("Locate public keys: %v", ids)
	}
	if ids := loc(nameAttr("signing")); len(ids) != 2 {
		t.Fatalf("Locate both halves of a pair by name: %v", ids)
	}
	if ids := loc(attr(kmip.AttributeNameObjectGroup, "w"), attr(kmip.AttributeNameObjectType, kmip.ObjectTypeSymmetricKey)); len(ids) != 2 {
		t.Fatalf("Locate symmetric keys in w: %v", ids)
	}
	if ids := loc(attr(kmip.AttributeNameState, kmip.StatePreActive)); len(ids) != 4 {
		t.Fatalf("Locate pre-active (imported key, secret, both halves): %v", ids)
	}
	lr := must[*payloads.LocateResponsePayload](t, c, &payloads.LocateRequestPayload{MaximumItems: 1})
	if len(lr.UniqueIdentifier) != 1 || lr.LocatedItems == nil || *lr.LocatedItems != 5 {
		t.Fatalf("Locate with Maximum Items 1: %v of %v", lr.UniqueIdentifier, lr.LocatedItems)
	}

	// Destroy: refused while active (Coffer's two-step rule), then Revoke
	// deactivates and Destroy erases.
	if r := reason(t, c, &payloads.DestroyRequestPayload{UniqueIdentifier: cr.UniqueIdentifier}); r != kmip.ResultReasonIllegalOperation {
		t.Fatalf("Destroy of an active key: %v", ttlv.EnumStr(r))
	}
	if s := getState(t, c, cr.UniqueIdentifier); s != kmip.StateActive {
		t.Fatalf("refused Destroy changed the state to %v", s)
	}
	must[*payloads.RevokeResponsePayload](t, c, &payloads.RevokeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier,
		RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeCessationOfOperation, RevocationMessage: "retired"}})
	if s := getState(t, c, cr.UniqueIdentifier); s != kmip.StateDeactivated {
		t.Fatalf("after Revoke (cessation): %v", s)
	}
	must[*payloads.RevokeResponsePayload](t, c, &payloads.RevokeRequestPayload{UniqueIdentifier: reg.UniqueIdentifier,
		RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeKeyCompromise}})
	if s := getState(t, c, reg.UniqueIdentifier); s != kmip.StateCompromised {
		t.Fatalf("after Revoke (compromise): %v", s)
	}
	must[*payloads.DestroyResponsePayload](t, c, &payloads.DestroyRequestPayload{UniqueIdentifier: cr.UniqueIdentifier})
	if s := getState(t, c, cr.UniqueIdentifier); s != kmip.StateDestroyed {
		t.Fatalf("after Destroy: %v", s)
	}
	if r := reason(t, c, &payloads.GetRequestPayload{UniqueIdentifier: cr.UniqueIdentifier}); r != kmip.ResultReasonKeyValueNotPresent {
		t.Fatalf("Get after Destroy: %v", ttlv.EnumStr(r))
	}
	must[*payloads.DestroyResponsePayload](t, c, &payloads.DestroyRequestPayload{UniqueIdentifier: reg.UniqueIdentifier})
	if s := getState(t, c, reg.UniqueIdentifier); s != kmip.StateDestroyedCompromised {
		t.Fatalf("destroyed compromised key: %v", s)
	}

	// Batches use the ID placeholder: Create then Activate without an id.
	res, err := c.Batch(context.Background(), aesCreate("batch"), &payloads.ActivateRequestPayload{}, &payloads.GetAttributesRequestPayload{})
	if err != nil || res[0].Err() != nil || res[1].Err() != nil || res[2].Err() != nil {
		t.Fatalf("batch: %v %v", err, res)
	}
	if s, _ := findAttr(res[2].ResponsePayload.(*payloads.GetAttributesResponsePayload).Attribute, kmip.AttributeNameState); s != kmip.StateActive {
		t.Fatalf("batch create+activate: state %v", s)
	}

	// Unknown ids and bad input.
	for _, tc := range []struct {
		p    kmip.OperationPayload
		want kmip.ResultReason
	}{
		{&payloads.GetRequestPayload{UniqueIdentifier: "00000000-0000-4000-8000-000000000000"}, kmip.ResultReasonItemNotFound},
		{&payloads.GetRequestPayload{UniqueIdentifier: regS.UniqueIdentifier + PublicSuffix}, kmip.ResultReasonItemNotFound},
		{&payloads.GetRequestPayload{UniqueIdentifier: regS.UniqueIdentifier, KeyFormatType: kmip.KeyFormatTypePKCS_1}, kmip.ResultReasonKeyFormatTypeNotSupported},
		{aesCreate("bad name!"), kmip.ResultReasonInvalidField},
		{aesCreate("db1/tde"), kmip.ResultReasonObjectAlreadyExists},
		{aesCreate("later", attr(kmip.AttributeNameActivationDate, time.Now().Add(24*time.Hour))), kmip.ResultReasonInvalidField},
		{aesCreate("contact", attr(kmip.AttributeNameContactInformation, "ops")), kmip.ResultReasonInvalidField},
		{&payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSecretData}, kmip.ResultReasonInvalidField},
		{&payloads.LocateRequestPayload{Attribute: []kmip.Attribute{attr(kmip.AttributeNameContactInformation, "ops")}}, kmip.ResultReasonInvalidField},
		{&payloads.ActivateRequestPayload{}, kmip.ResultReasonMissingData},
	} {
		if r := reason(t, c, tc.p); r != tc.want {
			t.Errorf("%T %+v: reason %s, want %s", tc.p, tc.p, ttlv.EnumStr(r), ttlv.EnumStr(tc.want))
		}
	}

	// Every item is audited with transport kmip and the endpoint as actor.
	recs, err := f.svc.AuditRecords(f.root, 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var kmipGets, denied int
	for _, r := range recs {
		if r.Transport == "kmip" && r.Operation == "kmipGet" && r.Actor == "endpoint:ep-manage" {
			kmipGets++
		}
		if r.Transport == "kmip" && r.Result != "ok" {
			denied++
		}
	}
	if kmipGets < 5 || denied < 5 {
		t.Fatalf("audit: %d kmipGet records, %d failures", kmipGets, denied)
	}
}

// TestPermissions: the endpoint's wallet grants decide, and a refusal
// changes nothing.
func TestPermissions(t *testing.T) {
	f := newFixture(t, Options{})
	rm := f.client("ep-rm")
	cr := must[*payloads.CreateResponsePayload](t, rm, aesCreate("k"))
	if r := reason(t, rm, &payloads.RevokeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier,
		RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeUnspecified}}); r != kmip.ResultReasonPermissionDenied {
		t.Fatalf("read_modify Revoke: %s", ttlv.EnumStr(r))
	}
	must[*payloads.ActivateResponsePayload](t, rm, &payloads.ActivateRequestPayload{UniqueIdentifier: cr.UniqueIdentifier})

	rd := f.client("ep-read")
	must[*payloads.GetResponsePayload](t, rd, &payloads.GetRequestPayload{UniqueIdentifier: cr.UniqueIdentifier})
	for _, p := range []kmip.OperationPayload{
		aesCreate("k2"),
		&payloads.RekeyRequestPayload{UniqueIdentifier: cr.UniqueIdentifier},
		&payloads.AddAttributeRequestPayload{UniqueIdentifier: cr.UniqueIdentifier, Attribute: attr("x-a", "b")},
		&payloads.DestroyRequestPayload{UniqueIdentifier: cr.UniqueIdentifier},
	} {
		if r := reason(t, rd, p); r != kmip.ResultReasonPermissionDenied {
			t.Errorf("read-only endpoint %T: %s", p, ttlv.EnumStr(r))
		}
	}
	none := f.client("ep-none")
	if r := reason(t, none, &payloads.GetRequestPayload{UniqueIdentifier: cr.UniqueIdentifier}); r != kmip.ResultReasonItemNotFound {
		t.Fatalf("endpoint without grant Get: %s, want Item Not Found (as for an id that names nothing)", ttlv.EnumStr(r))
	}
	if ids := must[*payloads.LocateResponsePayload](t, none, &payloads.LocateRequestPayload{}).UniqueIdentifier; len(ids) != 0 {
		t.Fatalf("endpoint without grant locates %v", ids)
	}
	if r := reason(t, none, aesCreate("k3")); r != kmip.ResultReasonPermissionDenied {
		t.Fatalf("endpoint without grant Create: %s", ttlv.EnumStr(r))
	}
	if r := reason(t, none, aesCreate("k3", attr(kmip.AttributeNameObjectGroup, "w"))); r != kmip.ResultReasonPermissionDenied {
		t.Fatalf("endpoint without grant Create in w: %s", ttlv.EnumStr(r))
	}
	// Two writable wallets: the Object Group attribute must choose.
	two := f.client("ep-two")
	if r := reason(t, two, aesCreate("k4")); r != kmip.ResultReasonInvalidField {
		t.Fatalf("ambiguous wallet: %s", ttlv.EnumStr(r))
	}
	c4 := must[*payloads.CreateResponsePayload](t, two, aesCreate("k4", attr(kmip.AttributeNameObjectGroup, "w2")))
	if o, _ := f.svc.Objects.DescribeObject(f.root, service.Ref{ID: c4.UniqueIdentifier}); o.Wallet != "w2" {
		t.Fatalf("Object Group w2 created in %q", o.Wallet)
	}
	// Nothing was created or changed by the refusals.
	page, _ := f.svc.Objects.ListObjects(f.root, service.Query{})
	if len(page.Items) != 2 {
		t.Fatalf("objects after refusals: %d, want 2", len(page.Items))
	}
	if o, _ := f.svc.Objects.DescribeObject(f.root, service.Ref{ID: cr.UniqueIdentifier}); o.State != "active" || o.Latest != 1 || len(o.Attributes) != 0 {
		t.Fatalf("refusals changed the object: %+v", o)
	}
}

// TestForeignObjectLooksMissing: an endpoint without a grant on an object's
// wallet gets, for every operation on it by id, the answer it gets for an id
// that names nothing (reason and message, the id aside).
func TestForeignObjectLooksMissing(t *testing.T) {
	f := newFixture(t, Options{})
	cr := must[*payloads.CreateResponsePayload](t, f.client("ep-rm"), aesCreate("k"))
	id := cr.UniqueIdentifier
	missing := id[:len(id)-1] + "0"
	if missing == id {
		missing = id[:len(id)-1] + "1"
	}
	none := f.client("ep-none")
	ops := map[string]func(id string) kmip.OperationPayload{
		"Get": func(id string) kmip.OperationPayload { return &payloads.GetRequestPayload{UniqueIdentifier: id} },
		"GetAttributes": func(id string) kmip.OperationPayload {
			return &payloads.GetAttributesRequestPayload{UniqueIdentifier: id}
		},
		"Activate": func(id string) kmip.OperationPayload { return &payloads.ActivateRequestPayload{UniqueIdentifier: id} },
		"Rekey":    func(id string) kmip.OperationPayload { return &payloads.RekeyRequestPayload{UniqueIdentifier: id} },
		"Destroy":  func(id string) kmip.OperationPayload { return &payloads.DestroyRequestPayload{UniqueIdentifier: id} },
		"AddAttribute": func(id string) kmip.OperationPayload {
			return &payloads.AddAttributeRequestPayload{UniqueIdentifier: id, Attribute: attr("x-a", "b")}
		},
		"Revoke": func(id string) kmip.OperationPayload {
			return &payloads.RevokeRequestPayload{UniqueIdentifier: id,
				RevocationReason: kmip.RevocationReason{RevocationReasonCode: kmip.RevocationReasonCodeUnspecified}}
		},
	}
	for name, op := range ops {
		got, err := none.Batch(context.Background(), op(id))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, err := none.Batch(context.Background(), op(missing))
		if err != nil {
			t.Fatalf("%s (missing id): %v", name, err)
		}
		g, w := got[0], want[0]
		if w.ResultReason != kmip.ResultReasonItemNotFound {
			t.Errorf("%s on a missing id: %s, want Item Not Found", name, ttlv.EnumStr(w.ResultReason))
		}
		gm, wm := strings.ReplaceAll(g.ResultMessage, id, "ID"), strings.ReplaceAll(w.ResultMessage, missing, "ID")
		if g.ResultStatus != w.ResultStatus || g.ResultReason != w.ResultReason || gm != wm {
			t.Errorf("%s on another wallet's object: %s %q; on a missing id: %s %q", name,
				ttlv.EnumStr(g.ResultReason), gm, ttlv.EnumStr(w.ResultReason), wm)
		}
	}
	if o, _ := f.svc.Objects.DescribeObject(f.root, service.Ref{ID: id}); o.State != "pre-active" || len(o.Attributes) != 0 || o.Latest != 1 {
		t.Fatalf("refusals changed the object: %+v", o)
	}
}

// TestRevokedEndpoint: revocation refuses the certificate from the next
// request on, even on an open connection.
func TestRevokedEndpoint(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client("ep-read")
	must[*payloads.LocateResponsePayload](t, c, &payloads.LocateRequestPayload{})
	if _, err := f.svc.Access.RevokeEndpoint(f.root, "ep-read"); err != nil {
		t.Fatal(err)
	}
	res, err := c.Batch(context.Background(), &payloads.LocateRequestPayload{})
	if err != nil || res[0].ResultStatus == kmip.ResultStatusSuccess || res[0].ResultReason != kmip.ResultReasonAuthenticationNotSuccessful {
		t.Fatalf("revoked endpoint: %v %+v", err, res)
	}
	// A new connection is refused too.
	c2, err := kmipclient.Dial(f.addr, kmipclient.WithRootCAPem(f.caPEM), kmipclient.WithClientCertPEM(f.pems["ep-read"][0], f.pems["ep-read"][1]))
	if err == nil {
		c2.Close()
		t.Fatal("revoked endpoint negotiated a new connection")
	}
}

// TestNoClientCertificate: the handshake needs an enrolled client certificate.
func TestNoClientCertificate(t *testing.T) {
	f := newFixture(t, Options{})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.caPEM)
	c, err := tls.Dial("tcp", f.addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err == nil {
		// TLS 1.3: the refusal arrives with the first read.
		c.Write(ttlv.MarshalTTLV(kmip.NewRequestMessage(kmip.V1_4, &payloads.QueryRequestPayload{})))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client without certificate: %v", err)
	}
	// (Not also through kmipclient.Dial: kmip-go v0.8.1's client races
	// between its read loop closing a channel and a send on it when the
	// server refuses the handshake, which the race detector reports.)
}

// TestMalformedTTLV: garbage gets an Invalid Message response and the
// connection is closed; the server keeps serving.
func TestMalformedTTLV(t *testing.T) {
	f := newFixture(t, Options{})
	valid := ttlv.MarshalTTLV(kmip.NewRequestMessage(kmip.V1_4, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}}))
	truncated := slices.Clone(valid)
	binary.BigEndian.PutUint32(truncated[4:], uint32(len(valid)-8-16)) // inner lengths now overrun
	wrongTag := slices.Clone(valid)
	wrongTag[2] = 0x7c // Response Message
	for name, msg := range map[string][]byte{
		"not a structure":  {0x42, 0x00, 0x78, 0x02, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0},
		"bad inner length": truncated[:len(valid)-16],
		"response tag":     wrongTag,
		"random":           append([]byte{0x42, 0x00, 0x78, 0x01, 0, 0, 0, 16}, bytes.Repeat([]byte{0xff}, 16)...),
	} {
		t.Run(name, func(t *testing.T) {
			c := f.rawConn("ep-read")
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			resp, err := readResponse(c)
			if err != nil {
				t.Fatalf("no error response: %v", err)
			}
			if bi := resp.BatchItem[0]; bi.ResultStatus != kmip.ResultStatusOperationFailed || bi.ResultReason != kmip.ResultReasonInvalidMessage {
				t.Fatalf("response %+v", bi)
			}
			expectClosed(t, c, 5*time.Second)
		})
	}
	// Still serving.
	c := f.rawConn("ep-read")
	c.Write(valid)
	resp, err := readResponse(c)
	if err != nil || resp.BatchItem[0].ResultStatus != kmip.ResultStatusSuccess {
		t.Fatalf("valid request after garbage: %v %+v", err, resp)
	}
}

// TestOversizedMessage: a header announcing more than the limit gets an
// error response and a closed connection, without the body being awaited.
func TestOversizedMessage(t *testing.T) {
	f := newFixture(t, Options{MaxMessageSize: 4096})
	c := f.rawConn("ep-read")
	c.Write([]byte{0x42, 0x00, 0x78, 0x01, 0x01, 0, 0, 0}) // 16 MiB announced
	resp, err := readResponse(c)
	if err != nil || resp.BatchItem[0].ResultReason != kmip.ResultReasonInvalidMessage || !strings.Contains(resp.BatchItem[0].ResultMessage, "larger") {
		t.Fatalf("oversized: %v %+v", err, resp)
	}
	expectClosed(t, c, 5*time.Second)
	// A Register above the limit through the client fails the same way.
	kc := f.client("ep-rm")
	big := bytes.Repeat([]byte{1}, 8192)
	_, err = kc.Request(context.Background(), &payloads.RegisterRequestPayload{ObjectType: kmip.ObjectTypeSecretData,
		Object: &kmip.SecretData{SecretDataType: kmip.SecretDataTypePassword, KeyBlock: kmip.KeyBlock{KeyFormatType: kmip.KeyFormatTypeOpaque,
			KeyValue: &kmip.KeyValue{Plain: &kmip.PlainKeyValue{KeyMaterial: kmip.KeyMaterial{Bytes: &big}}}}}})
	if err == nil {
		t.Fatal("oversized Register succeeded")
	}
	if page, _ := f.svc.Objects.ListObjects(f.root, service.Query{}); len(page.Items) != 0 {
		t.Fatalf("oversized Register stored %d objects", len(page.Items))
	}
}

// TestSlowAndIdleClients: deadlines close a connection that stalls in a
// message or idles, so no client can hold a goroutine forever.
func TestSlowAndIdleClients(t *testing.T) {
	f := newFixture(t, Options{IdleTimeout: 300 * time.Millisecond, MessageTimeout: 300 * time.Millisecond})
	idle := f.rawConn("ep-read")
	start := time.Now()
	expectClosed(t, idle, 5*time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle connection closed after %s", d)
	}
	slow := f.rawConn("ep-read")
	slow.Write([]byte{0x42, 0x00, 0x78, 0x01, 0, 0, 1, 0}) // header, then nothing
	expectClosed(t, slow, 5*time.Second)
	// A silent TCP client that never does TLS is closed too.
	raw, err := (&net.Dialer{}).Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	expectClosed(t, raw, 5*time.Second)
}

// TestDeadlinesOnABusyConnection: a connection that keeps sending
// messages for several idle timeouts stays open (the idle deadline moves
// with it, though it is not set again for every message), is closed once
// it idles, and a message stalled after many answered ones is cut off at
// the message timeout, not the idle timeout.
func TestDeadlinesOnABusyConnection(t *testing.T) {
	query := ttlv.MarshalTTLV(kmip.NewRequestMessage(kmip.V1_4, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}}))
	roundTrip := func(t *testing.T, c net.Conn) {
		t.Helper()
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(query); err != nil {
			t.Fatalf("write: %v", err)
		}
		if _, err := readResponse(c); err != nil {
			t.Fatalf("read: %v", err)
		}
	}

	const idle = 400 * time.Millisecond
	f := newFixture(t, Options{IdleTimeout: idle, MessageTimeout: time.Hour})
	c := f.rawConn("ep-read")
	// last is taken before the last message is sent: the server arms the
	// idle deadline after it received that message (and answered it), at
	// most deadlineSlack early, so the close comes at least idle minus the
	// slack after last, however late this goroutine sees the answer.
	var last time.Time
	for start := time.Now(); time.Since(start) < 4*idle; {
		last = time.Now()
		roundTrip(t, c)
		time.Sleep(idle / 40)
	}
	expectClosed(t, c, 5*time.Second)
	if d := time.Since(last); d < idle-deadlineSlack(idle) {
		t.Fatalf("connection closed %s after its last message was sent (idle timeout %s)", d, idle)
	}

	g := newFixture(t, Options{IdleTimeout: time.Hour, MessageTimeout: 300 * time.Millisecond})
	c = g.rawConn("ep-read")
	for range 50 {
		roundTrip(t, c)
	}
	c.Write(query[:12]) // the header and part of the first field, then nothing
	expectClosed(t, c, 5*time.Second)
}

// TestMessageStartedLateInTheIdleTime: a message whose first bytes come
// shortly before the idle timeout has the whole message timeout for the
// rest (the idle deadline does not cut it off), and the idle timeout
// after it is the idle timeout again.
func TestMessageStartedLateInTheIdleTime(t *testing.T) {
	query := ttlv.MarshalTTLV(kmip.NewRequestMessage(kmip.V1_4, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}}))
	const idle = 2 * time.Second
	f := newFixture(t, Options{IdleTimeout: idle, MessageTimeout: time.Minute})
	c := f.rawConn("ep-read")
	time.Sleep(idle * 6 / 10) // idle, but less than the idle timeout (0.8 s to spare for a busy machine)
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(query[:12]); err != nil { // the header and part of the first field
		t.Fatalf("write: %v", err)
	}
	time.Sleep(idle * 8 / 10) // past the idle timeout, well within the message timeout
	if _, err := c.Write(query[12:]); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, err := readResponse(c); err != nil {
		t.Fatalf("the message's rest came within the message timeout, and the answer: %v", err)
	}
	// Idle again: closed at the idle timeout, not at the message
	// deadline armed for the rest of the message.
	expectClosed(t, c, 5*idle)
}

// TestShutdown: Shutdown closes idle connections at once, stops Serve and
// refuses new connections.
func TestShutdown(t *testing.T) {
	f := newFixture(t, Options{})
	c := f.client("ep-read")
	must[*payloads.LocateResponsePayload](t, c, &payloads.LocateRequestPayload{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Shutdown took %s with an idle connection", d)
	}
	select {
	case err := <-f.done:
		if err != ErrServerClosed {
			t.Fatalf("Serve returned %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp", f.addr); err == nil {
		t.Fatal("listener still accepts")
	}
}

// TestShutdownUnderLoad: Shutdown while connections go busy and idle many
// times a second. A lock-order inversion between the server's lock and a
// connection's once hung CI here (Shutdown held the server's lock waiting
// for a connection's; the connection held its own waiting for the server's).
func TestShutdownUnderLoad(t *testing.T) {
	query := ttlv.MarshalTTLV(kmip.NewRequestMessage(kmip.V1_4, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}}))
	for round := 0; round < 8; round++ {
		f := newFixture(t, Options{})
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			// Raw connections: the library client has its own race when the
			// server closes under it.
			c := f.rawConn("ep-read")
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := c.Write(query); err != nil {
						return // the server went away: expected
					}
					if _, err := readResponse(c); err != nil {
						return
					}
				}
			}()
		}
		// The moment of the shutdown under load is what varies per round.
		time.Sleep(time.Duration(20+round*15) * time.Millisecond)
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done <- f.srv.Shutdown(ctx)
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			close(stop)
			t.Fatalf("round %d: Shutdown under load did not return (deadlock)", round)
		}
		close(stop)
		wg.Wait()
	}
}

// TestShutdownBeforeHandshakeStarts: a connection accepted just before a
// shutdown, whose goroutine only starts after the shutdown woke every
// connection, and whose client never speaks TLS, must not hold the stop for
// the whole handshake timeout. (On a loaded machine the goroutine starts
// late; a smart stop once waited out the handshake deadline this way.)
func TestShutdownBeforeHandshakeStarts(t *testing.T) {
	f := newFixture(t, Options{MessageTimeout: time.Hour, HandshakeTimeout: time.Hour})
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	hook := func() {
		select {
		case started <- struct{}{}:
		default:
		}
		<-release
	}
	testHookBeforeServe.Store(&hook)
	t.Cleanup(func() { testHookBeforeServe.Store(nil) })
	raw, err := net.Dial("tcp", f.addr) // never speaks TLS
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	<-started // accepted and tracked; its goroutine waits in the hook
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done <- f.srv.Shutdown(ctx)
	}()
	// Shutdown marks closing and wakes the connections under the server's
	// lock: once closing is set and the lock is free again, the wake is done.
	testutil.WaitFor(t, time.Minute, "Shutdown to mark the server closing", func() error {
		if !f.srv.isClosing() {
			return testutil.ErrNotYet
		}
		return nil
	})
	f.srv.mu.Lock()
	//lint:ignore SA2001 an empty critical section on purpose: it waits for Shutdown's wake loop to release the lock
	f.srv.mu.Unlock()
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown waited for a connection that had not started its handshake: %v", err)
	}
}

// TestClusterErrors: the service's cluster refusals reach a KMIP client as
// Operation Failed with the service's reason (read-only restricted mode;
// a leader change), not as an internal error.
func TestClusterErrors(t *testing.T) {
	f := newFixture(t, Options{})
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: this node has no quorum (no leader known): reads are served, writes are refused until the cluster is whole again", service.ErrReadOnly), "read-only restricted mode"},
		{fmt.Errorf("%w: not applied; send it again", service.ErrNotLeaderNow), "the leader is changing: not applied"},
	} {
		var ke kmipserver.Error
		if !errors.As(f.srv.mapErr(tc.err), &ke) {
			t.Fatalf("%v: not a KMIP error", tc.err)
		}
		if ke.Reason != kmip.ResultReasonGeneralFailure || !strings.Contains(ke.Message, tc.want) {
			t.Fatalf("%v: reason %v message %q, want General Failure saying %q", tc.err, ke.Reason, ke.Message, tc.want)
		}
	}
}

// TestRelayHandlerRefusesNonNodes: the leader's relay route takes KMIP
// messages only from a member node forwarding a client's certificate; a
// client (no certificate, or an endpoint's own) is refused and nothing is
// executed.
func TestRelayHandlerRefusesNonNodes(t *testing.T) {
	f := newFixture(t, Options{})
	msg := ttlv.MarshalTTLV(&kmip.RequestMessage{Header: kmip.RequestHeader{ProtocolVersion: kmip.V1_4, BatchCount: 1},
		BatchItem: []kmip.RequestBatchItem{{Operation: kmip.OperationCreate, RequestPayload: aesCreate("relayed")}}})
	ep, err := x509.ParseCertificate(f.creds["ep-manage"].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for name, st := range map[string]*tls.ConnectionState{"no TLS": nil, "an endpoint's certificate": {PeerCertificates: []*x509.Certificate{ep}}} {
		req := httptest.NewRequest("POST", RelayPath, bytes.NewReader(msg))
		req.TLS = st
		req.Header.Set(forward.HeaderBy, "n1")
		req.Header.Set(forward.HeaderClientCert, base64.StdEncoding.EncodeToString(ep.Raw))
		rec := httptest.NewRecorder()
		f.srv.RelayHandler().ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Fatalf("%s: %d %s, want 403", name, rec.Code, rec.Body)
		}
	}
	if _, err := f.svc.Objects.DescribeObject(f.root, service.Ref{Wallet: "w", Name: "relayed"}); !errors.Is(err, service.ErrNotFound) {
		t.Fatalf("a refused relay created an object: %v", err)
	}
}

// TestRefusedMessagesAreAudited: a message refused as a whole (too large,
// an unsupported protocol version, a batch count that does not match, no
// batch item) gets an audit record with its reason, as served ones do.
func TestRefusedMessagesAreAudited(t *testing.T) {
	f := newFixture(t, Options{MaxMessageSize: 4096})
	query := func(v kmip.ProtocolVersion) kmip.RequestMessage {
		return kmip.NewRequestMessage(v, &payloads.QueryRequestPayload{QueryFunction: []kmip.QueryFunction{kmip.QueryFunctionOperations}})
	}
	badCount := query(kmip.V1_4)
	badCount.Header.BatchCount = 3
	noItem := query(kmip.V1_4)
	noItem.BatchItem, noItem.Header.BatchCount = nil, 0
	cases := []struct {
		name    string
		msg     []byte
		op      string
		status  int
		result  string
		mention string
	}{
		{"too large", []byte{0x42, 0x00, 0x78, 0x01, 0x01, 0, 0, 0}, "kmipMessageTooLarge", 413, "message_too_large", "16777224 bytes"},
		{"protocol 3.0", ttlv.MarshalTTLV(query(kmip.ProtocolVersion{ProtocolVersionMajor: 3})), "kmipMessage", 400, "invalid_message", "protocol version 3.0"},
		{"batch count", ttlv.MarshalTTLV(badCount), "kmipMessage", 400, "invalid_message", "Batch Count Mismatch"},
		{"no batch item", ttlv.MarshalTTLV(noItem), "kmipMalformed", 400, "invalid_message", "no batch item"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := f.svc.AuditCount()
			c := f.rawConn("ep-read")
			if _, err := c.Write(tc.msg); err != nil {
				t.Fatal(err)
			}
			resp, err := readResponse(c)
			if err != nil || resp.BatchItem[0].ResultStatus != kmip.ResultStatusOperationFailed {
				t.Fatalf("response: %v %+v", err, resp)
			}
			recs, err := f.svc.AuditRecords(f.root, before+1, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 1 {
				t.Fatalf("%d audit records for one refused message: %+v", len(recs), recs)
			}
			r := recs[0]
			if r.Operation != tc.op || r.Status != tc.status || r.Result != tc.result || r.Transport != "kmip" ||
				!strings.Contains(r.Error, tc.mention) || r.Source == "" {
				t.Fatalf("audit record %+v, want %s %d %s mentioning %q", r, tc.op, tc.status, tc.result, tc.mention)
			}
			if tc.op != "kmipMalformed" && r.Actor != "endpoint:ep-read" {
				t.Fatalf("audit record actor %q, want the certificate's endpoint", r.Actor)
			}
		})
	}
}
