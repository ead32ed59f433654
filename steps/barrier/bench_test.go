package barrier

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

func benchBarrier(b *testing.B, mk func() steps.Barrier) {
	const n = 100_000
	r := rand.New(rand.NewPCG(1, 2))
	items := make([]any, n)
	for i := range items {
		items[i] = map[string]any{"errors": int64(r.IntN(1000))}
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		bar := mk()
		for j, it := range items {
			bar.Add(steps.Input{Index: int64(j), Item: it})
		}
		bar.Flush(context.Background(), func(steps.Input) error { return nil })
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "items/s")
}

func by(b *testing.B) *tmpl.T {
	t, err := tmpl.Compile("${ item.errors }")
	if err != nil {
		b.Fatal(err)
	}
	return t
}

func BenchmarkSort100k(b *testing.B) {
	t := by(b)
	benchBarrier(b, func() steps.Barrier {
		s, _ := newSort(&SortConfig{By: t, Desc: true}, &steps.Env{})
		return s.(steps.Barrier)
	})
}

func BenchmarkTop5of100k(b *testing.B) {
	t := by(b)
	benchBarrier(b, func() steps.Barrier {
		s, _ := newTop(&TopConfig{N: 5, By: t, Desc: true}, &steps.Env{})
		return s.(steps.Barrier)
	})
}
