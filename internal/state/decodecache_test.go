package state

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDecodeCacheGivesEachCallerItsOwnCopy: a caller changing what it got
// (a wallet's grants, a token's expiry) does not change what the next
// caller gets; other bytes decode to their own value.
func TestDecodeCacheGivesEachCallerItsOwnCopy(t *testing.T) {
	c := &decodeCache[Wallet]{copyOut: walletCache.copyOut}
	raw := []byte(`{"name":"w","created":"2026-01-02T03:04:05Z","grants":{"db":"read"}}`)
	var a, b Wallet
	if err := c.decode(raw, &a); err != nil {
		t.Fatal(err)
	}
	a.Grants["db"] = "manage"
	a.Grants["x"] = "read"
	if err := c.decode(raw, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Grants) != 1 || b.Grants["db"] != "read" || b.Name != "w" {
		t.Fatalf("second decode %+v", b)
	}
	var other Wallet
	if err := c.decode([]byte(`{"name":"w","created":"2026-01-02T03:04:05Z","grants":{"db":"manage"}}`), &other); err != nil || other.Grants["db"] != "manage" {
		t.Fatalf("changed record: %+v %v", other, err)
	}
	if err := c.decode([]byte(`{"name":`), &other); err == nil {
		t.Fatal("bad JSON decoded")
	}

	tc := &decodeCache[Token]{copyOut: tokenCache.copyOut}
	rawTok := []byte(`{"hash":"h","name":"n","created":"2026-01-02T03:04:05Z","expires":"2026-02-02T03:04:05Z"}`)
	var t1, t2 Token
	if err := tc.decode(rawTok, &t1); err != nil {
		t.Fatal(err)
	}
	*t1.Expires = time.Time{}
	if err := tc.decode(rawTok, &t2); err != nil || t2.Expires.IsZero() {
		t.Fatalf("token expiry shared between callers: %v %v", t2.Expires, err)
	}
}

// TestDecodeCacheIsBounded: the cache never holds more than decodeCacheMax
// records.
func TestDecodeCacheIsBounded(t *testing.T) {
	c := &decodeCache[VaultMount]{copyOut: mountCache.copyOut}
	for i := range decodeCacheMax + 10 {
		var m VaultMount
		if err := c.decode([]byte(`{"path":"p`+string(rune('a'+i%26))+`","type":"kv-v2","wallet":"w`+strconv.Itoa(i)+`","created":"2026-01-02T03:04:05Z"}`), &m); err != nil {
			t.Fatal(err)
		}
		if len(c.m) > decodeCacheMax {
			t.Fatalf("%d entries", len(c.m))
		}
	}
}

// TestDecodeCacheObjectCopies: attributes, versions, their public keys and
// time pointers of a cached object are the caller's own.
func TestDecodeCacheObjectCopies(t *testing.T) {
	c := &decodeCache[Object]{copyOut: copyObject}
	raw := []byte(`{"id":"o1","wallet":"w","name":"n","type":"symmetric_key","algorithm":"AES","length":256,"state":"active",` +
		`"attributes":{"a":"1"},"created":"2026-01-02T03:04:05Z","updated":"2026-01-02T03:04:05Z","activated":"2026-01-02T03:04:05Z",` +
		`"latest":1,"versions":[{"version":1,"created":"2026-01-02T03:04:05Z","public":"AQID"}]}`)
	var a, b Object
	if err := c.decode(raw, &a); err != nil {
		t.Fatal(err)
	}
	a.Attributes["a"] = "changed"
	a.Versions[0].Version = 9
	a.Versions[0].Public[0] = 0xff
	*a.Activated = time.Time{}
	if err := c.decode(raw, &b); err != nil {
		t.Fatal(err)
	}
	if b.Attributes["a"] != "1" || b.Versions[0].Version != 1 || b.Versions[0].Public[0] != 1 || b.Activated.IsZero() {
		t.Fatalf("cached object changed by an earlier caller: %+v", b)
	}
}

// TestDecodeCacheSkipsLargeRecords: a record over decodeCacheMaxRaw bytes
// is decoded but not kept.
func TestDecodeCacheSkipsLargeRecords(t *testing.T) {
	c := &decodeCache[Wallet]{copyOut: walletCache.copyOut}
	big := []byte(`{"name":"w","description":"` + strings.Repeat("x", decodeCacheMaxRaw) + `","created":"2026-01-02T03:04:05Z"}`)
	var w Wallet
	if err := c.decode(big, &w); err != nil || w.Name != "w" {
		t.Fatalf("%+v %v", w, err)
	}
	if len(c.m) != 0 {
		t.Fatalf("a %d-byte record was cached", len(big))
	}
}
