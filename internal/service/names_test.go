package service

import (
	"regexp"
	"strings"
	"testing"
)

// The rules ValidName, ValidLabel and validAttrs check, as regexps: the
// hand-written checks must answer as these do.
var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,254}$`)
	labelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$`)
	attrRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$`)
)

// nameRuleSegments is the path segment rule of ValidName, written as the
// plain split it is.
func nameRuleSegments(name string) bool {
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

func checkNameRules(t *testing.T, s string) {
	t.Helper()
	if got, want := ValidName(s) == nil, nameRE.MatchString(s) && nameRuleSegments(s); got != want {
		t.Errorf("ValidName(%q) accepts: %v, the rule: %v", s, got, want)
	}
	if got, want := ValidLabel("wallet", s) == nil, labelRE.MatchString(s); got != want {
		t.Errorf("ValidLabel(%q) accepts: %v, the rule: %v", s, got, want)
	}
	if got, want := validAttrs(map[string]string{s: "v"}) == nil, attrRE.MatchString(s); got != want {
		t.Errorf("validAttrs(%q) accepts: %v, the rule: %v", s, got, want)
	}
}

func TestNameRules(t *testing.T) {
	for _, s := range []string{
		"", "a", "A", "0", "_", ".", "-", "/", ":", "a/b", "a//b", "a/", "/a", "a/./b", "a/../b", "a/..", "a/.",
		"a/.b", "a/..b", "a.", "a..", "db1/tde", "a:b", "a_b-c.d", "a b", "a\n", "a\x00", "é", "aé", "a\xff",
		"a$", "a\u212a", "K", "\u212a", "a" + strings.Repeat("b", 62), "a" + strings.Repeat("b", 63),
		"a" + strings.Repeat("b", 64), "a" + strings.Repeat("b", 126), "a" + strings.Repeat("b", 127),
		"a" + strings.Repeat("b", 128), "a" + strings.Repeat("/b", 127), "a" + strings.Repeat("b/", 127),
		strings.Repeat("x", 255), strings.Repeat("x", 256), strings.Repeat("é", 100),
	} {
		checkNameRules(t, s)
	}
}

func FuzzNameRules(f *testing.F) {
	for _, s := range []string{"db1/tde", "a/../b", "a:b", "a" + strings.Repeat("b", 63), "é"} {
		f.Add(s)
	}
	f.Fuzz(checkNameRules)
}
