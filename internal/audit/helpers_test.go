package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a log sink safe for the mirror goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, nil))
}

func openT(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

func mkRec(i int) Record {
	return Record{
		Node:      "node-1",
		Actor:     "user:alice",
		Roles:     []string{"admin"},
		Source:    "192.0.2.1:5555",
		Transport: "rest",
		Operation: fmt.Sprintf("op-%d", i),
		Objects:   []string{fmt.Sprintf("key-%d", i)},
		Result:    "ok",
		Status:    200,
		LatencyMS: 1.25,
	}
}

func appendN(t testing.TB, l *Log, from, n int) []Record {
	t.Helper()
	out := make([]Record, 0, n)
	for i := from; i < from+n; i++ {
		r, err := l.Append(mkRec(i))
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		out = append(out, r)
	}
	return out
}

// encoded returns the line Append stored for r (without newline).
func encoded(t testing.TB, r Record) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logFile is one log file's lines (without newlines).
type logFile struct {
	name  string
	lines [][]byte
}

func readLog(t testing.TB, dir string) []logFile {
	t.Helper()
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []logFile
	for _, fe := range files {
		b, err := os.ReadFile(filepath.Join(dir, fe.name))
		if err != nil {
			t.Fatal(err)
		}
		lf := logFile{name: fe.name}
		if len(b) > 0 {
			lf.lines = append(lf.lines, bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))...)
		}
		out = append(out, lf)
	}
	return out
}

func writeFileLines(t testing.TB, dir string, lf logFile) {
	t.Helper()
	var b []byte
	for _, ln := range lf.lines {
		b = append(b, ln...)
		b = append(b, '\n')
	}
	if err := os.WriteFile(filepath.Join(dir, lf.name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// where returns the file index and 0-based line index of seq.
func where(t testing.TB, files []logFile, seq uint64) (int, int) {
	t.Helper()
	for fi, lf := range files {
		for li, ln := range lf.lines {
			if s, ok := quickSeq(ln); ok && s == seq {
				return fi, li
			}
		}
	}
	t.Fatalf("seq %d not found", seq)
	return 0, 0
}

// wantTamper checks err is a *TamperError of kind at file/line/seq
// (line < 0 or file "" means don't check).
func wantTamper(t testing.TB, err error, kind, file string, line int, seq uint64) *TamperError {
	t.Helper()
	var te *TamperError
	if !errors.As(err, &te) {
		t.Fatalf("want *TamperError %s, got %v", kind, err)
	}
	if te.Kind != kind || te.Seq != seq || (file != "" && te.File != file) || (line >= 0 && te.Line != line) {
		t.Fatalf("got %s (kind %q file %q line %d seq %d), want kind %q file %q line %d seq %d",
			te, te.Kind, te.File, te.Line, te.Seq, kind, file, line, seq)
	}
	if !strings.Contains(te.Error(), kind) {
		t.Fatalf("message %q does not name the kind", te)
	}
	return te
}
