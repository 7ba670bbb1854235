package service

import (
	"strings"
	"testing"
)

// TestPlainCharsIsNameRE: the byte loop ValidName uses (plainChars) accepts exactly what
// nameRE accepts: every string of one and two bytes, and longer ones at and
// around the length limit.
func TestPlainCharsIsNameRE(t *testing.T) {
	check := func(s string) {
		if got, want := plainChars(s, 255, nameExtra), nameRE.MatchString(s); got != want {
			t.Fatalf("%q: plainChars %v, nameRE %v", s, got, want)
		}
	}
	check("")
	for a := range 256 {
		check(string([]byte{byte(a)}))
		for b := range 256 {
			check(string([]byte{byte(a), byte(b)}))
		}
	}
	for _, n := range []int{253, 254, 255, 256, 300} {
		for _, s := range []string{strings.Repeat("a", n), "a" + strings.Repeat("/", n-1), "a" + strings.Repeat("é", n/2), strings.Repeat("a", n-1) + "\n"} {
			check(s)
		}
	}
	for _, s := range []string{"a/b", "a//b", "a/./b", "a/../b", "a\nb", "a\x00", "_a", "a_", "A-Z.09", "ü"} {
		check(s)
	}
}
