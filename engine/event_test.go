package engine

import (
	"context"
	"github.com/flowrun/flow/spec"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/steps"
)

// recordEvents keeps a copy of every event of one stage: the event is only
// valid during ItemDone.
type recordEvents struct {
	stage string
	mu    sync.Mutex
	evs   []ItemEvent
}

func (r *recordEvents) StageStarted(string, int, int64) {}
func (r *recordEvents) StageDone(string)                {}
func (r *recordEvents) ItemDone(ev *ItemEvent) {
	if ev.Stage != r.stage {
		return
	}
	c := *ev
	c.Attempts = append([]Attempt(nil), ev.Attempts...)
	r.mu.Lock()
	r.evs = append(r.evs, c)
	r.mu.Unlock()
}

func (r *recordEvents) byIndex(i int64) *ItemEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.evs {
		if r.evs[k].Index == i {
			return &r.evs[k]
		}
	}
	return nil
}

// Each attempt of an item reaches the event with its worker, its times on
// the engine's clock and its error class: a timeline draws them, and the
// gaps between attempts are the backoff.
func TestItemEventCarriesAttempts(t *testing.T) {
	var mu sync.Mutex
	tries := map[int64]int{}
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		mu.Lock()
		tries[in.Index]++
		n := tries[in.Index]
		mu.Unlock()
		if in.Index == 0 && n < 3 {
			return nil, steps.Errorf("http_5xx", "503")
		}
		if in.Index == 1 {
			return nil, steps.Permanent(steps.Errorf("http_4xx", "404"))
		}
		return in.Item, nil
	}))
	clk := newFakeClock()
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 3}}
  - name: work
    step: fn
    with: {fn: `+step+`}
    workers: 2
    retry: {attempts: 3, backoff: 100ms, jitter: 0}
    on_error: skip
`)
	ev := &recordEvents{stage: "work"}
	runT(t, context.Background(), p, config{clock: clk}, ev)
	e0 := ev.byIndex(0)
	if e0 == nil || e0.Outcome != report.Succeeded || len(e0.Attempts) != 3 {
		t.Fatalf("item 0: %+v", e0)
	}
	var classes []string
	for i, a := range e0.Attempts {
		classes = append(classes, a.Class)
		if !strings.HasPrefix(a.Worker, "thread ") || a.Start.IsZero() || a.End.Before(a.Start) {
			t.Errorf("attempt %d: %+v", i, a)
		}
	}
	if strings.Join(classes, ",") != "http_5xx,http_5xx," {
		t.Errorf("classes %q, want the two failures then a success", classes)
	}
	if g1, g2 := e0.Attempts[1].Start.Sub(e0.Attempts[0].End), e0.Attempts[2].Start.Sub(e0.Attempts[1].End); g1 != 100*time.Millisecond || g2 != 200*time.Millisecond {
		t.Errorf("gaps between attempts %s and %s, want the backoff 100ms and 200ms", g1, g2)
	}
	e1 := ev.byIndex(1)
	if e1 == nil || e1.Outcome != report.Skipped || len(e1.Attempts) != 1 || e1.Attempts[0].Class != "http_4xx" || e1.Err == nil {
		t.Errorf("item 1 (permanent failure): %+v", e1)
	}
	if e2 := ev.byIndex(2); e2 == nil || e2.Outcome != report.Succeeded || len(e2.Attempts) != 1 || e2.Result != int64(2) {
		t.Errorf("item 2: %+v", e2)
	}
}

// The time an item waits on a rate limit is on its event, apart from its
// attempts.
func TestItemEventCarriesLimitWait(t *testing.T) {
	clk := newFakeClock()
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 3}}
  - {name: work, step: pass, workers: 1, rate: 1/s}
`)
	ev := &recordEvents{stage: "work"}
	runT(t, context.Background(), p, config{clock: clk}, ev)
	// One worker: the first token is there at once, each next one a
	// second after the previous start.
	for i, want := range []time.Duration{0, time.Second, time.Second} {
		e := ev.byIndex(int64(i))
		if e == nil || len(e.Attempts) != 1 {
			t.Fatalf("item %d: %+v", i, e)
		}
		if e.Wait != want {
			t.Errorf("item %d waited %s on the rate, want %s", i, e.Wait, want)
		}
	}
}

