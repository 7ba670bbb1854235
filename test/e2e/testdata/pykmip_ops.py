#!/usr/bin/env python3
"""Drive Coffer's KMIP server with PyKMIP's ProxyKmipClient (Debian's
python3-pykmip 0.10) and print what each operation returned as JSON.

Usage: pykmip_ops.py HOST PORT CERT KEY CA [KMIP-VERSION [NAME-PREFIX]]
(version 1.0 to 1.4, default PyKMIP's 1.2; prefix of object names, default "pykmip")

The Go test (test/e2e/kmip_test.go) asserts the results; this script only
fails (non-zero) when PyKMIP itself raises unexpectedly. No key material is
printed: only lengths and comparisons.
"""
import json
import sys

from kmip import enums
from kmip.core import objects as cobjects
from kmip.core import primitives
from kmip.core.factories.attributes import AttributeFactory
from kmip.core.factories.payloads import response as response_factory
from kmip.core.messages import payloads
from kmip.pie import client as pie_client
from kmip.pie import exceptions as pie_exceptions
from kmip.pie import objects

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_der_public_key

host, port, cert, key, ca = sys.argv[1:6]
version = sys.argv[6] if len(sys.argv) > 6 else "1.2"
prefix = sys.argv[7] if len(sys.argv) > 7 else "pykmip"
out = {}


def attr(name, value):
    """A KMIP 1.x custom attribute with a text value."""
    return cobjects.Attribute(
        attribute_name=cobjects.Attribute.AttributeName(name),
        attribute_value=primitives.TextString(value, tag=enums.Tags.ATTRIBUTE_VALUE))


def failure(fn):
    """Run fn, expecting a KMIP failure; return the result reason's name."""
    try:
        fn()
    except pie_exceptions.KmipOperationFailure as e:
        return e.reason.name
    except Exception as e:  # PyKMIP's lower layer raises OperationFailure
        reason = getattr(e, "reason", None)
        return getattr(reason, "name", type(e).__name__ + ": " + str(e))
    return "SUCCESS"


def attrs_of(c, uid, names=None):
    _, attrs = c.get_attributes(uid, names or [])
    res = {}
    for a in attrs:
        v = a.attribute_value
        if a.attribute_name.value == "Name":
            v = v.name_value.value
        elif hasattr(v, "value"):
            v = v.value
        if hasattr(v, "name"):
            v = v.name
        res[a.attribute_name.value] = v if isinstance(v, (str, int)) else str(v)
    return res


# PyKMIP 0.10 has no AddAttribute payload. Its KMIP 1.x encoding is the same
# as ModifyAttribute's (Unique Identifier, Attribute), so the ModifyAttribute
# classes carry it, and responses to ADD_ATTRIBUTE decode with them.
_orig_create = response_factory.ResponsePayloadFactory.create


def _create(self, operation):
    if operation == enums.Operation.ADD_ATTRIBUTE:
        return payloads.ModifyAttributeResponsePayload()
    return _orig_create(self, operation)


response_factory.ResponsePayloadFactory.create = _create


def add_attribute(c, uid, name, value):
    req = payloads.ModifyAttributeRequestPayload(unique_identifier=uid, attribute=attr(name, value))
    resp = c.proxy.send_request_payload(enums.Operation.ADD_ATTRIBUTE, req)
    return resp.unique_identifier


c = pie_client.ProxyKmipClient(hostname=host, port=int(port), cert=cert, key=key, ca=ca,
                               kmip_version=enums.KMIPVersion["KMIP_" + version.replace(".", "_")])
