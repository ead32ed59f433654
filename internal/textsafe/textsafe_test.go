package textsafe

import "testing"

func TestLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, é and 日本":          "plain text, é and 日本",
		"a\x1b[31mRED\x1b[0m":           `a\x1b[31mRED\x1b[0m`,
		"x\nflow: all stages succeeded": `x\nflow: all stages succeeded`,
		"cr\roverwrite":                 `cr\roverwrite`,
		"tab\there":                     `tab\there`,
		"bell\a del\x7f":                `bell\x07 del\x7f`,
		"c1 \u009b31m":                  `c1 \u009b31m`,
		"rtl \u202eevil\u202c":          `rtl \u202eevil\u202c`,
		"bad \xff\xfe utf8":             `bad \xff\xfe utf8`,
		"":                              "",
	} {
		if got := Line(in); got != want {
			t.Errorf("Line(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzLine(f *testing.F) {
	f.Add("a\x1b[2J\n\r\u202e\xff")
	f.Fuzz(func(t *testing.T, s string) {
		out := Line(s)
		for i := 0; i < len(out); i++ {
			if c := out[i]; c < 0x20 || c == 0x7f {
				t.Fatalf("control byte %#x left in %q", c, out)
			}
		}
		for _, r := range out {
			if unsafeRune(r) {
				t.Fatalf("unsafe rune %U left in %q", r, out)
			}
		}
	})
}
