package sink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/steps"
)

// Printing through WriteBatch (the engine's BatchSink) gives the same bytes
// as record by record, in every format, integers included (jsonl writes
// them without its encoder).
func TestPrintWriteBatchMatchesWrite(t *testing.T) {
	recs := append(records(),
		steps.Record{Index: 4, Item: int64(0)},
		steps.Record{Index: 5, Item: int64(math.MinInt64)},
		steps.Record{Index: 6, Item: int64(math.MaxInt64)},
		steps.Record{Index: 7, Item: -42},
		steps.Record{Index: 8, Item: int64(7), Err: errBoom},
		steps.Record{Index: 9, Item: "text"},
	)
	for _, src := range []string{`print: jsonl`, `print: json`, `print: {format: jsonl, columns: [file]}`} {
		want, _ := run(t, src, recs)
		var out bytes.Buffer
		s, err := build(t, src, &steps.Env{Stdout: &out, Stderr: &bytes.Buffer{}})
		if err != nil {
			t.Fatal(err)
		}
		bs, ok := s.(engine.BatchSink)
		if !ok {
			t.Fatalf("the print sink is not an engine.BatchSink")
		}
		if n, err := bs.WriteBatch(context.Background(), recs); n != len(recs) || err != nil {
			t.Fatalf("%s: WriteBatch wrote %d of %d: %v", src, n, len(recs), err)
		}
		if err := s.Close(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("%s: WriteBatch printed\n%s\nWrite printed\n%s", src, out.String(), want)
		}
	}
	// The integers as encoding/json writes them.
	out, _ := run(t, `print: jsonl`, recs[4:8])
	var lines []string
	for _, r := range recs[4:8] {
		b, _ := json.Marshal(r.Item)
		lines = append(lines, string(b))
	}
	if want := strings.Join(lines, "\n") + "\n"; out != want {
		t.Errorf("integers printed\n%s\nwant\n%s", out, want)
	}
}

// A failed write stops the batch at the failing record and fails every
// later one.
func TestPrintWriteBatchFailure(t *testing.T) {
	s, err := build(t, `print: jsonl`, &steps.Env{Stdout: failWriter{errors.New("broken pipe")}})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 70<<10) // more than the buffer: written at once
	recs := []steps.Record{{Index: 0, Item: int64(1)}, {Index: 1, Item: big}, {Index: 2, Item: int64(3)}}
	n, err := s.(engine.BatchSink).WriteBatch(context.Background(), recs)
	if n != 1 {
		t.Errorf("wrote %d records before the failure, want 1", n)
	}
	errContains(t, err, "standard output", "broken pipe")
	if n, err := s.(engine.BatchSink).WriteBatch(context.Background(), recs); n != 0 || err == nil {
		t.Errorf("after a failure: wrote %d, err %v", n, err)
	}
}

// A cancelled context stops a batch before its next record, and the sink
// stays usable (the engine cancels the rest; it is not a write failure).
func TestPrintWriteBatchStopsWhenCancelled(t *testing.T) {
	var out bytes.Buffer
	s, err := build(t, `print: jsonl`, &steps.Env{Stdout: &out, Stderr: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	recs := []steps.Record{{Index: 0, Item: int64(1)}, {Index: 1, Item: int64(2)}}
	if n, err := s.(engine.BatchSink).WriteBatch(ctx, recs); n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("wrote %d, err %v; want 0 and context.Canceled", n, err)
	}
	if err := s.Write(context.Background(), recs[0]); err != nil {
		t.Fatalf("Write after a cancelled batch: %v", err)
	}
	if err := s.Close(context.Background(), nil); err != nil || out.String() != "1\n" {
		t.Fatalf("printed %q, close: %v", out.String(), err)
	}
}
