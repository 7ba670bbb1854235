package audit

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// prunedLog returns a closed log of 10 records, one per file, whose files 1
// to 4 were pruned, and the records.
func prunedLog(t *testing.T) (string, []Record) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "audit")
	l := openT(t, dir, Options{MaxFileBytes: 1}) // one record per file
	recs := appendN(t, l, 1, 10)
	a, removed, err := l.Prune(4)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 4 || removed[0] != fileName(1) || removed[3] != fileName(4) {
		t.Fatalf("removed %v", removed)
	}
	if want := (Anchor{File: 4, Seq: 4, Hash: hashHex(encoded(t, recs[3]))}); a != want {
		t.Fatalf("anchor %+v, want %+v", a, want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, recs
}

func TestClosedFilesAndPrune(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l := openT(t, dir, Options{MaxFileBytes: 1})
	defer l.Close()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 6 {
		r := mkRec(i)
		r.Time = t0.Add(time.Duration(i) * time.Hour)
		if _, err := l.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := l.ClosedFiles()
	if err != nil {
		t.Fatal(err)
	}
	// Six files; the last is the one Append writes to.
	if len(cf) != 5 {
		t.Fatalf("%d closed files, want 5: %+v", len(cf), cf)
	}
	for i, f := range cf {
		if f.Num != uint64(i+1) || f.FirstSeq != uint64(i+1) || f.LastSeq != uint64(i+1) || !f.LastTime.Equal(t0.Add(time.Duration(i)*time.Hour)) || f.Size == 0 {
			t.Fatalf("closed file %d: %+v", i, f)
		}
	}
	// Prune never removes the file Append writes to.
	a, removed, err := l.Prune(math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 5 || a.File != 5 || a.Seq != 5 {
		t.Fatalf("removed %v, anchor %+v", removed, a)
	}
	if _, err := os.Stat(filepath.Join(dir, fileName(6))); err != nil {
		t.Fatalf("the active file: %v", err)
	}
	if cf, _ := l.ClosedFiles(); len(cf) != 0 {
		t.Fatalf("closed files after pruning all: %+v", cf)
	}
	// The log goes on; reading from seq 1 gives what is left.
	appendN(t, l, 7, 2)
	recs, err := l.Read(1, 0)
	if err != nil || len(recs) != 3 || recs[0].Seq != 6 {
		t.Fatalf("read after pruning: %d records, first %+v, %v", len(recs), recs, err)
	}
	rep, err := Verify(dir)
	if err != nil || rep.PrunedThrough != 5 || rep.FirstSeq != 6 || rep.LastSeq != 8 {
		t.Fatalf("verify after pruning: %+v %v", rep, err)
	}
}

func TestVerifyAfterPrune(t *testing.T) {
	dir, recs := prunedLog(t)
	rep, err := Verify(dir)
	if err != nil {
		t.Fatalf("verify after pruning: %v", err)
	}
	if rep.PrunedThrough != 4 || rep.FirstSeq != 5 || rep.LastSeq != 10 || rep.Files != 6 || rep.LastHash != hashHex(encoded(t, recs[9])) {
		t.Fatalf("report %+v", rep)
	}
	// Open resumes the chain; more records verify too.
	l := openT(t, dir, Options{MaxFileBytes: 1})
	appendN(t, l, 11, 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(dir); err != nil || rep.LastSeq != 13 {
		t.Fatalf("verify after reopening: %+v %v", rep, err)
	}
}

func TestVerifyAfterPruneDetectsTampering(t *testing.T) {
	anchorPath := func(dir string) string { return filepath.Join(dir, AnchorFile) }
	edit := func(t *testing.T, dir string, f func(a *Anchor)) {
		a, ok, err := ReadAnchor(dir)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		f(&a)
		if err := os.WriteFile(anchorPath(dir), a.encode(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("middle file removed", func(t *testing.T) {
		dir, _ := prunedLog(t)
		os.Remove(filepath.Join(dir, fileName(7)))
		_, err := Verify(dir)
		te := wantTamper(t, err, KindRemoved, fileName(8), 1, 7)
		if want := fileName(7) + " is missing"; !strings.Contains(te.Msg, want) {
			t.Fatalf("message %q does not say %q", te.Msg, want)
		}
	})
	t.Run("first file after the anchor removed", func(t *testing.T) {
		dir, _ := prunedLog(t)
		os.Remove(filepath.Join(dir, fileName(5)))
		_, err := Verify(dir)
		wantTamper(t, err, KindRemoved, fileName(6), 1, 5)
	})
	t.Run("anchor hash altered", func(t *testing.T) {
		dir, _ := prunedLog(t)
		edit(t, dir, func(a *Anchor) { a.Hash = hashHex([]byte("other")) })
		_, err := Verify(dir)
		wantTamper(t, err, KindAnchor, AnchorFile, 0, 4)
	})
	t.Run("anchor seq raised", func(t *testing.T) {
		dir, _ := prunedLog(t)
		edit(t, dir, func(a *Anchor) { a.Seq = 5 })
		_, err := Verify(dir)
		wantTamper(t, err, KindAnchor, AnchorFile, 0, 5)
	})
	t.Run("anchor seq lowered", func(t *testing.T) {
		dir, _ := prunedLog(t)
		edit(t, dir, func(a *Anchor) { a.Seq = 3 })
		_, err := Verify(dir)
		wantTamper(t, err, KindRemoved, fileName(5), 1, 4)
	})
	t.Run("anchor file number raised to hide a file", func(t *testing.T) {
		dir, _ := prunedLog(t)
		edit(t, dir, func(a *Anchor) { a.File = 5 })
		_, err := Verify(dir)
		wantTamper(t, err, KindRemoved, fileName(6), 1, 5)
	})
	t.Run("anchor removed", func(t *testing.T) {
		dir, _ := prunedLog(t)
		os.Remove(anchorPath(dir))
		_, err := Verify(dir)
		wantTamper(t, err, KindRemoved, fileName(5), 1, 1)
	})
	t.Run("anchor garbled", func(t *testing.T) {
		dir, _ := prunedLog(t)
		os.WriteFile(anchorPath(dir), []byte("coffer-audit-anchor v1 file=x\n"), 0o600)
		_, err := Verify(dir)
		wantTamper(t, err, KindAnchor, AnchorFile, 0, 0)
		if _, err := Open(dir, Options{}); err == nil {
			t.Fatal("Open accepted a garbled anchor")
		}
	})
	t.Run("record after the anchor edited", func(t *testing.T) {
		dir, _ := prunedLog(t)
		files := readLog(t, dir)
		files[0].lines[0] = []byte(string(files[0].lines[0][:len(files[0].lines[0])-1]) + `,"x":1}`)
		writeFileLines(t, dir, files[0])
		_, err := Verify(dir)
		wantTamper(t, err, KindEdited, fileName(5), 1, 5)
	})
}

func TestPruneInterruptedBeforeRemoving(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l := openT(t, dir, Options{MaxFileBytes: 1})
	appendN(t, l, 1, 5)
	keep, err := os.ReadFile(filepath.Join(dir, fileName(2)))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Prune(2); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// As if the process died after writing the anchor: file 2 is back.
	if err := os.WriteFile(filepath.Join(dir, fileName(2)), keep, 0o600); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(dir); err != nil || rep.FirstSeq != 3 {
		t.Fatalf("verify with a pruned file left over: %+v %v", rep, err)
	}
	l = openT(t, dir, Options{MaxFileBytes: 1})
	defer l.Close()
	if cf, _ := l.ClosedFiles(); len(cf) != 2 || cf[0].Num != 3 {
		t.Fatalf("closed files: %+v", cf)
	}
	// The next prune removes the leftover.
	a, removed, err := l.Prune(0)
	if err != nil || a.File != 2 || len(removed) != 1 || removed[0] != fileName(2) {
		t.Fatalf("prune of nothing new: %+v %v %v", a, removed, err)
	}
}

func TestPruneRefusesDamagedFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l := openT(t, dir, Options{MaxFileBytes: 1})
	defer l.Close()
	appendN(t, l, 1, 5)
	files := readLog(t, dir)
	files[1].lines[0] = []byte(string(files[1].lines[0][:len(files[1].lines[0])-1]) + `,"x":1}`)
	writeFileLines(t, dir, files[1])
	_, removed, err := l.Prune(3)
	var te *TamperError
	if !errors.As(err, &te) || len(removed) != 0 {
		t.Fatalf("prune over an edited record: removed %v, %v", removed, err)
	}
	if _, ok, _ := ReadAnchor(dir); ok {
		t.Fatal("an anchor was written")
	}
	if len(readLog(t, dir)) != 5 {
		t.Fatal("files were removed")
	}
}

func TestAnchorEncoding(t *testing.T) {
	a := Anchor{File: 12, Seq: 345, Hash: hashHex([]byte("x"))}
	b := a.encode()
	if len(b) != anchorLen {
		t.Fatalf("length %d, want %d", len(b), anchorLen)
	}
	if got, err := parseAnchor(b); err != nil || got != a {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// The example in FORMAT.md.
	doc, err := os.ReadFile("FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	ex := Anchor{File: 1, Seq: 2, Hash: "f731695fd1115a9b8d9f065bbc9dd93e87651b6f16d2080f372a8702a2997028"}
	if !strings.Contains(string(doc), "\n"+string(ex.encode())) || !strings.Contains(string(doc), fmt.Sprintf("(%d byte)", anchorLen)) {
		t.Fatalf("FORMAT.md does not show %q (%d bytes)", ex.encode(), anchorLen)
	}
	for _, bad := range []Anchor{{File: 0, Seq: 1, Hash: a.Hash}, {File: 1, Seq: 0, Hash: a.Hash}, {File: 1, Seq: 1, Hash: zeroHash}} {
		if _, err := parseAnchor(bad.encode()); err == nil {
			t.Fatalf("accepted %+v", bad)
		}
	}
}

func TestVerifyFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	l := openT(t, dir, Options{MaxFileBytes: 1})
	recs := appendN(t, l, 1, 6)
	l.Close()
	copyFiles := func(t *testing.T, nums ...uint64) string {
		out := t.TempDir()
		for _, n := range nums {
			b, err := os.ReadFile(filepath.Join(dir, fileName(n)))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(out, fileName(n)), b, 0o600)
		}
		return out
	}
	if rep, err := VerifyFiles(copyFiles(t, 1, 2)); err != nil || rep.FirstSeq != 1 || rep.LastSeq != 2 || rep.Records != 2 {
		t.Fatalf("files 1-2: %+v %v", rep, err)
	}
	rep, err := VerifyFiles(copyFiles(t, 3, 4, 5))
	if err != nil || rep.FirstSeq != 3 || rep.LastSeq != 5 || rep.Records != 3 || rep.LastHash != hashHex(encoded(t, recs[4])) {
		t.Fatalf("files 3-5: %+v %v", rep, err)
	}
	_, err = VerifyFiles(copyFiles(t, 3, 5))
	wantTamper(t, err, KindRemoved, fileName(5), 1, 4)
	edited := copyFiles(t, 3, 4, 5)
	files := readLog(t, edited)
	files[1].lines[0] = []byte(string(files[1].lines[0][:len(files[1].lines[0])-1]) + `,"x":1}`)
	writeFileLines(t, edited, files[1])
	_, err = VerifyFiles(edited)
	wantTamper(t, err, KindEdited, fileName(4), 1, 4)
}
