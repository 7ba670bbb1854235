package lifecycle

import (
	"errors"
	"fmt"
	"testing"
)

// TestTransitionTable checks every (from, to) pair against a table written
// out by hand, so a change to the rules must change this table too.
func TestTransitionTable(t *testing.T) {
	want := map[string]bool{
		"pre-active>active":       true,
		"pre-active>deactivated":  true,
		"pre-active>compromised":  true,
		"active>deactivated":      true,
		"active>compromised":      true,
		"deactivated>compromised": true,
		"deactivated>destroyed":   true,
		"compromised>destroyed":   true,
	}
	n := 0
	for _, from := range All {
		for _, to := range All {
			key := fmt.Sprintf("%s>%s", from, to)
			err := Check(from, to)
			if want[key] {
				n++
				if err != nil {
					t.Errorf("%s: refused: %v", key, err)
				}
				continue
			}
			if err == nil {
				t.Errorf("%s: allowed, want refused", key)
			} else if !errors.Is(err, ErrIllegal) {
				t.Errorf("%s: error %v does not wrap ErrIllegal", key, err)
			}
		}
	}
	if n != len(want) {
		t.Fatalf("checked %d legal transitions, table has %d", n, len(want))
	}
}

func TestMessages(t *testing.T) {
	for _, c := range []struct {
		from, to State
		want     string
	}{
		{Active, Destroyed, "deactivate it"},
		{Destroyed, Active, "destroyed; nothing can change it"},
		{Active, Active, "already active"},
		{Deactivated, Active, "can become [compromised destroyed]"},
		{"bogus", Active, "unknown current state"},
		{Active, "bogus", "unknown target state"},
	} {
		err := Check(c.from, c.to)
		if err == nil || !contains(err.Error(), c.want) {
			t.Errorf("%s->%s: %v, want it to mention %q", c.from, c.to, err, c.want)
		}
	}
	if Usable(Destroyed) || !Usable(Compromised) || CanProtect(Deactivated) || !CanProtect(Active) {
		t.Fatal("Usable/CanProtect disagree with the documented rules")
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
