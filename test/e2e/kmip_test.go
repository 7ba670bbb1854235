package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// pykmipPython returns a python3 that can import PyKMIP (Debian's
// python3-pykmip lives in /usr/lib/python3/dist-packages, so the system
// interpreter is tried first). Without one the test fails under CI=true
// and is skipped otherwise.
func pykmipPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(py); err == nil && exec.Command(p, "-c", "import kmip.pie.client, cryptography").Run() == nil {
			return p
		}
	}
	const why = "PyKMIP is not installed: apt-get install -y python3-pykmip (Debian 12: version 0.10.0)"
	testutil.Unavailable(t, "%s", why)
	return ""
}

var kmipAddrRE = regexp.MustCompile(`"msg":"kmip listening","addr":"([^"]+)"`)

// kmipAddr is the KMIP listener's address from the server's log.
func (n *node) kmipAddr() string {
	n.t.Helper()
	var addr string
	if err := testutil.Poll(10*time.Second, func() error {
		if m := kmipAddrRE.FindStringSubmatch(n.logs.String()); m != nil {
			addr = m[1]
			return nil
		}
		return testutil.ErrNotYet
	}); err != nil {
		n.t.Fatalf("no \"kmip listening\" line in the server log\n%s", n.logs)
	}
	return addr
}

// enrollKMIP enrols endpoint name with permission on wallet through the
// CLI and returns its credentials directory (client.crt, client.key, ca.crt).
func (n *node) enrollKMIP(name, wallet, permission string) string {
	n.t.Helper()
	dir := filepath.Join(n.t.TempDir(), name)
	if out, err := coffer(n.t, nil, "endpoint", "enroll", name, "--out", dir, "--wallet", wallet, "--permission", permission, "--data-dir", n.dataDir); err != nil {
		n.t.Fatalf("enroll %s: %v\n%s", name, err, out)
	}
	return dir
}

// pykmipResult is what testdata/pykmip_ops.py prints.
type pykmipResult struct {
	DiscoverVersions         []string       `json:"discover_versions"`
	QueryOperations          []string       `json:"query_operations"`
	QueryObjects             []string       `json:"query_objects"`
	Vendor                   string         `json:"vendor"`
	CreateUID                string         `json:"create_uid"`
	GetType                  string         `json:"get_type"`
	GetLen                   int            `json:"get_len"`
	AttrsCreated             map[string]any `json:"attrs_created"`
	AttributeList            []string       `json:"attribute_list"`
	StateAfterActivate       string         `json:"state_after_activate"`
	AddAttributeUID          string         `json:"add_attribute_uid"`
	AttrAfterAdd             *string        `json:"attr_after_add"`
	AttrAfterModify          *string        `json:"attr_after_modify"`
	DeletedValue             *string        `json:"deleted_value"`
	AttrAfterDelete          *string        `json:"attr_after_delete"`
	LocateByName             []string       `json:"locate_by_name"`
	LocateSymmetric          []string       `json:"locate_symmetric"`
	RekeyUID                 string         `json:"rekey_uid"`
	RekeyChangedMaterial     bool           `json:"rekey_changed_material"`
	RegisterKeyRoundtrip     bool           `json:"register_key_roundtrip"`
	RegisterSecretType       string         `json:"register_secret_type"`
	RegisterSecretRoundtrip  bool           `json:"register_secret_roundtrip"`
	KeypairUIDs              []string       `json:"keypair_uids"`
	KeypairTypes             []string       `json:"keypair_types"`
	KeypairMatch             bool           `json:"keypair_match"`
	KeypairBits              int            `json:"keypair_bits"`
	DestroyActive            string         `json:"destroy_active"`
	StateAfterRefusedDestroy string         `json:"state_after_refused_destroy"`
	StateAfterRevoke         string         `json:"state_after_revoke"`
	StateAfterCompromise     string         `json:"state_after_compromise"`
	StateAfterDestroy        string         `json:"state_after_destroy"`
	GetDestroyed             string         `json:"get_destroyed"`
	GetUnknown               string         `json:"get_unknown"`
}

