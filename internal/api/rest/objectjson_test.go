package rest

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestObjectJSONMatchesEncoder: an object's answer is the bytes
// json.Encoder.Encode writes for it, for objects with every optional part
// present or absent, strings that need escaping, and times json.Marshal
// refuses (whose answer fails as Encode fails: no body).
func TestObjectJSONMatchesEncoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	strs := []string{"", "plain", "db/tde/key-0001", "<script>&amp;", `quote " and \ back`, "ctl\x00\n\t\x1f",
		"ünïcödé", "line\u2028sep\u2029", "bad utf8 \xff\xfe", "emoji 🔑", "\x7f del", "R&D", "a>b", "a<b"}
	zones := []*time.Location{time.UTC, time.FixedZone("ist", 5*3600+1800), time.FixedZone("w", -8*3600), time.FixedZone("far", 24*3600)}
	times := func() time.Time {
		years := []int{0, 9999, 10000, -1, 1970}
		y, zone := 2026, zones[rng.IntN(len(zones)-1)]
		if rng.IntN(40) == 0 {
			y, zone = years[rng.IntN(len(years))], zones[rng.IntN(len(zones))]
		}
		return time.Date(y, time.Month(1+rng.IntN(12)), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(3)*rng.IntN(1e9), zone)
	}
	str := func() string {
		if rng.IntN(2) == 0 {
			return strs[rng.IntN(3)]
		}
		return strs[rng.IntN(len(strs))]
	}
	ptime := func() *time.Time {
		if rng.IntN(2) == 0 {
			return nil
		}
		v := times()
		return &v
	}
	refused, encoded := 0, 0
	for i := range 5000 {
		o := service.Object{ID: str(), Wallet: str(), Name: str(), Type: str(), Algorithm: str(), Length: rng.IntN(5000) - 100,
			State: str(), Reason: str(), CreatedBy: str(), Created: times(), Updated: times(),
			Activated: ptime(), Deactivated: ptime(), Compromised: ptime(), Destroyed: ptime(), Latest: rng.Uint64()}
		switch rng.IntN(3) {
		case 1:
			o.Attributes = map[string]string{}
		case 2:
			o.Attributes = map[string]string{}
			for range 1 + rng.IntN(4) {
				o.Attributes[str()] = str()
			}
		}
		if rng.IntN(4) > 0 {
			o.Versions = []service.ObjectVersion{}
			for range rng.IntN(4) {
				v := service.ObjectVersion{Version: rng.Uint64N(10), Created: times(), Length: rng.IntN(3) * 128, Destroyed: rng.IntN(2) == 0}
				if rng.IntN(2) == 0 {
					v.Public = []byte{byte(rng.IntN(256)), 1, 2, 3, 4}[:rng.IntN(5)]
				}
				o.Versions = append(o.Versions, v)
			}
		}
		var want bytes.Buffer
		werr := json.NewEncoder(&want).Encode(o)
		rec := httptest.NewRecorder()
		err := sendJSON(rec, 201, o)
		if (err == nil) != (werr == nil) {
			t.Fatalf("object %d: error %v, json.Encoder %v", i, err, werr)
		}
		if werr != nil {
			refused++
		} else {
			encoded++
		}
		if rec.Code != 201 || !bytes.Equal(rec.Body.Bytes(), want.Bytes()) {
			t.Fatalf("object %d: status %d body\n%q\nwant\n%q", i, rec.Code, rec.Body.Bytes(), want.Bytes())
		}
		if got := rec.Header().Get("Content-Type"); got != "application/json" {
			t.Fatalf("object %d: Content-Type %q", i, got)
		}
	}
	if refused == 0 || encoded < 2500 {
		t.Fatalf("%d refused, %d encoded: the cases are not covered", refused, encoded)
	}
}
