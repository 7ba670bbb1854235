#!/usr/bin/python3
"""Drive Coffer's Vault API with hvac (Debian's python3-hvac 0.11.2).

Usage: hvac_ops.py URL CA_FILE ROOT_TOKEN CLIENT_CERT CLIENT_KEY [ROLE_ID SECRET_ID]

Mounts KV v2 at "app" and Transit at "transit" (wallet "default") with the
root token, logs in as the enrolled endpoint with its certificate
(auth.cert.login), runs KV v2 and Transit operations, and prints one JSON
object with what each returned. Any unexpected error ends it non-zero.
"""
import base64
import json
import sys

import hvac
import hvac.exceptions

url, ca, root_token, cert, key = sys.argv[1:6]
out = {}


def b64(s):
    return base64.b64encode(s.encode()).decode()


admin = hvac.Client(url=url, token=root_token, verify=ca)
admin.sys.enable_secrets_engine("kv", path="app", options={"version": "2", "wallet": "default"})
admin.sys.enable_secrets_engine("transit", path="transit", options={"wallet": "default"})
out["mounts"] = sorted(admin.sys.list_mounted_secrets_engines()["data"].keys())

# auth.cert.login: the client certificate on the TLS connection.
c = hvac.Client(url=url, verify=ca, cert=(cert, key))
login = c.auth.cert.login()  # the certificate and CA configured on the client
auth = login["auth"]
out["cert_login"] = {
    "has_token": auth["client_token"].startswith("cof_"),
    "accessor": bool(auth["accessor"]),
    "policies": auth["policies"],
    "lease_duration_ok": 0 < auth["lease_duration"] <= 3600,
    "renewable": auth["renewable"],
}
# The token alone from here on.
c = hvac.Client(url=url, verify=ca, token=auth["client_token"])
out["authenticated"] = c.is_authenticated()
out["lookup_self_policies"] = c.auth.token.lookup_self()["data"]["policies"]

kv = c.secrets.kv.v2
r = kv.create_or_update_secret("db/creds", {"user": "alice", "pass": "p1"}, mount_point="app")
out["kv_create_version"] = r["data"]["version"]
kv.create_or_update_secret("db/creds", {"user": "alice", "pass": "p2"}, cas=1, mount_point="app")
try:
    kv.create_or_update_secret("db/creds", {"user": "mallory"}, cas=1, mount_point="app")
    out["kv_cas_conflict"] = "accepted"
except hvac.exceptions.InvalidRequest as e:
    out["kv_cas_conflict"] = "check-and-set" in str(e)
out["kv_read_v1"] = kv.read_secret_version("db/creds", version=1, mount_point="app")["data"]["data"]
out["kv_list"] = kv.list_secrets("db", mount_point="app")["data"]["keys"]
# hvac 0.11.2's patch reads, merges and writes; the JSON merge patch
# (PATCH with application/merge-patch+json) goes through the adapter.
kv.patch("db/creds", {"note": "rw"}, mount_point="app")
resp = c.adapter.request("PATCH", "/v1/app/data/db/creds", json={"data": {"pass": "p3", "note": None}},
                         headers={"Content-Type": "application/merge-patch+json"})
out["kv_merge_patch_version"] = resp.json()["data"]["version"] if hasattr(resp, "json") else resp["data"]["version"]
out["kv_after_patch"] = kv.read_secret_version("db/creds", mount_point="app")["data"]["data"]
kv.update_metadata("db/creds", max_versions=0, cas_required=False, delete_version_after="0s", mount_point="app")
# custom_metadata came after 0.11.2: the same endpoint through the adapter.
c.adapter.post("/v1/app/metadata/db/creds", json={"custom_metadata": {"team": "db"}})
md = kv.read_secret_metadata("db/creds", mount_point="app")["data"]
out["kv_metadata"] = {"current_version": md["current_version"], "custom_metadata": md["custom_metadata"],
                      "versions": sorted(md["versions"].keys())}
kv.delete_latest_version_of_secret("db/creds", mount_point="app")
try:
    kv.read_secret_version("db/creds", mount_point="app")
    out["kv_read_deleted"] = "found"
except hvac.exceptions.InvalidPath:
    out["kv_read_deleted"] = "not found"