// TestPyKMIP runs PyKMIP's ProxyKmipClient against the real coffer binary
// with an enrolled endpoint's certificate, over KMIP 1.0, 1.2 and 1.4, and
// checks every operation's result, then that REST sees the same objects.
func TestPyKMIP(t *testing.T) {
	py := pykmipPython(t)
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "kmip:\n  listen: 127.0.0.1:0\n")
	addr := n.kmipAddr()
	host, port, _ := strings.Cut(addr, ":")
	creds := n.enrollKMIP("pykmip", "default", "manage")
	script, _ := filepath.Abs("testdata/pykmip_ops.py")
	api := n.https()
	for _, version := range []string{"1.2", "1.4", "1.0"} {
		t.Run("KMIP"+version, func(t *testing.T) {
			prefix := "py" + strings.ReplaceAll(version, ".", "")
			cmd := exec.Command(py, script, host, port, filepath.Join(creds, "client.crt"), filepath.Join(creds, "client.key"),
				filepath.Join(creds, "ca.crt"), version, prefix)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("pykmip_ops.py: %v\nstderr:\n%s\nserver log:\n%s", err, stderr.String(), n.logs)
			}
			var r pykmipResult
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("script output %q: %v", out, err)
			}
			check := func(what string, ok bool, got any) {
				t.Helper()
				if !ok {
					t.Errorf("%s: got %v", what, got)
				}
			}
			check("DiscoverVersions", slices.Equal(r.DiscoverVersions, []string{"1.4", "1.3", "1.2", "1.1", "1.0"}), r.DiscoverVersions)
			check("Query operations", len(r.QueryOperations) == 16 && slices.Contains(r.QueryOperations, "REKEY") && slices.Contains(r.QueryOperations, "ADD_ATTRIBUTE"), r.QueryOperations)
			check("Query objects", slices.Equal(r.QueryObjects, []string{"PRIVATE_KEY", "PUBLIC_KEY", "SECRET_DATA", "SYMMETRIC_KEY"}), r.QueryObjects)
			check("Query vendor", strings.HasPrefix(r.Vendor, "Coffer"), r.Vendor)
			check("Get", r.GetType == "SymmetricKey" && r.GetLen == 32, r.GetType)
			check("GetAttributes", r.AttrsCreated["Name"] == prefix+"/aes" && r.AttrsCreated["State"] == "PRE_ACTIVE" &&
				r.AttrsCreated["Object Group"] == "default" && r.AttrsCreated["Cryptographic Length"] == 256.0 &&
				r.AttrsCreated["Unique Identifier"] == r.CreateUID && r.AttrsCreated["Cryptographic Usage Mask"] == 12.0, r.AttrsCreated)
			check("GetAttributeList", slices.Contains(r.AttributeList, "Name") && slices.Contains(r.AttributeList, "State"), r.AttributeList)
			check("Activate", r.StateAfterActivate == "ACTIVE", r.StateAfterActivate)
			check("AddAttribute", r.AddAttributeUID == r.CreateUID && r.AttrAfterAdd != nil && *r.AttrAfterAdd == "dba", r.AttrAfterAdd)
			check("ModifyAttribute", r.AttrAfterModify != nil && *r.AttrAfterModify == "ops", r.AttrAfterModify)
			check("DeleteAttribute", r.DeletedValue != nil && *r.DeletedValue == "ops" && r.AttrAfterDelete == nil, r.AttrAfterDelete)
			check("Locate by name", slices.Equal(r.LocateByName, []string{r.CreateUID}), r.LocateByName)
			check("Locate by type", slices.Contains(r.LocateSymmetric, r.CreateUID), r.LocateSymmetric)
			check("ReKey", r.RekeyUID == r.CreateUID && r.RekeyChangedMaterial, r.RekeyUID)
			check("Register symmetric key", r.RegisterKeyRoundtrip, r.RegisterKeyRoundtrip)
			check("Register secret data", r.RegisterSecretType == "SecretData" && r.RegisterSecretRoundtrip, r.RegisterSecretType)
			check("CreateKeyPair", len(r.KeypairUIDs) == 2 && r.KeypairUIDs[0] == r.KeypairUIDs[1]+".public" &&
				slices.Equal(r.KeypairTypes, []string{"PublicKey", "PrivateKey"}) && r.KeypairMatch && r.KeypairBits == 2048, r.KeypairUIDs)
			check("Destroy while active", r.DestroyActive == "ILLEGAL_OPERATION" && r.StateAfterRefusedDestroy == "ACTIVE", r.DestroyActive)
			check("Revoke (cessation)", r.StateAfterRevoke == "DEACTIVATED", r.StateAfterRevoke)
			check("Revoke (compromise)", r.StateAfterCompromise == "COMPROMISED", r.StateAfterCompromise)
			check("Destroy", r.StateAfterDestroy == "DESTROYED" && r.GetDestroyed == "KEY_VALUE_NOT_PRESENT", r.GetDestroyed)
			check("Get unknown", r.GetUnknown == "ITEM_NOT_FOUND", r.GetUnknown)

			// The same objects through the native API.
			ctx := context.Background()
			o, err := api.DescribeObject(ctx, r.CreateUID)
			if err != nil || o.Name != prefix+"/aes" || o.State != "destroyed" || o.Latest != 2 || o.CreatedBy != "endpoint:pykmip" {
				t.Errorf("REST view of the KMIP key: %+v (%v)", o, err)
			}
			kp, err := api.DescribeObjectByName(ctx, "default", prefix+"/rsa")
			if err != nil || kp.ID != r.KeypairUIDs[1] || kp.Type != "key_pair" || kp.Algorithm != "RSA" || kp.Length != 2048 {
				t.Errorf("REST view of the KMIP key pair: %+v (%v)", kp, err)
			}
			sec, err := api.GetObjectByName(ctx, "default", prefix+"/password", 0)
			if err != nil || string(sec.Material.Value) != "pykmip-secret-value" {
				t.Errorf("REST read of the KMIP secret: %v", err)
			}
		})
	}
	// No key material or passphrase in the server's log.
	if strings.Contains(n.logs.String(), "pykmip-secret-value") || strings.Contains(n.logs.String(), testPassphrase) {
		t.Fatal("a secret appears in the server log")
	}
}

