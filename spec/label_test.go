package spec

import (
	"regexp"
	"strings"
	"testing"
)

// ValidLabel is written out by hand to spare start-up a regexp compile; it
// must accept exactly what the regexp it replaced accepted.
func TestValidLabelMatchesItsRegexp(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	cases := []string{"", "a", "A", "0", "-", "_", "a-", "a_", "-a", "_a", "gpu", "gpu-1", "eu_west", "a.b", "a b", "a*", "a>",
		"é", "aé", "a\n", "\na", strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65), "a" + strings.Repeat("-", 63),
		"a" + strings.Repeat("_", 64), "Zz09-_", "a\x00"}
	for c := 0; c < 256; c++ {
		cases = append(cases, string(rune(c)), "x"+string([]byte{byte(c)}), string([]byte{byte(c)})+"x")
	}
	for _, l := range cases {
		if got, want := ValidLabel(l), re.MatchString(l); got != want {
			t.Errorf("ValidLabel(%q) = %v, the regexp says %v", l, got, want)
		}
	}
}

func FuzzValidLabel(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	f.Add("gpu-1")
	f.Fuzz(func(t *testing.T, l string) {
		if got, want := ValidLabel(l), re.MatchString(l); got != want {
			t.Errorf("ValidLabel(%q) = %v, the regexp says %v", l, got, want)
		}
	})
}
