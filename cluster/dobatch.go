package cluster

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/taskq"
)

var _ engine.BatchRunner = (*Runner)(nil)

// DoBatch runs many items, as engine.BatchRunner: their tasks are made in
// one allocation, their values encoded into one buffer and queued at once,
// and each is answered through done by the goroutine that reads the
// results stream, with no goroutine of the engine waiting per item (which
// cost more than a trivial item's whole trip). From the queue on the items
// travel exactly as Do's: batches to the work stream, redelivery, fencing
// of late answers, the max-deliveries advisory.
//
// The engine only batches stages without a per-attempt timeout and without
// complete: first; those go through Do, as do retries. A transfer: true
// stage never gets here (Factory hides DoBatch from the engine: see
// fileRunner).
func (r *Runner) DoBatch(ctx context.Context, items []engine.BatchItem, done func(i int, v any, err error)) {
	r.batched.Add(int64(len(items)))
	if err := ctx.Err(); err != nil {
		for i := range items {
			done(i, nil, err)
		}
		return
	}
	if e := r.noWorker.Load(); e != nil {
		for i := range items {
			done(i, nil, *e)
		}
		return
	}
	n := len(items)
	c := &call{r: r, items: items, done: done, all: make(chan struct{}, 1)}
	// Encode first, slice after: the buffer moves while it grows. It is
	// the call's own, never reused: a message is built from it after the
	// tasks were handed to the publisher.
	ends := make([]int, n)
	raw := make([]byte, 0, 16*n)
	for i := range items {
		start := len(raw)
		var err error
		if raw, err = protocol.AppendValue(raw, items[i].In.Item); err != nil {
			raw = raw[:start]
			ends[i] = -1
			done(i, nil, steps.Permanent(fmt.Errorf("the item cannot be sent to a worker: %w", err)))
			continue
		}
		ends[i] = len(raw)
	}
	tasks := make([]task, n)
	ptrs := make([]*task, 0, n)
	id := r.nextID.Add(uint64(n)) - uint64(n)
	start := 0
	for i := range items {
		if ends[i] < 0 {
			continue
		}
		item := raw[start:ends[i]:ends[i]]
		start = ends[i]
		if r.taken(items[i], item, done, i) {
			continue
		}
		t := &tasks[i]
		t.Init(id+uint64(i)+1, items[i].In, item, c, i)
		ptrs = append(ptrs, t)
	}
	if len(ptrs) == 0 {
		return
	}
	c.left.Store(int64(len(ptrs)))
	if err := r.queue.PushAll(ptrs); err != nil {
		for _, t := range ptrs {
			done(t.Slot, nil, err)
		}
		return
	}
	select {
	case <-c.all:
		return
	case <-ctx.Done():
	}
	// As Do: what no worker holds yet is dropped, what one holds is
	// withdrawn and cancelled on it; what was answered meanwhile keeps
	// its answer.
	for _, t := range ptrs {
		if err, took := r.withdraw(t, ctx); took {
			c.answer(t.Slot, nil, err)
		}
	}
	<-c.all
}

// taken answers items[i] from an earlier run that this one takes up
// (RunOptions.Resume), as Do does, and reports whether it did.
func (r *Runner) taken(it engine.BatchItem, raw []byte, done func(int, any, error), i int) bool {
	if len(r.answers) == 0 {
		return false // a new run: no key to build per item
	}
	a, ok := r.answers[answerKey(r.hello, it.In.Index, raw)]
	if !ok {
		return false
	}
	v, err := a.value()
	if err != nil {
		return false
	}
	if it.At != nil {
		it.At.Cached, it.At.Worker = true, a.worker
	}
	done(i, v, nil)
	return true
}

// call is one DoBatch call, the taskq.Group of its tasks.
type call struct {
	r     *Runner
	items []engine.BatchItem
	done  func(int, any, error)
	left  atomic.Int64  // tasks not yet answered
	all   chan struct{} // the last answer was given
}

// Settled is called once per task by whoever settled it (an answer, a
// failed publish, the advisory of a poison batch, a closed queue), after
// the last move of its Holder.
func (c *call) Settled(t *task, v any, err error) {
	if b := t.Holder; b != nil {
		if at := c.items[t.Slot].At; at != nil {
			// The batch's worker and delivery are those of the answer
			// that settled it, written under r.mu; a delivery after a
			// worker's death is not one of the item's retries.
			c.r.mu.Lock()
			at.Worker, at.Redelivered = b.worker, max(0, b.delivery-1)+int(t.Redelivered.Load())
			c.r.mu.Unlock()
		}
	}
	c.answer(t.Slot, v, err)
}

func (c *call) answer(i int, v any, err error) {
	c.done(i, v, err)
	if c.left.Add(-1) == 0 {
		c.all <- struct{}{}
	}
}

// withdraw takes t back for a caller whose ctx ended: took is false when
// t was settled first (its outcome is on its way), else err says what
// became of it. An item a worker holds is cancelled there, and its answer,
// if one comes, is ignored.
func (r *Runner) withdraw(t *task, ctx context.Context) (err error, took bool) {
	for {
		switch t.State.Load() {
		case taskq.Queued:
			if t.State.CompareAndSwap(taskq.Queued, taskq.Abandoned) {
				return fmt.Errorf("stopped while waiting for a cluster worker: %w", ctx.Err()), true
			}
		case taskq.Sent:
			if t.State.CompareAndSwap(taskq.Sent, taskq.Abandoned) {
				r.mu.Lock()
				last := r.unsend(t)
				r.mu.Unlock()
				if last {
					r.retire([]*batch{t.Holder})
				}
				r.cancel(t.ID)
				return fmt.Errorf("withdrawn from the cluster worker running it: %w", ctx.Err()), true
			}
		default:
			return nil, false
		}
	}
}

// fileRunner is the runner of a transfer: true stage: each item ships its
// files through the bucket and is bounded by the stage's workers (see
// Factory), which a batch of hundreds of items handed over at once would
// not respect; so it offers the engine Do only, not DoBatch.
type fileRunner struct{ r *Runner }

var (
	_ engine.Runner     = fileRunner{}
	_ engine.InFlighter = fileRunner{}
)

func (f fileRunner) Do(ctx context.Context, in steps.Input, at *engine.Attempt) (any, error) {
	return f.r.Do(ctx, in, at)
}
func (f fileRunner) Close() error  { return f.r.Close() }
func (f fileRunner) InFlight() int { return f.r.InFlight() }