// TestKMIPReadOnlyEndpoint: an endpoint with read only gets Permission
// Denied from PyKMIP's Create and changes nothing.
func TestKMIPReadOnlyEndpoint(t *testing.T) {
	py := pykmipPython(t)
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "kmip:\n  listen: 127.0.0.1:0\n")
	host, port, _ := strings.Cut(n.kmipAddr(), ":")
	creds := n.enrollKMIP("reader", "default", "read")
	code := `
import sys
from kmip import enums
from kmip.pie import client, exceptions
c = client.ProxyKmipClient(hostname=sys.argv[1], port=int(sys.argv[2]), cert=sys.argv[3], key=sys.argv[4], ca=sys.argv[5])
c.open()
try:
    c.create(enums.CryptographicAlgorithm.AES, 256, name="nope")
    print("SUCCESS")
except exceptions.KmipOperationFailure as e:
    print(e.reason.name)
print(len(c.locate()))
c.close()
`
	out, err := exec.Command(py, "-c", code, host, port, filepath.Join(creds, "client.crt"), filepath.Join(creds, "client.key"), filepath.Join(creds, "ca.crt")).Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, []string{"PERMISSION_DENIED", "0"}) {
		t.Fatalf("read-only Create and Locate: %q", got)
	}
	page, err := n.https().ListObjects(context.Background(), client.Query{Wallet: "default"})
	if err != nil || len(page.Items) != 0 {
		t.Fatalf("objects after a refused Create: %v (%v)", page.Items, err)
	}
}

