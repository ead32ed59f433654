package compute

import (
	"context"
	"testing"

	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/steptest"
)

// BenchmarkComputeDouble is the step of the process-mode benchmark
// (bench/pipelines/process.yaml): one integer expression per item.
func BenchmarkComputeDouble(b *testing.B) {
	v, err := steptest.Build(b, Register, "compute", steptest.Node(b, `value: "${ item * 2 }"`), &steps.Env{Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	s := v.(steps.Step)
	ctx := context.Background()
	b.ReportAllocs()
	for i := int64(1000); b.Loop(); i++ {
		if _, err := s.Do(ctx, steps.Input{Index: i, Item: i}); err != nil {
			b.Fatal(err)
		}
	}
}
