package main

import (
	"regexp"
	"testing"
)

// The closing summary never says a sink's items are "ok" when the run
// failed and the sink wrote nothing: a write: sink leaves the old file in
// place, so the items it was handed were not written.
func TestSummaryFailedRunWroteNothing(t *testing.T) {
	// The first item reaches the sink at once; the second fails a second
	// later and stops the run. (The second only orders the two: were the
	// first cancelled instead, the test says so rather than pass.)
	r := relRun(t, `version: 1
name: wrote-nothing
stages:
  - name: numbers
    source: {items: [1, 2]}
  - name: check
    step: compute
    workers: 1
    with:
      value: "${ item == 2 ? (sleep('1s') == nil ? fail('two is not allowed') : item) : item }"
  - name: out
    sink: {write: out.jsonl}
`)
	r.check(t, 1, 3, nil)
	handed := r.stage(t, "out").Succeeded
	if handed == 0 {
		t.Fatalf("the first item did not reach the sink before the failure; the test needs it to\nstderr:\n%s", r.stderr)
	}
	summary := regexp.MustCompile(`(?m)^flow: wrote-nothing failed in .*$`).FindString(r.stderr)
	if summary == "" {
		t.Fatalf("no summary line on stderr:\n%s", r.stderr)
	}
	if want := regexp.MustCompile(`\| out 1 not written$`); !want.MatchString(summary) {
		t.Errorf("summary %q, want it to end with \"| out 1 not written\"", summary)
	}
	if regexp.MustCompile(`out \d+ ok`).MatchString(summary) {
		t.Errorf("summary %q counts the sink's items as ok; out.jsonl kept its old content", summary)
	}
}
