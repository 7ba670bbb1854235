package state

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/lifecycle"
)

// randomObjects returns a generator of objects with every optional part
// present or absent, strings that need escaping, and (rarely) times
// json.Marshal refuses.
func randomObjects(seed uint64) func() Object {
	rng := rand.New(rand.NewPCG(seed, 4))
	strs := []string{"", "plain", "db/tde/key-0001", "<script>&amp;", `quote " and \ back`, "ctl\x00\n\t\x1f",
		"ünïcödé", "line\u2028sep\u2029", "bad utf8 \xff\xfe", "emoji 🔑", "\x7f del", "R&D", "a>b", "a<b"}
	zones := []*time.Location{time.UTC, time.FixedZone("ist", 5*3600+1800), time.FixedZone("w", -8*3600), time.FixedZone("far", 24*3600)}
	times := func() time.Time {
		years := []int{0, 9999, 10000, -1, 1970}
		y, zone := 2026, zones[rng.IntN(len(zones)-1)]
		if rng.IntN(40) == 0 { // the edges, and some json.Marshal refuses
			y, zone = years[rng.IntN(len(years))], zones[rng.IntN(len(zones))]
		}
		return time.Date(y, time.Month(1+rng.IntN(12)), 1+rng.IntN(28), rng.IntN(24), rng.IntN(60), rng.IntN(60), rng.IntN(3)*rng.IntN(1e9), zone)
	}
	str := func() string {
		if rng.IntN(2) == 0 {
			return strs[rng.IntN(3)] // plain
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
	return func() Object {
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
		return o
	}
}

// TestObjectJSONMatchesMarshal: the object encoder writes exactly what
// json.Marshal writes.
func TestObjectJSONMatchesMarshal(t *testing.T) {
	next := randomObjects(3)
	refused := 0
	for i := range 5000 {
		o := next()
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

// TestObjectCreateDecodeMatchesUnmarshal: an object creation's body decodes
// to what json.Unmarshal gives, for bodies json.Marshal wrote (read
// directly) and for altered ones (which may go through json.Unmarshal), and
// fails where json.Unmarshal fails.
func TestObjectCreateDecodeMatchesUnmarshal(t *testing.T) {
	next := randomObjects(5)
	rng := rand.New(rand.NewPCG(6, 7))
	direct, total := 0, 0
	check := func(i int, body []byte) {
		t.Helper()
		total++
		var want ObjectCreate
		werr := json.Unmarshal(body, &want)
		got, err := decodeObjectCreate(body)
		if (err == nil) != (werr == nil) {
			t.Fatalf("body %d %q: error %v, json.Unmarshal %v", i, body, err, werr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("body %d %q:\n got %+v\nwant %+v", i, body, got, want)
		}
	}
	for i := range 3000 {
		c := ObjectCreate{Object: next(), Length: rng.IntN(3) * 128}
		if rng.IntN(10) > 0 {
			c.Material = []byte(fmt.Sprintf("sealed-%d", rng.IntN(1000)))
		}
		if rng.IntN(3) == 0 {
			c.Public = []byte{byte(rng.IntN(256)), 0, 0xff}
		}
		body, err := json.Marshal(c)
		if err != nil {
			continue // a time json.Marshal refuses
		}
		enc, ok := appendObjectCreateJSON(nil, &c)
		if !ok || !bytes.Equal(enc, body) {
			t.Fatalf("object %d: encoded %s, json.Marshal %s", i, enc, body)
		}
		if _, ok := scanObjectCreate(body); ok {
			direct++
		}
		check(i, body)
		// Altered: a byte changed, removed or doubled.
		for range 3 {
			m := bytes.Clone(body)
			p := rng.IntN(len(m))
			switch rng.IntN(3) {
			case 0:
				m[p] = `{}[]":,0123456789-\ aZ.eE`[rng.IntN(25)]
			case 1:
				m = append(m[:p], m[p+1:]...)
			default:
				m = append(m[:p+1], m[p:]...)
			}
			check(i, m)
		}
	}
	if direct < 50 {
		t.Fatalf("only %d of the bodies json.Marshal wrote were read directly", direct)
	}
	// A usual object is read directly.
	at := time.Date(2026, 12, 7, 10, 0, 0, 123, time.UTC)
	usual := ObjectCreate{Object: Object{ID: "0000002a-0000-4000-8000-00000000002a", Wallet: "w", Name: "db/tde/key-0000042",
		Type: TypeSymmetricKey, Algorithm: "AES", Length: 256, State: "active", CreatedBy: "user:admin", Created: at, Updated: at,
		Activated: &at, Attributes: map[string]string{"owner": "dba"}, Versions: []Version{{Version: 1, Created: at}}}, Material: []byte("sealed")}
	body, _ := json.Marshal(usual)
	if got, ok := scanObjectCreate(body); !ok || !reflect.DeepEqual(got, usual) {
		t.Fatalf("a usual object is not read directly (%v): %+v", ok, got)
	}
	t.Logf("%d bodies, %d read directly", total, direct)
}

// TestNewCommandObjectCreateMatchesMarshal: the body NewCommand gives an
// object creation is json.Marshal's, and a body json.Marshal refuses (a
// time outside its range) is refused with its error.
func TestNewCommandObjectCreateMatchesMarshal(t *testing.T) {
	next := randomObjects(8)
	rng := rand.New(rand.NewPCG(9, 10))
	now := time.Unix(1_700_000_000, 5).In(time.FixedZone("x", 3600))
	refused := 0
	for i := range 3000 {
		c := ObjectCreate{Object: next(), Length: rng.IntN(3) * 128}
		if rng.IntN(10) > 0 {
			c.Material = []byte(fmt.Sprintf("sealed-%d", rng.IntN(1000)))
		}
		if rng.IntN(3) == 0 {
			c.Public = []byte{byte(rng.IntN(256)), 0, 0xff}
		}
		want, werr := json.Marshal(c)
		cmd, err := NewCommand(TypeObjectCreate, now, c)
		if werr != nil {
			refused++
			if err == nil || !strings.Contains(err.Error(), werr.Error()) {
				t.Fatalf("object %d: error %v, json.Marshal %v", i, err, werr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("object %d: %v", i, err)
		}
		if !bytes.Equal(cmd.Body, want) {
			t.Fatalf("object %d: body %s, json.Marshal %s", i, cmd.Body, want)
		}
		if cmd.Type != TypeObjectCreate || !cmd.Time.Equal(now) || cmd.Time.Location() != time.UTC {
			t.Fatalf("object %d: type %v time %v", i, cmd.Type, cmd.Time)
		}
	}
	if refused == 0 {
		t.Fatal("no object with a time json.Marshal refuses was tried")
	}
}
