package state

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/lifecycle"
)

// TestObjectJSONMatchesMarshal: the object encoder writes exactly what
// json.Marshal writes, for objects with every optional part present or
// absent, strings that need escaping, and times json.Marshal refuses.
func TestObjectJSONMatchesMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	strs := []string{"", "plain", "db/tde/key-0001", "<script>&amp;", `quote " and \ back`, "ctl\x00\n\t\x1f",
		"ünïcödé", "line\u2028sep\u2029", "bad utf8 \xff\xfe", "emoji 🔑", "\x7f del"}
	zones := []*time.Location{time.UTC, time.FixedZone("ist", 5*3600+1800), time.FixedZone("w", -8*3600), time.FixedZone("far", 24*3600)}
	times := func() time.Time {
		years := []int{0, 9999, 10000, -1, 1970}
		y, zone := 2026, zones[rng.IntN(len(zones)-1)]
		if rng.IntN(40) == 0 { // the edges, and some json.Marshal refuses
			y, zone = years[rng.IntN(len(years))], zones[rng.IntN(len(zones))]
		}
		return time.Date(y, time.Month(1+rng.IntN(12)), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(3)*rng.IntN(1e9), zone)
	}
	str := func() string { return strs[rng.IntN(len(strs))] }
	ptime := func() *time.Time {
		if rng.IntN(2) == 0 {
			return nil
		}
		v := times()
		return &v
	}
	refused := 0
	for i := range 5000 {
		o := Object{ID: str(), Wallet: str(), Name: str(), Type: str(), Algorithm: str(), Length: rng.IntN(5000) - 100,
			State: lifecycle.State(str()), Reason: str(), CreatedBy: str(), Created: times(), Updated: times(),
			Activated: ptime(), Deactivate: ptime(), Compromise: ptime(), Destroyed: ptime(), Latest: rng.Uint64()}
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
			o.Versions = []Version{}
			for v := range rng.IntN(4) {
				ver := Version{Version: uint64(v + 1), Created: times(), Length: rng.IntN(3) * 128, Destroyed: rng.IntN(2) == 0}
				if rng.IntN(2) == 0 {
					ver.Public = make([]byte, rng.IntN(40))
					for j := range ver.Public {
						ver.Public[j] = byte(rng.IntN(256))
					}
				}
				o.Versions = append(o.Versions, ver)
			}
		}
		want, werr := json.Marshal(o)
		got, ok := appendObjectJSON([]byte("prefix"), &o)
		if !ok {
			refused++
			if werr == nil || string(got) != "prefix" {
				t.Fatalf("object %d: refused (%q), but json.Marshal encodes it: %s", i, got, want)
			}
			continue
		}
		if werr != nil {
			t.Fatalf("object %d: encoded, but json.Marshal fails: %v", i, werr)
		}
		if !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("object %d:\n got %s\nwant prefix%s", i, got, want)
		}
	}
	if refused == 0 || refused > 2500 {
		t.Fatalf("%d of 5000 refused: the times json.Marshal refuses are not covered, or too few objects are compared", refused)
	}
}
