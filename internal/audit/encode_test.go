package audit

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// encodeLine is the line Append writes for r (chain fields included).
func encodeLine(r Record) ([]byte, error) {
	b, err := appendChain(nil, r.Seq, r.Time, r.Prev)
	if err != nil {
		return nil, err
	}
	return appendTail(b, &r)
}

// sameAsMarshal fails t unless encodeLine(r) and json.Marshal(r) agree:
// the same bytes, or both an error.
func sameAsMarshal(t *testing.T, r Record) {
	t.Helper()
	want, werr := json.Marshal(r)
	got, gerr := encodeLine(r)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("record %#v: json.Marshal error %v, encoder error %v", r, werr, gerr)
	}
	if werr == nil && !bytes.Equal(got, want) {
		t.Fatalf("record %#v:\n got %s\nwant %s", r, got, want)
	}
}

func TestEncodeMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 11, 12, 123456789, time.UTC)
	full := Record{Seq: 18446744073709551615, Time: at, Prev: zeroHash, Node: "n1", Actor: "endpoint:db",
		Roles: []string{"admin", "audit-manager"}, Source: "127.0.0.1:5555 via n2", Transport: "vault",
		Operation: "kvRead", Objects: []string{"obj-1", "db/1"}, Result: "ok", Status: 200,
		Error: "", LatencyMS: 0.123}
	for _, r := range []Record{
		{},
		{Seq: 1, Time: at},
		full,
		{Seq: 2, Time: at.Truncate(time.Second), Actor: `quote " backslash \ <tag> & amp`, Operation: "x",
			Result: "forbidden", Status: 403, Error: "tab\tnl\nret\rbs\bff\fnul\x00 esc\x1b del\x7f"},
		{Seq: 3, Time: at.Add(-at.Sub(time.Date(2026, 12, 7, 10, 11, 12, 100000000, time.UTC))),
			Actor: "bad utf8 \xff\xfe, ok é ✓ 🔑, separators \u2028 \u2029", Roles: []string{}, Objects: []string{""}},
		{Seq: 4, Time: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), LatencyMS: 1e-7},
		{Seq: 5, Time: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), LatencyMS: 1e21},
		{Seq: 6, Time: at, LatencyMS: -2.5e-9, Status: -1},
		{Seq: 7, Time: at, LatencyMS: 123456789.125},
		{Seq: 8, Time: at, LatencyMS: 1e-6},
		{Seq: 9, Time: at, LatencyMS: 1.5e300},
		{Seq: 10, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Seq: 11, Time: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Seq: 12, Time: at, LatencyMS: math.NaN()},
		{Seq: 13, Time: at, LatencyMS: math.Inf(-1)},
	} {
		sameAsMarshal(t, r)
	}
}

func FuzzEncodeMatchesMarshal(f *testing.F) {
	f.Add(uint64(1), int64(1765101072123456789), "n1", "endpoint:db", "admin", "127.0.0.1:1", "vault", "kvRead", "obj", "ok", 200, "", 0.5)
	f.Add(uint64(0), int64(0), "", "<&>", "\u2028", "\xff", "\t", "\"\\", "", "", 0, "\x00", 1e-9)
	f.Fuzz(func(t *testing.T, seq uint64, nanos int64, node, actor, role, source, transport, op, object, result string, status int, msg string, latency float64) {
		r := Record{Seq: seq, Time: time.Unix(0, nanos).UTC(), Prev: zeroHash, Node: node, Actor: actor, Source: source,
			Transport: transport, Operation: op, Result: result, Status: status, Error: msg, LatencyMS: latency}
		if role != "" {
			r.Roles = []string{role, actor}
		}
		if object != "" {
			r.Objects = []string{object}
		}
		sameAsMarshal(t, r)
	})
}

// TestAppendWritesMarshalledLine: the stored line is json.Marshal of the
// stored record, for a record with every field set.
func TestAppendWritesMarshalledLine(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	in := Record{Node: "n1", Actor: "user:<a&b>", Roles: []string{"admin"}, Source: "10.0.0.1:1", Transport: "rest",
		Operation: "getObject", Objects: []string{"id-1"}, Result: "not_found", Status: 404, Error: "no \"x\"", LatencyMS: 0.25}
	got, err := l.Append(in)
	if err != nil {
		t.Fatal(err)
	}
	files := readLog(t, dir)
	if len(files) != 1 || len(files[0].lines) != 1 {
		t.Fatalf("log files %+v", files)
	}
	if want := encoded(t, got); !bytes.Equal(files[0].lines[0], want) {
		t.Fatalf("stored line\n %s\nwant\n %s", files[0].lines[0], want)
	}
}

// TestHeadCurrentAfterConcurrentAppends: once appends from many goroutines
// have returned, audit.head names the last record (its seq and hash), and
// the log reopens without a warning.
func TestHeadCurrentAfterConcurrentAppends(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if _, err := l.Append(mkRec(i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	checkHead := func() {
		t.Helper()
		f, err := os.Open(filepath.Join(dir, HeadFile))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		hd, ok, err := readHead(f)
		files := readLog(t, dir)
		lines := files[len(files)-1].lines
		if err != nil || !ok || hd.seq != 1600 || hd.hash != hashHex(lines[len(lines)-1]) {
			t.Fatalf("head %+v (%v, %v), want seq 1600 and the last line's hash", hd, ok, err)
		}
	}
	checkHead()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	checkHead()
	var logged bytes.Buffer
	l2, err := Open(dir, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if logged.Len() != 0 || l2.Count() != 1600 {
		t.Fatalf("reopened at %d, logged %q", l2.Count(), logged.String())
	}
}