// TestKMIPSmartStop: SIGTERM with an idle KMIP connection open and a client
// that completed a TLS handshake: the server still stops promptly and
// exits 0, and the KMIP port is closed.
func TestKMIPSmartStop(t *testing.T) {
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "kmip:\n  listen: 127.0.0.1:0\n")
	addr := n.kmipAddr()
	creds := n.enrollKMIP("idle", "default", "read")
	cert, err := tls.LoadX509KeyPair(filepath.Join(creds, "client.crt"), filepath.Join(creds, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(creds, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("KMIP TLS handshake with the enrolled certificate: %v", err)
	}
	defer c.Close()
	raw, err := net.Dial("tcp", addr) // never speaks TLS
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	n.signal(syscall.SIGTERM)
	// An idle connection must not hold the stop (it would wait for the idle
	// timeout), nor one that never starts its TLS handshake (the handshake
	// timeout); internal/api/kmip tests the race behind the latter exactly.
	if code := n.waitExit(25 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\n%s", code, n.logs)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("KMIP port still open after stop")
	}
}

// TestKMIPFollower: PyKMIP against a follower of a 3-node cluster: Create,
// Activate and Get work (writes are relayed to the leader over the
// node-to-node channel, as the client's own endpoint), and the leader holds
// the object. With its peers gone the follower is in read-only restricted
// mode: a Create answers Operation Failed with a reason naming that mode,
// and a Get is still served.
func TestKMIPFollower(t *testing.T) {
	py := pykmipPython(t)
	nodes, _ := startCluster(t, 3, "kmip:\n  listen: 127.0.0.1:0\n")
	li, leader := leaderOf(t, nodes)
	var f *node
	for i, n := range nodes {
		if i != li {
			f = n
			break
		}
	}
	creds := leader.enrollKMIP("pyfollower", "default", "manage")
	host, port, _ := strings.Cut(f.kmipAddr(), ":")
	run := func(code string, extra ...string) []string {
		t.Helper()
		args := append([]string{"-c", code, host, port, filepath.Join(creds, "client.crt"), filepath.Join(creds, "client.key"), filepath.Join(creds, "ca.crt")}, extra...)
		cmd := exec.Command(py, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("python: %v\n%s\nfollower log:\n%s", err, stderr.String(), f.logs)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	const prelude = `
import sys
from kmip import enums
from kmip.pie import client, exceptions
c = client.ProxyKmipClient(hostname=sys.argv[1], port=int(sys.argv[2]), cert=sys.argv[3], key=sys.argv[4], ca=sys.argv[5])
c.open()
`
	got := run(prelude + `
uid = c.create(enums.CryptographicAlgorithm.AES, 256, name="via-follower")
c.activate(uid)
k = c.get(uid)
print(uid)
print(len(k.value))
print(c.get_attributes(uid, ["State"])[1][0].attribute_value.value.name)
c.close()
`)
	if len(got) != 3 || got[1] != "32" || got[2] != "ACTIVE" {
		t.Fatalf("PyKMIP create/activate/get on a follower: %q", got)
	}
	uid := got[0]
	o, err := leader.https().DescribeObject(context.Background(), uid)
	if err != nil || o.Name != "via-follower" || o.State != "active" || o.CreatedBy != "endpoint:pyfollower" {
		t.Fatalf("the leader's view of the object created through a follower: %+v (%v)", o, err)
	}

	// The follower alone: read-only restricted mode.
	for _, n := range nodes {
		if n != f {
			n.stop()
		}
	}
	waitUntil(t, 30*time.Second, func() bool {
		h, err := f.local().Health(context.Background())
		return err == nil && h.Role == "read-only"
	}, "the follower in read-only restricted mode")
	got = run(prelude+`
try:
    c.create(enums.CryptographicAlgorithm.AES, 256, name="refused")
    print("SUCCESS")
except exceptions.KmipOperationFailure as e:
    print(e.status.name)
    print(e.reason.name)
    print(e.message)
print(len(c.get(sys.argv[6]).value))
c.close()
`, uid)
	if len(got) != 4 || got[0] != "OPERATION_FAILED" || got[1] != "GENERAL_FAILURE" || !strings.Contains(got[2], "read-only restricted mode") || got[3] != "32" {
		t.Fatalf("PyKMIP on a read-only follower: %q", got)
	}
}

// TestKMIPConnectionFlood: 1,100 idle TCP connections from one address
// (no TLS handshake) once filled every KMIP slot and locked every client
// out until the handshake timeout. Connections are now bounded per source
// address: a PyKMIP client from another address still works at once, and
// the refused connections are counted in the metrics.
func TestKMIPConnectionFlood(t *testing.T) {
	py := pykmipPython(t)
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "kmip:\n  listen: 127.0.0.1:0\n")
	addr := n.kmipAddr()
	host, port, _ := strings.Cut(addr, ":")
	creds := n.enrollKMIP("flooded", "default", "read")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 10 * time.Second}
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for i := 0; i < 1100; i++ {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("flood connection %d: %v", i, err)
		}
		flood = append(flood, c)
	}
	code := `
import sys
from kmip.pie import client
c = client.ProxyKmipClient(hostname=sys.argv[1], port=int(sys.argv[2]), cert=sys.argv[3], key=sys.argv[4], ca=sys.argv[5])
c.open()
print(len(c.locate()))
c.close()
`
	cmd := exec.Command(py, "-c", code, host, port, filepath.Join(creds, "client.crt"), filepath.Join(creds, "client.key"), filepath.Join(creds, "ca.crt"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("PyKMIP from 127.0.0.1 during a flood from 127.0.0.2: %v %q\n%s", err, out, stderr.String())
	}
	pem, err := os.ReadFile(n.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	res, err := hc.Get(n.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	m := regexp.MustCompile(`coffer_connections_rejected_total\{listener="kmip",reason="per_source"\} (\d+)`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no KMIP per-source rejections in the metrics:\n%s", body)
	}
	if v, _ := strconv.Atoi(string(m[1])); v < 1000 {
		t.Fatalf("KMIP per-source rejections %d, want at least 1000 (1,100 connections, 64 allowed)", v)
	}
}
