package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flow/steps"
)

// chaos decides, from a hash of (seed, stage, item, attempt), what one
// attempt does: fail, panic, hang until cancelled, or sleep a little.
func chaos(seed uint64, stage string, pFail, pPanic, pHang float64) steps.Func {
	return func(ctx context.Context, in steps.Input) (any, error) {
		h := fnv.New64a()
		fmt.Fprintf(h, "%d/%s/%d", seed, stage, in.Index)
		r := rand.New(rand.NewPCG(h.Sum64(), uint64(time.Now().UnixNano()))) // attempts differ
		x := r.Float64()
		switch {
		case x < pPanic:
			panic(fmt.Sprintf("chaos panic on %d", in.Index))
		case x < pPanic+pHang:
			<-ctx.Done()
			return nil, ctx.Err()
		case x < pPanic+pHang+pFail:
			if r.IntN(2) == 0 {
				return nil, steps.Errorf("http_5xx", "chaos 503 on %d", in.Index)
			}
			return nil, steps.Permanent(errors.New("chaos bad input"))
		}
		if d := r.IntN(300); d < 100 {
			select {
			case <-time.After(time.Duration(d) * 10 * time.Microsecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return in.Item, nil
	}
}

type genStage struct {
	order string
	yaml  string
}

func genPipeline(r *rand.Rand, seed uint64, col *collector) (string, []genStage, bool) {
	var b strings.Builder
	n := r.IntN(400)
	fmt.Fprintf(&b, "version: 1\n")
	if r.IntN(8) == 0 {
		fmt.Fprintf(&b, "timeout: %dms\n", 5+r.IntN(60))
	}
	limited := r.IntN(4) == 0
	if limited {
		fmt.Fprintf(&b, "limits:\n  shared: {rate: %d/s, burst: 50, concurrency: %d}\n", 20000+r.IntN(50000), 1+r.IntN(6))
	}
	// Half the runs take the source's items in bulk (BulkSource).
	fmt.Fprintf(&b, "stages:\n  - {name: src, source: {%s: %d}}\n", []string{"nums", "bulknums"}[r.IntN(2)], n)
	var gs []genStage
	hangs := false
	for i := range 1 + r.IntN(3) {
		name := fmt.Sprintf("s%d", i)
		pFail, pPanic, pHang := 0.0, 0.0, 0.0
		switch r.IntN(4) {
		case 1:
			pFail = 0.05
		case 2:
			pFail, pPanic = 0.1, 0.02
		case 3:
			pFail = 0.3
		}
		var opts []string
		if r.IntN(3) == 0 {
			pHang = 0.05
			opts = append(opts, fmt.Sprintf("timeout: %dms", 1+r.IntN(10)))
		}
		if r.IntN(10) == 0 {
			opts = append(opts, fmt.Sprintf("deadline: %dms", 10+r.IntN(50)))
		}
		if pHang > 0 {
			hangs = true
		}
		order := []string{"input", "completion", "key"}[r.IntN(3)]
		opts = append(opts, "order: "+order)
		if order == "key" {
			opts = append(opts, fmt.Sprintf(`key: "${ item %% %d }"`, 1+r.IntN(7)))
		}
		opts = append(opts, fmt.Sprintf("workers: %d", 1+r.IntN(8)))
		switch onErr := []string{"fail", "skip", "keep"}[r.IntN(3)]; onErr {
		case "fail":
			opts = append(opts, "on_error: fail")
		default:
			opts = append(opts, "on_error: "+onErr)
			if r.IntN(2) == 0 {
				opts = append(opts, fmt.Sprintf("max_errors: %d", r.IntN(10)+1))
			}
		}
		switch r.IntN(6) {
		case 0:
			opts = append(opts, "complete: first")
		case 1:
			opts = append(opts, fmt.Sprintf("complete: {first: %d}", 1+r.IntN(20)))
		}
		if r.IntN(3) == 0 {
			opts = append(opts, fmt.Sprintf("retry: {attempts: %d, backoff: 1ms, max_backoff: 2ms, jitter: 0.5}", 2+r.IntN(2)))
		}
		if r.IntN(5) == 0 {
			// Kept failures (maps) are filtered out too.
			opts = append(opts, `when: "${ type(item) != 'map' && item % 3 != 1 }"`)
		}
		if limited && r.IntN(2) == 0 {
			opts = append(opts, "limit: shared")
		}
		f := fn(chaos(seed, name, pFail, pPanic, pHang))
		y := fmt.Sprintf("  - {name: %s, step: fn, with: {fn: %s}, %s}\n", name, f, strings.Join(opts, ", "))
		gs = append(gs, genStage{order: order, yaml: y})
		b.WriteString(y)
	}
	// Half the runs write through a BatchSink.
	fmt.Fprintf(&b, "  - {name: out, sink: {%s: %s}}\n", []string{"collect", "bcollect"}[r.IntN(2)], fn(col))
	return b.String(), gs, hangs
}

// TestRandomPipelines runs random pipelines with random failures, panics,
// hangs, timeouts, deadlines, retries, limits, orders and policies, some of
// them interrupted, and checks the accounting invariant, the hand-offs
// between stages and the ordering guarantees every time. TestMain checks
// that no goroutine outlives the runs.
func TestRandomPipelines(t *testing.T) {
	runs := 150
	if testing.Short() {
		runs = 30
	}
	base := uint64(time.Now().UnixNano())
	statuses := map[string]int{}
	defer func() { t.Logf("statuses: %v", statuses) }()
	for i := range runs {
		seed := base + uint64(i)
		r := rand.New(rand.NewPCG(seed, 7))
		col := &collector{keep: true}
		src, gs, _ := genPipeline(r, seed, col)
		p := parse(t, src)
		ctx, cancel := context.WithCancel(context.Background())
		if r.IntN(6) == 0 {
			time.AfterFunc(time.Duration(r.IntN(20))*time.Millisecond, cancel)
		}
		ev := newCountingEvents()
		rep := runT(t, ctx, p, config{}, ev)
		cancel()
		for _, st := range rep.Stages {
			var n int64
			for _, c := range ev.items[st.Name] {
				n += c
			}
			if n != st.In || ev.items[st.Name]["succeeded"] != st.Succeeded || ev.items[st.Name]["cancelled"] != st.Cancelled || ev.done[st.Name] != 1 {
				t.Errorf("stage %s: events %v (done %d) disagree with the report %+v", st.Name, ev.items[st.Name], ev.done[st.Name], *st)
			}
		}
		if t.Failed() {
			t.Fatalf("seed %d, pipeline:\n%s\nreport: %+v", seed, src, rep)
		}
		last := rep.Stages[len(rep.Stages)-2]
		sink := rep.Stages[len(rep.Stages)-1]
		if got := int64(len(col.recs)); got != sink.Succeeded || sink.In != last.Out {
			t.Fatalf("seed %d: the sink wrote %d records, report says %d (last step handed on %d)\n%s", seed, got, sink.Succeeded, last.Out, src)
		}
		allInput := true
		for _, g := range gs {
			allInput = allInput && g.order == "input"
		}
		idx := col.indexes()
		if allInput {
			for j := 1; j < len(idx); j++ {
				if idx[j] <= idx[j-1] {
					t.Fatalf("seed %d: order: input everywhere, but item %d left after %d\n%s", seed, idx[j], idx[j-1], src)
				}
			}
		}
		statuses[string(rep.Status)]++
		if rep.Status == "succeeded" && rep.ExitCode != 0 {
			t.Fatalf("seed %d: succeeded with exit %d", seed, rep.ExitCode)
		}
	}
}

// TestRandomKeyOrder checks the key ordering guarantee on its own: items of
// one key leave in input order, whatever the latencies and worker counts.
func TestRandomKeyOrder(t *testing.T) {
	for i := range 20 {
		seed := uint64(time.Now().UnixNano()) + uint64(i)
		r := rand.New(rand.NewPCG(seed, 9))
		keys := 1 + r.IntN(9)
		col := &collector{keep: true}
		p := parse(t, fmt.Sprintf(`
version: 1
stages:
  - {name: src, source: {nums: %d}}
  - {name: k, step: fn, with: {fn: %s}, order: key, key: "${ item %% %d }", workers: %d}
  - {name: out, sink: {collect: %s}}
`, 50+r.IntN(300), fn(chaos(seed, "k", 0, 0, 0)), keys, 1+r.IntN(16), fn(col)))
		rep := runT(t, context.Background(), p, config{}, nil)
		if rep.Status != "succeeded" {
			t.Fatalf("seed %d: %s %s", seed, rep.Status, rep.Reason)
		}
		last := map[int64]int64{}
		for _, x := range col.indexes() {
			k := x % int64(keys)
			if prev, ok := last[k]; ok && prev > x {
				t.Fatalf("seed %d: key %d: item %d after %d", seed, k, x, prev)
			}
			last[k] = x
		}
	}
}
