package engine

import (
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// How a step stage hands items to its workers. Workers claim chunks of
// consecutive items from a shared queue (order: input and completion); with
// order: key a dispatcher releases at most one item per key at a time.

// feed moves input batches into the work queue, at most two at a time.
func (st *stepStage) feed() {
	for {
		select {
		case b, ok := <-st.in:
			if !ok {
				st.mu.Lock()
				st.inDone = true
				st.cond.Broadcast()
				st.mu.Unlock()
				return
			}
			st.begin()
			st.mu.Lock()
			for len(st.queue) >= st.queueCap() && st.ctx.Err() == nil && !st.draining.Load() {
				st.room.Wait()
			}
			// Draining (a failure is about to stop an order: input
			// stage): nothing more starts, so what arrives is cancelled.
			if st.ctx.Err() != nil || st.draining.Load() {
				st.mu.Unlock()
				st.cancelBatch(b)
				continue
			}
			st.queue = append(st.queue, b)
			// Wake one worker; it wakes the next if work is left, so
			// idle workers are not all woken for one small batch.
			st.cond.Signal()
			st.mu.Unlock()
		case <-st.ctx.Done():
			st.mu.Lock()
			st.cond.Broadcast()
			st.mu.Unlock()
			for b := range st.in {
				st.cancelBatch(b)
			}
			st.mu.Lock()
			st.inDone = true
			st.cond.Broadcast()
			st.mu.Unlock()
			return
		}
	}
}

// cancelBatch sends the records of b to the collector as cancelled.
func (st *stepStage) cancelBatch(b *batch) {
	for i := 0; i < len(b.recs); i += maxChunk {
		n := min(maxChunk, len(b.recs)-i)
		c := st.getChunk(n)
		c.seq = -1
		for j := range n {
			r := b.recs[i+j]
			c.ents[j] = entry{in: steps.Input{Index: r.Index, Item: r.Item}, outcome: outCancelled}
		}
		st.results <- c
	}
	freeBatch(b)
}

// claim takes the next chunk of work, or returns nil when there is no more.
func (st *stepStage) claim(w *workerState) *chunk {
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		if st.ctx.Err() != nil || st.draining.Load() {
			return nil
		}
		if len(st.queue) == 0 {
			if st.inDone {
				return nil
			}
			st.cond.Wait()
			continue
		}
		// A chunk may span the batches queued: a batch runner's calls
		// are larger than the batches between stages.
		avail := -st.pos
		for _, b := range st.queue {
			avail += len(b.recs)
		}
		n := min(st.chunkSize(w), avail)
		if st.ordered {
			// Announce the wait before reading emitted, so that the
			// collector either sees a waiter or we see its progress.
			st.waiters.Add(1)
			room := st.emitted.Load() + st.window - st.seq
			if room <= 0 {
				st.cond.Wait()
				st.waiters.Add(-1)
				continue
			}
			st.waiters.Add(-1)
			n = min(n, int(room))
		}
		c := st.getChunk(n)
		c.seq = st.seq
		for i := 0; i < n; {
			b := st.queue[0]
			k := min(n-i, len(b.recs)-st.pos)
			for j, r := range b.recs[st.pos : st.pos+k] {
				c.ents[i+j].in = steps.Input{Index: r.Index, Item: r.Item}
			}
			i += k
			st.pos += k
			if st.pos == len(b.recs) {
				copy(st.queue, st.queue[1:])
				st.queue[len(st.queue)-1] = nil
				st.queue = st.queue[:len(st.queue)-1]
				st.pos = 0
				freeBatch(b)
				st.room.Signal()
			}
		}
		st.seq += int64(n)
		if len(st.queue) > 0 {
			st.cond.Signal()
		}
		return c
	}
}

