package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func BenchmarkRange(b *testing.B) {
	s := &rangeSource{from: 1, to: int64(b.N), step: 1}
	b.ReportAllocs()
	b.ResetTimer()
	s.Items(context.Background(), func(any) error { return nil })
}

func BenchmarkJSONL(b *testing.B) {
	dir := b.TempDir()
	var sb strings.Builder
	const lines = 100_000
	for i := 0; i < lines; i++ {
		fmt.Fprintf(&sb, `{"id": %d, "name": "item-%d", "tags": ["a", "b"], "score": %d.5}`+"\n", i, i, i%100)
	}
	p := filepath.Join(dir, "in.jsonl")
	os.WriteFile(p, []byte(sb.String()), 0o644)
	b.SetBytes(int64(sb.Len()))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s := &fileSource{path: p, jsonl: true}
		if err := s.Items(context.Background(), func(any) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(lines*b.N)/b.Elapsed().Seconds(), "items/s")
}

func BenchmarkLines(b *testing.B) {
	dir := b.TempDir()
	line := strings.Repeat("x", 80) + "\n"
	const lines = 200_000
	p := filepath.Join(dir, "in.txt")
	os.WriteFile(p, []byte(strings.Repeat(line, lines)), 0o644)
	b.SetBytes(int64(len(line) * lines))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s := &fileSource{path: p}
		if err := s.Items(context.Background(), func(any) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
