package sink

import (
	"context"
	"io"
	"testing"

	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

func BenchmarkPrintJSONL(b *testing.B) {
	s, err := newPrint(&PrintConfig{Format: "jsonl"}, &steps.Env{Stdout: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	sink := s.(steps.Sink)
	item := map[string]any{"file": "a.log", "lines": int64(1200), "errors": int64(3), "warnings": int64(14)}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := sink.Write(context.Background(), steps.Record{Index: int64(i), Item: item}); err != nil {
			b.Fatal(err)
		}
	}
	sink.Close(context.Background(), nil)
}

func BenchmarkWriteCSV(b *testing.B) {
	env := &steps.Env{Dir: b.TempDir()}
	s, err := newWrite(&WriteConfig{Path: mustTmpl(b, "out.csv")}, env)
	if err != nil {
		b.Fatal(err)
	}
	sink := s.(steps.Sink)
	item := map[string]any{"file": "a.log", "lines": int64(1200), "errors": int64(3), "warnings": int64(14)}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := sink.Write(context.Background(), steps.Record{Index: int64(i), Item: item}); err != nil {
			b.Fatal(err)
		}
	}
	if err := sink.Close(context.Background(), nil); err != nil {
		b.Fatal(err)
	}
}

func mustTmpl(b *testing.B, s string) *tmpl.T {
	t, err := tmpl.Compile(s)
	if err != nil {
		b.Fatal(err)
	}
	return t
}