c.open()
try:
    dv = c.proxy.discover_versions()
    out["discover_versions"] = ["%d.%d" % (v.major, v.minor) for v in dv.protocol_versions]
    q = c.proxy.query(query_functions=[enums.QueryFunction.QUERY_OPERATIONS, enums.QueryFunction.QUERY_OBJECTS,
                                       enums.QueryFunction.QUERY_SERVER_INFORMATION])
    out["query_operations"] = sorted(enums.Operation(getattr(o, "value", o)).name for o in q.operations)
    out["query_objects"] = sorted(enums.ObjectType(getattr(o, "value", o)).name for o in q.object_types)
    out["vendor"] = getattr(q.vendor_identification, "value", q.vendor_identification) or ""

    uid = c.create(enums.CryptographicAlgorithm.AES, 256, name=prefix + "/aes",
                   cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT])
    out["create_uid"] = uid
    k1 = c.get(uid)
    out["get_type"] = type(k1).__name__
    out["get_len"] = len(k1.value)
    out["attrs_created"] = attrs_of(c, uid)
    out["attribute_list"] = sorted(c.get_attribute_list(uid))
    c.activate(uid)
    out["state_after_activate"] = attrs_of(c, uid, ["State"]).get("State")

    out["add_attribute_uid"] = add_attribute(c, uid, "x-owner", "dba")
    out["attr_after_add"] = attrs_of(c, uid, ["x-owner"]).get("x-owner")
    c.modify_attribute(uid, attribute=attr("x-owner", "ops"))
    out["attr_after_modify"] = attrs_of(c, uid, ["x-owner"]).get("x-owner")
    _, deleted = c.delete_attribute(uid, attribute_name="x-owner")
    out["deleted_value"] = deleted.attribute_value.value if deleted is not None else None
    out["attr_after_delete"] = attrs_of(c, uid, ["x-owner"]).get("x-owner")

    af = AttributeFactory()
    out["locate_by_name"] = c.locate(attributes=[af.create_attribute(enums.AttributeType.NAME, prefix + "/aes")])
    out["locate_symmetric"] = c.locate(attributes=[af.create_attribute(enums.AttributeType.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY)])

    rk = c.rekey(uid=uid)
    k2 = c.get(rk)
    out["rekey_uid"] = rk
    out["rekey_changed_material"] = k2.value != k1.value and len(k2.value) == 32

    raw = bytes(range(16))
    uid2 = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, raw, name=prefix + "/imported"))
    out["register_key_roundtrip"] = c.get(uid2).value == raw
    secret = b"pykmip-secret-value"
    uid3 = c.register(objects.SecretData(secret, enums.SecretDataType.PASSWORD, name=prefix + "/password"))
    got = c.get(uid3)
    out["register_secret_type"] = type(got).__name__
    out["register_secret_roundtrip"] = got.value == secret

    pub, priv = c.create_key_pair(enums.CryptographicAlgorithm.RSA, 2048, private_name=prefix + "/rsa", public_name=prefix + "/rsa")
    out["keypair_uids"] = [pub, priv]
    gpub, gpriv = c.get(pub), c.get(priv)
    out["keypair_types"] = [type(gpub).__name__, type(gpriv).__name__]
    pk = load_der_private_key(gpriv.value, password=None)
    pb = load_der_public_key(gpub.value)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    out["keypair_match"] = pk.public_key().public_bytes(*fmt) == pb.public_bytes(*fmt)
    out["keypair_bits"] = pk.key_size

    out["destroy_active"] = failure(lambda: c.destroy(uid))
    out["state_after_refused_destroy"] = attrs_of(c, uid, ["State"]).get("State")
    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid, revocation_message="retired")
    out["state_after_revoke"] = attrs_of(c, uid, ["State"]).get("State")
    c.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, uid2)
    out["state_after_compromise"] = attrs_of(c, uid2, ["State"]).get("State")
    c.destroy(uid)
    out["state_after_destroy"] = attrs_of(c, uid, ["State"]).get("State")
    out["get_destroyed"] = failure(lambda: c.get(uid))
    out["get_unknown"] = failure(lambda: c.get("00000000-0000-4000-8000-000000000000"))
finally:
    c.close()

print(json.dumps(out, sort_keys=True))