// The item in a run's reason is redacted before it is cut: a secret that
// straddles the cut leaves no prefix of itself behind.
func TestReasonRedactsBeforeTheCut(t *testing.T) {
	secret := "S3CRETvalue-0123456789"
	item := strings.Repeat("x", 70) + secret
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		return nil, steps.Errorf("error", "refused")
	}))
	p := parse(t, `
version: 1
vars:
  token: {default: "`+secret+`", secret: true}
stages:
  - {name: src, source: {src: `+fn(sourceFunc(func(ctx context.Context, emit func(any) error) error { return emit(item) }))+`}}
  - {name: work, step: fn, with: {fn: `+step+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	// Redacted first, the item is 73 characters and needs no cut at all.
	if rep.Status != report.StatusFailed || !strings.Contains(rep.Reason, "("+strings.Repeat("x", 70)+"***)") {
		t.Fatalf("status %s, reason %q", rep.Status, rep.Reason)
	}
	for i := 4; i <= len(secret); i++ {
		if strings.Contains(rep.Reason, secret[:i]) {
			t.Fatalf("the reason holds %q, a prefix of the secret: %s", secret[:i], rep.Reason)
		}
	}
}

// With order: input and on_error: fail, the results before the failing
// item are handed on, as executor.map yields them before it raises; none
// after it, and the run stops without reading the rest of the source.
func TestOrderedFailureHandsOnWhatCameBefore(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		switch {
		case in.Index == 5:
			return nil, steps.Errorf("error", "bad item")
		case in.Index < 5:
			// Earlier items finish after the failure is known.
			time.Sleep(50 * time.Millisecond)
		}
		return in.Item, nil
	}))
	col := &collector{keep: true}
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 1000000000}}
  - {name: work, step: fn, with: {fn: `+step+`}, workers: 8}
  - {name: out, sink: {collect: `+fn(col)+`}}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	if rep.Status != report.StatusFailed {
		t.Fatalf("status %s", rep.Status)
	}
	got := col.indexes()
	if len(got) != 5 {
		t.Fatalf("handed on %v, want the 5 items before the failing one", got)
	}
	for i, x := range got {
		if x != int64(i) {
			t.Fatalf("handed on %v", got)
		}
	}
}

// complete: first where every item fails is a failure, as
// wait(FIRST_COMPLETED) and .result() raise: not an empty success.
func TestCompleteFirstWithNoSuccessFails(t *testing.T) {
	step := fn(steps.Func(func(ctx context.Context, in steps.Input) (any, error) {
		return nil, steps.Errorf("error", "down")
	}))
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 3}}
  - {name: work, step: fn, with: {fn: `+step+`}, complete: first, on_error: skip}
`)
	rep := runT(t, context.Background(), p, config{}, nil)
	if rep.Status != report.StatusFailed || rep.ExitCode != 1 || !strings.Contains(rep.Reason, "complete: first wanted 1 success(es) and got 0") {
		t.Fatalf("status %s exit %d: %s", rep.Status, rep.ExitCode, rep.Reason)
	}
}

// cachedRunner answers from a "cache" for even items.
type cachedRunner struct{}

func (cachedRunner) Do(ctx context.Context, in steps.Input, at *Attempt) (any, error) {
	at.Cached = in.Index%2 == 0
	return in.Item, nil
}
func (cachedRunner) Close() error { return nil }

// A runner that answers from a cache says so on the attempt; the stage
// counts those successes apart.
func TestCachedAttemptsAreCounted(t *testing.T) {
	p := parse(t, `
version: 1
stages:
  - {name: src, source: {nums: 10}}
  - {name: work, step: pass, mode: process}
`)
	ev := &recordEvents{stage: "work"}
	rep, err := Run(context.Background(), p, Options{Registry: reg, Stdout: io.Discard, Events: ev,
		Runners: Runners{spec.ModeProcess: func(StageRun) (Runner, error) { return cachedRunner{}, nil }}})
	if err != nil {
		t.Fatal(err)
	}
	if w := stageOf(t, rep, "work"); w.Succeeded != 10 || w.Cached != 5 {
		t.Fatalf("work %+v", *w)
	}
	if e := ev.byIndex(4); e == nil || len(e.Attempts) != 1 || !e.Attempts[0].Cached {
		t.Errorf("item 4: %+v", e)
	}
}
