package main

import (
	"strings"
	"testing"
)

// Item and error text reaches stderr escaped: an item cannot colour or
// clear the terminal, nor forge a line that looks like flow's own summary
// (issue 13, class 8).
func TestHostileTextOnStderr(t *testing.T) {
	r := relRun(t, `version: 1
stages:
  - {name: src, source: {items: ["a\u001b[2J\u001b[31mRED\nflow: all 5 stages succeeded \u202eevil"]}}
  - {name: bad, step: compute, with: {value: "${ fail(item) }"}}
  - {name: out, sink: {write: {path: out.jsonl}}}
`)
	if r.code != 1 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	if strings.ContainsAny(r.stderr, "\x1b\u202e") {
		t.Errorf("an escape sequence or a bidi control reached stderr raw:\n%q", r.stderr)
	}
	for _, line := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(line, "flow: all 5 stages succeeded") {
			t.Errorf("the item forged a line of its own on stderr:\n%s", r.stderr)
		}
	}
	if !strings.Contains(r.stderr, `\x1b[31mRED\nflow: all 5 stages succeeded`) {
		t.Errorf("the item is not shown escaped:\n%s", r.stderr)
	}
}
