package bundle

import (
	"bytes"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestOpenOtherLevels: a bundle written at another zstd level (SpeedDefault
// is what earlier builds wrote) opens and verifies the same: readers do not
// depend on the level.
func TestOpenOtherLevels(t *testing.T) {
	gen, err := io.ReadAll(newGen(3<<20, 7))
	if err != nil {
		t.Fatal(err)
	}
	// Like a bbolt file: random and text, with runs of zeros between.
	var plain []byte
	for p := gen; len(p) > 0; p = p[min(len(p), 20000):] {
		plain = append(plain, p[:min(len(p), 20000)]...)
		plain = append(plain, make([]byte, 30000)...)
	}
	for _, level := range []zstd.EncoderLevel{zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedFastest} {
		t.Run(level.String(), func(t *testing.T) {
			defer func(l zstd.EncoderLevel) { zstdLevel = l }(zstdLevel)
			zstdLevel = level
			file, want := writeBundle(t, testManifest(), Encryption{Recipients: []string{testRecipient1}}, plain)
			zstdLevel = zstd.SpeedFastest
			got, m, err := openAll(file, idDec(testIdentity1))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("read %d bytes, not the %d written", len(got), len(plain))
			}
			assertSameManifest(t, m, want)
			dec := idDec(testIdentity1)
			if _, err := Verify(bytes.NewReader(file), int64(len(file)), &dec); err != nil {
				t.Fatal(err)
			}
			if len(file) > len(plain)/2 {
				t.Fatalf("%d bytes of bundle for %d of payload: the zeros did not compress", len(file), len(plain))
			}
		})
	}
}
