package spec_test

import (
	"strings"
	"testing"

	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/spec/spectest"
)

// TestYAMLMistakes: the YAML mistakes people make most are said in a
// person's words, at the line and column of the mistake, where yaml.v3 says
// what its grammar expected at the line where the enclosing block began.
func TestYAMLMistakes(t *testing.T) {
	const head = "version: 1\nstages:\n  - name: a\n    source: {items: [1, 2]}\n  - name: b\n    step: compute\n"
	cases := []struct {
		name, src, want string
	}{
		{"tab indents a key", head + "\twith:\n      value: 1\n",
			"p.yaml:7:1: tabs cannot indent YAML; use spaces"},
		{"tab after spaces", head + "    with:\n  \t  value: 1\n",
			"p.yaml:8:3: tabs cannot indent YAML; use spaces"},
		{"tab at the stage", "version: 1\nstages:\n  - name: a\n\tsource: stdin\n",
			"p.yaml:4:1: tabs cannot indent YAML; use spaces"},
		{"unquoted expression in a flow mapping", head + "    with: {value: ${ item }}\n",
			`p.yaml:7:19: quote an expression that starts a value: "${ item }"`},
		{"unquoted expression as a nested value", head + "    with:\n      value: {n: ${ item * 2 }, m: 1}\n",
			`p.yaml:8:18: quote an expression that starts a value: "${ item * 2 }"`},
		{"unquoted expression in a flow list", head + "    with:\n      value: [${ item }, 1]\n",
			`p.yaml:8:15: quote an expression that starts a value: "${ item }"`},
		{"with: indented more than step:", head[:len(head)-len("    step: compute\n")] + "    step: compute\n     with:\n      value: 1\n",
			"p.yaml:7:6: with: is indented more than step: on line 6; keys of one mapping must start in the same column: move with: to column 5"},
		{"with: indented less than step:", head + "  with:\n      value: 1\n",
			"p.yaml:7:3: with: is indented less than step: on line 6, so it is neither in that mapping nor a new list entry: move with: to column 5"},
		{"a colon in a plain value", head + "    with:\n      value: ${ item }: x\n",
			`p.yaml:8:23: the value of value: holds ": ", which YAML reads as the start of another key; quote the whole value: value: "${ item }: x"`},
		{"an unclosed quote", head + "    with:\n      value: \"${ item }\n  - name: c\n    step: compute\n",
			`p.yaml:8:14: this "-quoted string is never closed: add the closing " on this line`},
		{"a quote inside plain text is no quote", "version: 1\nname: it's x\ndescription: \"abc\n",
			`p.yaml:3:14: this "-quoted string is never closed`},
		{"an unclosed brace", "version: 1\nstages:\n  - name: a\n    source: {items: [1, 2]\n  - name: b\n    step: compute\n",
			"p.yaml:4:13: this { is never closed: close it with }"},
		{"options beside with: instead of under it", head + "    with:\n    value: 1\n",
			"p.yaml:8:5: value: is not a stage key: options of the step go under with: (line 7), indented more than it, e.g. in column 7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := spec.Parse("p.yaml", []byte(c.src), spec.Options{}, spectest.Registry())
			if err == nil {
				t.Fatalf("no error for:\n%s", c.src)
			}
			if got := err.Error(); !strings.HasPrefix(got, c.want) || strings.Contains(got, "\n") {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
		})
	}
}

// TestYAMLOtherErrorsKeepTheirLine: a mistake none of the above explains is
// still reported with yaml.v3's words at its line.
func TestYAMLOtherErrorsKeepTheirLine(t *testing.T) {
	_, err := spec.Parse("p.yaml", []byte("version: 1\nstages: [\n"), spec.Options{}, spectest.Registry())
	if err == nil || !strings.HasPrefix(err.Error(), "p.yaml:") || !strings.Contains(err.Error(), "invalid YAML: ") {
		t.Fatalf("err = %v", err)
	}
}

// TestYAMLTypoAfterEmptyWith: a near miss of a stage key after an empty
// with: is a typo, said with the decoder's suggestion, not an option out of
// place.
func TestYAMLTypoAfterEmptyWith(t *testing.T) {
	src := "version: 1\nstages:\n  - name: a\n    source: {items: [1]}\n  - name: b\n    step: compute\n    with:\n    timout: 5s\n"
	_, err := spec.Parse("p.yaml", []byte(src), spec.Options{}, spectest.Registry())
	want := `p.yaml:8:5: unknown key "timout" (did you mean "timeout"?)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v\nwant a line %s", err, want)
	}
}
