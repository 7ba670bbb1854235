package restore_test

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/restore"
)

// A raw journal damaged in its middle fails the replay while a batch is
// still being applied in the background: Run must wait for that batch
// before it closes the store.
func TestReplayErrorWaitsForTheBatchInFlight(t *testing.T) {
	defer restore.SetReplayBatch(2)()
	e, mirror := mirroredEnv(t, 60)
	cluster := e.s.Status().ClusterID
	e.s.Close()
	jdir := filepath.Join(mirror, "mirror", cluster)
	ents, _ := os.ReadDir(jdir)
	var seg string
	for _, en := range ents {
		if filepath.Ext(en.Name()) != ".json" {
			seg = filepath.Join(jdir, en.Name())
		}
	}
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	// Walk the frames; in an encrypted record past the middle, flip a
	// ciphertext byte and fix the CRC: the file scans clean, the record does
	// not decrypt.
	nameLen := int(binary.BigEndian.Uint16(b[26:28]))
	off := 28 + nameLen + 4
	// options may follow; find the first frame by trying offsets.
	damaged := false
	for start := off; start < off+512 && !damaged; start++ {
		o := start
		ok := true
		var frames []int
		for o+8 <= len(b) {
			blen := int(binary.BigEndian.Uint32(b[o:]))
			if blen < 30 || o+8+blen > len(b) || crc32.Checksum(b[o+8:o+8+blen], crc32.MakeTable(crc32.Castagnoli)) != binary.BigEndian.Uint32(b[o+4:]) {
				ok = false
				break
			}
			frames = append(frames, o)
			o += 8 + blen
		}
		if !ok || len(frames) < 20 {
			continue
		}
		for _, f := range frames[len(frames)/2:] {
			blen := int(binary.BigEndian.Uint32(b[f:]))
			body := b[f+8 : f+8+blen]
			if binary.BigEndian.Uint32(body[26:30]) != 0 && blen > 40 {
				body[blen-1] ^= 0xff
				binary.BigEndian.PutUint32(b[f+4:], crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
				damaged = true
				break
			}
		}
	}
	if !damaged {
		t.Fatal("no frame damaged")
	}
	os.WriteFile(seg, b, 0o600)

	_, _, err = e.restoreTo(Target{}, func(o *restore.Options) { o.Journals = []string{jdir} })
	if err == nil || !strings.Contains(err.Error(), "decrypt") {
		t.Fatalf("a restore over a record that does not decrypt: %v", err)
	}
	// Run waited for the batch it had in flight before it closed the
	// store: without that, the batch's goroutine used the closed (or nil)
	// store after Run returned, which the race detector reports and which
	// panicked the process when the goroutine started late.
}