kv.undelete_secret_versions("db/creds", versions=[4], mount_point="app")
out["kv_after_undelete"] = kv.read_secret_version("db/creds", mount_point="app")["data"]["data"]["pass"]
kv.delete_secret_versions("db/creds", versions=[1], mount_point="app")
kv.destroy_secret_versions("db/creds", versions=[1], mount_point="app")
out["kv_v1_destroyed"] = kv.read_secret_metadata("db/creds", mount_point="app")["data"]["versions"]["1"]["destroyed"]

tr = c.secrets.transit
tr.create_key("orders", mount_point="transit")
ct = tr.encrypt_data("orders", b64("order 1"), mount_point="transit")["data"]["ciphertext"]
out["transit_encrypt_prefix"] = ct[:9]
pt = tr.decrypt_data("orders", ct, mount_point="transit")["data"]["plaintext"]
out["transit_decrypt"] = base64.b64decode(pt).decode()
tr.rotate_key("orders", mount_point="transit")
rw = tr.rewrap_data("orders", ct, mount_point="transit")["data"]["ciphertext"]
out["transit_rewrap_prefix"] = rw[:9]
out["transit_decrypt_rewrapped"] = base64.b64decode(tr.decrypt_data("orders", rw, mount_point="transit")["data"]["plaintext"]).decode()
dk = tr.generate_data_key("orders", key_type="plaintext", bits=256, mount_point="transit")["data"]
out["transit_datakey_len"] = len(base64.b64decode(dk["plaintext"]))
back = tr.decrypt_data("orders", dk["ciphertext"], mount_point="transit")["data"]["plaintext"]
out["transit_datakey_roundtrip"] = back == dk["plaintext"]
mac = tr.generate_hmac("orders", b64("msg"), algorithm="sha2-256", mount_point="transit")["data"]["hmac"]
out["transit_hmac_prefix"] = mac[:9]
out["transit_verify_hmac"] = tr.verify_signed_data("orders", b64("msg"), hmac=mac, hash_algorithm="sha2-256", mount_point="transit")["data"]["valid"]
out["transit_verify_hmac_other"] = tr.verify_signed_data("orders", b64("other"), hmac=mac, hash_algorithm="sha2-256", mount_point="transit")["data"]["valid"]
try:
    tr.sign_data("orders", b64("msg"), mount_point="transit")
    out["transit_sign_aes"] = "signed"
except hvac.exceptions.InvalidRequest as e:
    out["transit_sign_aes"] = "refused" if "not a signing key" in str(e) else str(e)
tr.create_key("signer", key_type="ecdsa-p256", mount_point="transit")
sig = tr.sign_data("signer", b64("msg"), hash_algorithm="sha2-256", mount_point="transit")["data"]["signature"]
out["transit_sign_prefix"] = sig[:9]
out["transit_verify_signature"] = tr.verify_signed_data("signer", b64("msg"), signature=sig, hash_algorithm="sha2-256", mount_point="transit")["data"]["valid"]
out["transit_verify_signature_other"] = tr.verify_signed_data("signer", b64("other"), signature=sig, hash_algorithm="sha2-256", mount_point="transit")["data"]["valid"]
out["transit_random_len"] = len(base64.b64decode(tr.generate_random_bytes(n_bytes=24, mount_point="transit")["data"]["random_bytes"]))
out["transit_hash"] = tr.hash_data(b64("hello"), algorithm="sha2-256", output_format="hex", mount_point="transit")["data"]["sum"]

if len(sys.argv) > 7:
    role_id, secret_id = sys.argv[6:8]
    a = hvac.Client(url=url, verify=ca)
    r = a.auth.approle.login(role_id, secret_id)
    out["approle_login"] = {"has_token": r["auth"]["client_token"].startswith("cof_"), "policies": r["auth"]["policies"]}
    out["approle_read"] = a.secrets.kv.v2.read_secret_version("db/creds", mount_point="app")["data"]["data"]["pass"]
    try:
        hvac.Client(url=url, verify=ca).auth.approle.login(role_id, secret_id)
        out["approle_second_use"] = "accepted"
    except hvac.exceptions.VaultError as e:
        out["approle_second_use"] = "refused"

print(json.dumps(out, sort_keys=True))
