package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/journal"
)

// TestJournalVerifyTakesATornTailForTheEnd: a journal whose last record was
// cut off (a crash mid-write, or a live mirror read while its writer
// writes) is what the data-disk-failure runbook has the operator verify to
// learn the mirror's last index. The torn record is the end of what was
// written, as restore, check and the next open take it: verify says so,
// prints the last whole index and exits 0. Damage before the end still
// fails.
func TestJournalVerifyTakesATornTailForTheEnd(t *testing.T) {
	dir := t.TempDir()
	j, err := journal.Open(journal.Options{Dir: dir, Name: "cl-test"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for i := uint64(1); i <= 5; i++ {
		if err := j.Append([]journal.Record{{Index: i, Time: t0, Type: 3, Payload: bytes.Repeat([]byte("x"), 100)}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*"))
	var last string
	for _, s := range segs {
		if fi, err := os.Stat(s); err == nil && !fi.IsDir() {
			last = s
		}
	}
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	run := func() (string, error) {
		r := NewRootCommand()
		var out bytes.Buffer
		r.SetOut(&out)
		r.SetErr(&out)
		r.SetArgs([]string{"journal", "verify", "--journal-dir", dir})
		err := r.Execute()
		return out.String(), err
	}
	// Cut the last record (and the footer, if Close wrote one) in half.
	if err := os.WriteFile(last, b[:len(b)-60], 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run()
	if err != nil || !strings.Contains(out, "indexes 1-4") || !strings.Contains(out, "torn") {
		t.Fatalf("a torn tail: err %v, output %q; want exit 0, the last whole index 4 and the torn record named", err, out)
	}
	// A flipped byte in a record before the end is damage.
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(last, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run(); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damage inside the journal: err %v, output %q; want it reported as damage", err, out)
	}
}