func (st *stepStage) worker(i int, slot *atomic.Pointer[chunk]) {
	w := &workerState{name: workerName(i)}
	if st.batch != nil {
		st.batchWorker(w, slot)
		return
	}
	if st.keyed {
		for c := range st.work {
			st.process(w, &c.ents[0])
			key := c.key
			st.results <- c
			st.keyDone <- key
		}
		return
	}
	for {
		c := st.claim(w)
		if c == nil {
			return
		}
		if len(c.ents) == 1 {
			st.process(w, &c.ents[0])
		} else {
			slot.Store(c)
			for i := range c.ents {
				st.process(w, &c.ents[i])
				// Publishing each finished item lets the collector hand
				// on a chunk's first results while a slow item holds up
				// the rest. For fast items the store costs more than the
				// item (it takes the cache line the collector reads), so
				// they publish every publishEvery items, and at once when
				// the collector waits for them.
				if w.ewma >= float64(alwaysTime) || (i+1)%publishEvery == 0 || st.idle.Load() {
					c.done.Store(int32(i + 1))
					st.wakeCollector()
				}
			}
			slot.Store(nil)
		}
		st.results <- c
	}
}

// publishEvery is how often a worker publishes its progress through a
// chunk of fast items (see worker): at most that many finished results
// wait for an unexpectedly slow item after them.
const publishEvery = 8

// workerName names goroutine slot i of a stage in attempts and timelines.
func workerName(i int) string { return "thread " + strconv.Itoa(i) }

// dispatch feeds workers for `order: key`: one item per key in flight, the
// others of that key queued in input order; different keys run in parallel.
// It holds at most window items, so a hot key applies backpressure.
func (st *stepStage) dispatch() {
	type keyQueue struct{ items []steps.Input }
	queues := map[string]*keyQueue{}
	var ready []*chunk
	held, inflight := 0, 0 // held: queued or ready, not yet with a worker
	in := st.in
	inDone, stopped := false, false
	cancelIn := func(x steps.Input) {
		c := st.getChunk(1)
		c.seq = -1
		c.ents[0] = entry{in: x, outcome: outCancelled}
		st.results <- c
	}
	stop := func() {
		stopped = true
		for _, c := range ready {
			c.ents[0].outcome = outCancelled
			st.results <- c
		}
		ready = nil
		for _, q := range queues {
			for _, x := range q.items {
				cancelIn(x)
			}
			q.items = nil
		}
		held = 0
	}
	for {
		if inDone && inflight == 0 && (held == 0 || stopped) {
			break
		}
		var recv <-chan *batch
		if !inDone && (stopped || held < int(st.window)) {
			recv = in
		}
		var send chan *chunk
		var head *chunk
		if !stopped && len(ready) > 0 {
			send, head = st.work, ready[0]
		}
		var done <-chan struct{}
		if !stopped {
			done = st.ctx.Done()
		}
		select {
		case b, ok := <-recv:
			if !ok {
				inDone = true
				continue
			}
			st.begin()
			for _, r := range b.recs {
				x := steps.Input{Index: r.Index, Item: r.Item}
				if stopped {
					cancelIn(x)
					continue
				}
				v, err := st.key.Eval(st.scope(x))
				if err != nil {
					c := st.getChunk(1)
					c.seq = -1
					c.ents[0] = entry{in: x, outcome: outFailed,
						err: &steps.Error{Err: fmt.Errorf("key: %w", err), Class: "expression", Permanent: true}}
					st.results <- c
					continue
				}
				k := tmpl.Stringify(v)
				held++
				if q, busy := queues[k]; busy {
					q.items = append(q.items, x)
					continue
				}
				queues[k] = &keyQueue{}
				c := st.getChunk(1)
				c.seq, c.key = -1, k
				c.ents[0].in = x
				ready = append(ready, c)
			}
			freeBatch(b)
		case send <- head:
			ready[0] = nil
			ready = ready[1:]
			held--
			inflight++
		case k := <-st.keyDone:
			inflight--
			q := queues[k]
			if q == nil {
				continue
			}
			if len(q.items) == 0 || stopped {
				delete(queues, k)
				continue
			}
			x := q.items[0]
			q.items[0] = steps.Input{}
			q.items = q.items[1:]
			c := st.getChunk(1)
			c.seq, c.key = -1, k
			c.ents[0].in = x
			ready = append(ready, c)
		case <-done:
			stop()
		}
	}
	close(st.work)
}
