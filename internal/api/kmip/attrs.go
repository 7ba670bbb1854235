package kmip

import (
	"crypto/rand"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/coffer-kms/coffer/internal/service"
)

// PublicSuffix turns a key pair's id into the Unique Identifier of its
// public half: the pair is one Coffer object, KMIP sees two.
const PublicSuffix = ".public"

// Coffer attributes that hold KMIP metadata. They are not shown as x-
// custom attributes and clients cannot set them as such.
const (
	reservedPrefix       = "kmip."
	attrUsageMask        = "kmip.usage_mask"
	attrPublicUsageMask  = "kmip.public_usage_mask"
	attrSecretDataType   = "kmip.secret_data_type" // #nosec G101 -- the name of a stored attribute, not a credential
	customPrefix         = "x-"
	activationDateWindow = time.Minute
)

// template is what Coffer takes from a KMIP template attribute list.
type template struct {
	name   string
	alg    kmip.CryptographicAlgorithm
	length int32
	usage  *kmip.CryptographicUsageMask
	active bool
	group  string
	custom map[string]string
}

// parseTemplate reads attributes for Create, CreateKeyPair and Register.
// Attributes Coffer cannot honour are refused, never silently dropped.
func parseTemplate(t *template, names []kmip.Name, attrs []kmip.Attribute) error {
	for _, n := range names {
		if err := t.setName(n); err != nil {
			return err
		}
	}
	for _, a := range attrs {
		switch a.AttributeName {
		case kmip.AttributeNameName:
			n, ok := a.AttributeValue.(kmip.Name)
			if !ok {
				return invalidf("attribute Name: malformed value")
			}
			if err := t.setName(n); err != nil {
				return err
			}
		case kmip.AttributeNameCryptographicAlgorithm:
			v, ok := a.AttributeValue.(kmip.CryptographicAlgorithm)
			if !ok {
				return invalidf("attribute Cryptographic Algorithm: malformed value")
			}
			t.alg = v
		case kmip.AttributeNameCryptographicLength:
			v, ok := a.AttributeValue.(int32)
			if !ok || v <= 0 {
				return invalidf("attribute Cryptographic Length: must be a positive integer")
			}
			t.length = v
		case kmip.AttributeNameCryptographicUsageMask:
			v, ok := a.AttributeValue.(kmip.CryptographicUsageMask)
			if !ok {
				return invalidf("attribute Cryptographic Usage Mask: malformed value")
			}
			t.usage = &v
		case kmip.AttributeNameActivationDate:
			v, ok := a.AttributeValue.(time.Time)
			if !ok {
				return invalidf("attribute Activation Date: malformed value")
			}
			if v.After(time.Now().Add(activationDateWindow)) {
				return invalidf("attribute Activation Date %s is in the future: Coffer does not schedule activation; create the object pre-active and Activate it later", v.UTC().Format(time.RFC3339))
			}
			t.active = true
		case kmip.AttributeNameObjectGroup:
			v, ok := a.AttributeValue.(string)
			if !ok || v == "" {
				return invalidf("attribute Object Group: must be a wallet name")
			}
			t.group = v
		//lint:ignore SA1019 KMIP 1.0 to 1.2 clients, which Coffer serves, still send it
		case kmip.AttributeNameOperationPolicyName, kmip.AttributeNameObjectType:
			// Operation policies are Coffer's wallet grants; the object type
			// comes from the operation. Accepted and not stored.
		default:
			if !strings.HasPrefix(string(a.AttributeName), customPrefix) {
				return invalidf("attribute %q is not supported by Coffer on this operation (supported: Name, Cryptographic Algorithm, Cryptographic Length, Cryptographic Usage Mask, Activation Date, Object Group, x- custom attributes)", a.AttributeName)
			}
			k, v, err := customAttr(a)
			if err != nil {
				return err
			}
			if t.custom == nil {
				t.custom = map[string]string{}
			}
			if _, dup := t.custom[k]; dup {
				return invalidf("custom attribute %q given twice: Coffer keeps one value per custom attribute", a.AttributeName)
			}
			t.custom[k] = v
		}
	}
	return nil
}

func (t *template) setName(n kmip.Name) error {
	if n.NameValue == "" {
		return invalidf("attribute Name: empty name")
	}
	if t.name != "" && t.name != n.NameValue {
		return invalidf("attribute Name given twice (%q, %q): a Coffer object has one name", t.name, n.NameValue)
	}
	t.name = n.NameValue
	return nil
}

// objectName is the template's name, or a generated one: Coffer objects
// always have a name, KMIP objects need not.
func (t *template) objectName() string {
	if t.name != "" {
		return t.name
	}
	b := make([]byte, 8)
	rand.Read(b)
	return "kmip-" + hex.EncodeToString(b)
}

