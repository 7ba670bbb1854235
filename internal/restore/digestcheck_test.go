package restore_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/state"
)

// wrongDigestSrc records a state digest that does not match the copy.
type wrongDigestSrc struct{ benchSrc }

func (w wrongDigestSrc) WriteState(open func(state.BackupPoint, int64) (io.Writer, error)) (state.BackupPoint, error) {
	p, err := w.benchSrc.WriteState(open)
	p.Digest = strings.Repeat("0", 64)
	return p, err
}

// TestRestoreRefusesWrongDigest: a full backup whose state does not match
// the digest recorded with it is refused, whether the restore stops at the
// full or replays records after it, and nothing is left in the data dir.
func TestRestoreRefusesWrongDigest(t *testing.T) {
	for _, tc := range []struct {
		name         string
		inFull, recs int
	}{{"full only", 40, 40}, {"full and replay", 40, 80}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src, segs := benchHistory(t, filepath.Join(dir, "node"), tc.inFull, tc.recs)
			d, err := dest.NewDir(filepath.Join(dir, "dest"))
			if err != nil {
				t.Fatal(err)
			}
			enc := bundle.Encryption{Passphrase: []byte("digest-recovery"), ScryptWorkFactor: 10}
			ctx := context.Background()
			staging := filepath.Join(dir, "staging")
			if _, err := backup.Run(ctx, wrongDigestSrc{src}, d, backup.KindFull, backup.Options{ID: "full", Encryption: enc, StagingDir: staging}); err != nil {
				t.Fatal(err)
			}
			if tc.recs > tc.inFull {
				for _, s := range segs {
					if !s.Closed || s.Records == 0 {
						continue
					}
					seg := s
					if _, err := backup.Run(ctx, src, d, backup.KindSegment, backup.Options{ID: "seg", Encryption: enc, StagingDir: staging, Segment: &seg}); err != nil {
						t.Fatal(err)
					}
				}
			}
			src.st.Close()
			out := filepath.Join(dir, "restored")
			sum, err := restore.Run(ctx, restore.Options{From: d, Keys: []bundle.Decryption{{Passphrase: enc.Passphrase}},
				DataDir: out, Passphrase: []byte("restored-passphrase"), KDF: cheapKDF})
			if err == nil || !strings.Contains(err.Error(), "the backup recorded") {
				t.Fatalf("restore of a full with a wrong digest: %+v, %v; want the digest refused", sum, err)
			}
			if sum.Records != 0 {
				t.Fatalf("%d records replayed onto a state that failed its digest", sum.Records)
			}
			if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("the refused restore left %s: %v", out, err)
			}
		})
	}
}
