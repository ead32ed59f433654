package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// Many items through worker processes, end to end: they cross the pipes in
// the compact frames of protocol version 2, by the thousand, in batches
// that mix successes and failures; results leave in input order, failed
// items are retried (through Do) and then skipped, each accounted once.
func TestHostileProcessManyItemsInOrder(t *testing.T) {
	const n, every = 20000, 997
	r := relRun(t, fmt.Sprintf(`version: 1
stages:
  - name: src
    source: {range: {from: 1, to: %d}}
  - name: work
    step: compute
    mode: process
    workers: 2
    on_error: skip
    retry: {attempts: 2, backoff: 1ms}
    with:
      value: "${ item %% %d == 0 ? fail('bad item ' + string(item)) : {'n': item, 'twice': item * 2, 's': 'é' + string(-item)} }"
  - name: out
    sink: {write: {path: out.jsonl}}
`, n, every))
	var want []string
	for i := 1; i <= n; i++ {
		if i%every != 0 {
			want = append(want, fmt.Sprintf(`{"n":%d,"s":"é%d","twice":%d}`, i, -i, 2*i))
		}
	}
	r.check(t, 0, 3, want)
	w := r.stage(t, "work")
	bad := int64(n / every)
	if w.Succeeded != n-bad || w.Skipped != bad || w.Retries != bad {
		t.Errorf("work: %d ok, %d skipped, %d retries; want %d, %d, %d", w.Succeeded, w.Skipped, w.Retries, n-bad, bad, bad)
	}
	f := r.failure(t, "work")
	if !strings.HasPrefix(f.Error, "bad item ") || f.Attempts != 2 {
		t.Errorf("failure %+v, want 'bad item' after 2 attempts", f)
	}
	if lines := relLines(t, filepath.Join(r.dir, "out.jsonl")); len(lines) != len(want) {
		t.Errorf("%d lines, want %d", len(lines), len(want))
	}
}