// attrs are the Coffer attributes a template stores.
func (t *template) attrs(usageKey string) map[string]string {
	out := map[string]string{}
	for k, v := range t.custom {
		out[k] = v
	}
	if t.usage != nil {
		out[usageKey] = strconv.FormatInt(int64(*t.usage), 10)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// customAttr maps a KMIP custom attribute "x-NAME" with a text value to
// the Coffer attribute NAME.
func customAttr(a kmip.Attribute) (string, string, error) {
	k, ok := strings.CutPrefix(string(a.AttributeName), customPrefix)
	if !ok || k == "" {
		return "", "", invalidf("custom attribute %q: Coffer accepts x- custom attributes only", a.AttributeName)
	}
	if strings.HasPrefix(k, reservedPrefix) {
		return "", "", invalidf("custom attribute %q: the x-%s prefix is reserved", a.AttributeName, reservedPrefix)
	}
	if a.AttributeIndex != nil && *a.AttributeIndex != 0 {
		return "", "", kerr(kmip.ResultReasonIndexOutofBounds, "custom attribute %q: Coffer keeps one value (index 0)", a.AttributeName)
	}
	var v any = a.AttributeValue
	if tv, ok := v.(ttlv.Value); ok {
		v = tv.Value
	}
	s, ok := v.(string)
	if !ok {
		return "", "", invalidf("custom attribute %q: Coffer stores text string values only", a.AttributeName)
	}
	return k, s, nil
}

// objectType is the KMIP object type of a Coffer object (or its public half).
func objectType(o service.Object, public bool) kmip.ObjectType {
	switch {
	case o.Type == service.TypeSymmetricKey:
		return kmip.ObjectTypeSymmetricKey
	case o.Type == service.TypeSecretData:
		return kmip.ObjectTypeSecretData
	case public:
		return kmip.ObjectTypePublicKey
	}
	return kmip.ObjectTypePrivateKey
}

func algorithm(o service.Object) (kmip.CryptographicAlgorithm, bool) {
	switch o.Algorithm {
	case "AES":
		return kmip.CryptographicAlgorithmAES, true
	case "RSA":
		return kmip.CryptographicAlgorithmRSA, true
	case "EC":
		return kmip.CryptographicAlgorithmEC, true
	}
	return 0, false
}

// kmipState maps a Coffer lifecycle state to KMIP's.
func kmipState(o service.Object) kmip.State {
	switch o.State {
	case "pre-active":
		return kmip.StatePreActive
	case "active":
		return kmip.StateActive
	case "deactivated":
		return kmip.StateDeactivated
	case "compromised":
		return kmip.StateCompromised
	}
	if o.Compromised != nil {
		return kmip.StateDestroyedCompromised
	}
	return kmip.StateDestroyed
}

// uid is the Unique Identifier of o (or of its public half).
func uid(o service.Object, public bool) string {
	if public {
		return o.ID + PublicSuffix
	}
	return o.ID
}

// attributes lists o's KMIP attributes, in a stable order.
func attributes(o service.Object, public bool) []kmip.Attribute {
	at := func(n kmip.AttributeName, v any) kmip.Attribute {
		return kmip.Attribute{AttributeName: n, AttributeValue: v}
	}
	out := []kmip.Attribute{
		at(kmip.AttributeNameUniqueIdentifier, uid(o, public)),
		at(kmip.AttributeNameName, kmip.Name{NameValue: o.Name, NameType: kmip.NameTypeUninterpretedTextString}),
		at(kmip.AttributeNameObjectType, objectType(o, public)),
	}
	if alg, ok := algorithm(o); ok {
		out = append(out, at(kmip.AttributeNameCryptographicAlgorithm, alg), at(kmip.AttributeNameCryptographicLength, int32(o.Length))) // #nosec G115 -- key lengths in bits are validated at creation (at most 4096)
	}
	key := attrUsageMask
	if public {
		key = attrPublicUsageMask
	}
	if v, ok := o.Attributes[key]; ok {
		if n, err := strconv.ParseInt(v, 10, 32); err == nil {
			out = append(out, at(kmip.AttributeNameCryptographicUsageMask, kmip.CryptographicUsageMask(n)))
		}
	}
	out = append(out, at(kmip.AttributeNameState, kmipState(o)),
		at(kmip.AttributeNameInitialDate, o.Created.UTC().Truncate(time.Second)),
		at(kmip.AttributeNameLastChangeDate, o.Updated.UTC().Truncate(time.Second)))
	for _, d := range []struct {
		n kmip.AttributeName
		t *time.Time
	}{
		{kmip.AttributeNameActivationDate, o.Activated},
		{kmip.AttributeNameDeactivationDate, o.Deactivated},
		{kmip.AttributeNameCompromiseDate, o.Compromised},
		{kmip.AttributeNameDestroyDate, o.Destroyed},
	} {
		if d.t != nil {
			out = append(out, at(d.n, d.t.UTC().Truncate(time.Second)))
		}
	}
	out = append(out, at(kmip.AttributeNameObjectGroup, o.Wallet))
	if o.Type == service.TypeKeyPair {
		if public {
			out = append(out, at(kmip.AttributeNameLink, kmip.Link{LinkType: kmip.LinkTypePrivateKeyLink, LinkedObjectIdentifier: o.ID}))
		} else {
			out = append(out, at(kmip.AttributeNameLink, kmip.Link{LinkType: kmip.LinkTypePublicKeyLink, LinkedObjectIdentifier: o.ID + PublicSuffix}))
		}
	}
	keys := make([]string, 0, len(o.Attributes))
	for k := range o.Attributes {
		if !strings.HasPrefix(k, reservedPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, at(kmip.AttributeName(customPrefix+k), o.Attributes[k]))
	}
	return out
}

// cofferState maps a KMIP state (a Locate filter) to Coffer's.
func cofferState(s kmip.State) (string, bool) {
	switch s {
	case kmip.StatePreActive:
		return "pre-active", true
	case kmip.StateActive:
		return "active", true
	case kmip.StateDeactivated:
		return "deactivated", true
	case kmip.StateCompromised:
		return "compromised", true
	case kmip.StateDestroyed, kmip.StateDestroyedCompromised:
		return "destroyed", true
	}
	return "", false
}
