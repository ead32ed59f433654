package procpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/stagehost"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/taskq"
)

// Config tunes a Pool. Zero fields take the defaults given with them.
type Config struct {
	// Workers is the number of worker processes (at least 1).
	Workers int
	// MaxTasksPerChild replaces a worker after it has been sent this many
	// items (0: never).
	MaxTasksPerChild int
	// Memory is the most resident memory, in bytes, a worker and the
	// processes it started may use together (0: no limit). The pool reads
	// it from /proc every MemoryPoll and kills a worker above it; the item
	// it was running fails with class "memory".
	Memory int64
	// InFlight is how many items the pool takes at once (Do calls that do
	// not wait in the caller). Default Workers.
	InFlight int

	// KillGrace is how long a worker told to stop (SIGTERM to it and its
	// descendants) has before SIGKILL. Default 2s.
	KillGrace time.Duration
	// MemoryPoll is how often memory is measured when Memory is set.
	// Default 100ms.
	MemoryPoll time.Duration
	// Heartbeat is how often workers report that they are alive; a worker
	// silent for HeartbeatTimeout is killed as hung. Defaults 1s and 1m.
	Heartbeat        time.Duration
	HeartbeatTimeout time.Duration
	// StartTimeout bounds a worker's start, up to its Ready. Default 30s.
	StartTimeout time.Duration
	// BatchLatency is about how much work (in time) the pool queues in a
	// worker ahead of the item it runs: cheap items then cross the pipes
	// by the hundred, slow ones one at a time. Default 2ms.
	BatchLatency time.Duration
	// MaxWindow bounds the items queued in one worker; MaxBatch the items
	// in one frame. Defaults 4096 and 2048.
	MaxWindow int
	MaxBatch  int

	// Command starts a worker; default: this very executable. The pool adds
	// FLOW_ROLE=worker (RoleEnv) and Env to the inherited environment.
	Command []string
	Env     []string
	// Stderr receives the workers' stdout and stderr, line by line, each
	// prefixed with the stage and the worker pid. Default os.Stderr.
	Stderr io.Writer
	// Label names the stage in messages.
	Label string
}

func (c *Config) defaults() error {
	if c.Workers < 1 {
		return fmt.Errorf("a process pool needs at least 1 worker, got %d", c.Workers)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.KillGrace, 2*time.Second)
	def(&c.MemoryPoll, 100*time.Millisecond)
	def(&c.Heartbeat, time.Second)
	def(&c.HeartbeatTimeout, time.Minute)
	def(&c.StartTimeout, 30*time.Second)
	def(&c.BatchLatency, 2*time.Millisecond)
	if c.MaxWindow <= 0 {
		c.MaxWindow = 4096
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 2048
	}
	if c.InFlight < c.Workers {
		c.InFlight = c.Workers
	}
	if len(c.Command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("cannot find this program to start worker processes: %w", err)
		}
		c.Command = []string{exe}
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	return nil
}

// inFlightPerWorker is how many items per worker the pool asks the engine
// to keep in flight (see Pool.InFlight) when items have no per-attempt
// timeout: enough to batch cheap items over the pipes.
const inFlightPerWorker = 128

// Factory is the engine's RunnerFactory for `mode: process`: a Pool for
// the stage, its workers' output going to the run's stderr. The workers
// re-execute this program, which must start with
//
//	if procpool.IsWorker() { os.Exit(procpool.WorkerMain(registry)) }
//
// with a registry holding the same kinds as the parent's.
func Factory(sr engine.StageRun) (engine.Runner, error) {
	hello, err := stagehost.HelloFor(sr.Pipeline, sr.Stage, sr.Workers)
	if err != nil {
		return nil, err
	}
	cfg := ConfigFor(sr.Stage, sr.Workers)
	cfg.Stderr = sr.Stderr
	return New(hello, cfg)
}

// ConfigFor is the pool configuration of a stage.
func ConfigFor(s *spec.Stage, workers int) Config {
	cfg := Config{Workers: workers, MaxTasksPerChild: s.MaxTasksPerChild, Memory: int64(s.Memory), Label: s.Name}
	// With a per-attempt timeout the engine starts the clock when it calls
	// Do: an item must not spend its time queued behind others, so the
	// pool takes no more items than it has workers.
	if s.Timeout <= 0 {
		cfg.InFlight = workers * inFlightPerWorker
	}
	return cfg
}

var (
	_ engine.Runner          = (*Pool)(nil)
	_ engine.BatchRunner     = (*Pool)(nil)
	_ engine.RunsBatchRunner = (*Pool)(nil)
	_ engine.InFlighter      = (*Pool)(nil)
)

// Pool runs items in worker processes; it implements engine.Runner.
//
// Each worker runs one item at a time. Cheap items are queued in a worker
// ahead of time (a batch crosses the pipe as one frame) so that throughput
// does not hang on round trips; how far ahead adapts to the measured time
// per item (Config.BatchLatency). For that to pay, the engine should call
// Do from up to InFlight() goroutines rather than from the worker count.
type Pool struct {
	cfg   Config
	hello protocol.Hello

	nextID atomic.Uint64
	queue  *taskq.Queue[*proc]
	// batches are DoBatch's, kept for reuse: a sync.Pool would drop
	// them (hundreds of KiB each) at every collection.
	batches chan *batch
	avgNS   atomic.Int64 // time per item in the workers, smoothed
	batched atomic.Bool  // items come by DoBatch (see feed)

	// procsEnv puts a worker's share of the CPUs (workerProcs) in its
	// environment, where the Go runtime reads it as it starts: set later
	// (runtime.GOMAXPROCS), it stops the world and tears down the Ps the
	// runtime made for every CPU, their caches flushed. Empty when
	// GOMAXPROCS is the user's.
	procsEnv []string

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
	stderrMu  sync.Mutex

	mu            sync.Mutex
	procs         map[*proc]struct{}
	broken        error
	startFailures int
	monitoring    bool
	started       int64
}

// New starts a pool for the stage described by hello. No process starts
// until the first item arrives.
func New(hello protocol.Hello, cfg Config) (*Pool, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if cfg.Label == "" {
		cfg.Label = hello.Stage
	}
	hello.Version = protocol.Version
	hello.Heartbeat = cfg.Heartbeat
	hello.Memory = cfg.Memory
	p := &Pool{cfg: cfg, hello: hello, closing: make(chan struct{}), procs: map[*proc]struct{}{},
		batches: make(chan *batch, 2*cfg.Workers+2)} // the engine's callers: 2 per worker
	p.queue = taskq.New[*proc]()
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && !hasEnv(cfg.Env, "GOMAXPROCS") {
		if n, k := runtime.GOMAXPROCS(0), workerProcs(runtime.GOMAXPROCS(0), hello.Workers); k != n {
			p.procsEnv = []string{"GOMAXPROCS=" + strconv.Itoa(k), procsEnv + "=" + strconv.Itoa(k)}
		}
	}
	p.wg.Add(cfg.Workers)
	for i := range cfg.Workers {
		go p.slot(i)
	}
	return p, nil
}

// hasEnv reports whether env sets name.
func hasEnv(env []string, name string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == name {
			return true
		}
	}
	return false
}

// InFlight is how many concurrent Do calls the pool can make use of: the
// workers, plus items queued ahead in them when items are cheap.
func (p *Pool) InFlight() int { return p.cfg.InFlight }

// Started is the number of worker processes started so far.
func (p *Pool) Started() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started
}

// errClosed fails items still waiting when the pool closes.
var errClosed = errors.New("the process pool was closed before a worker took this item")

// task is an item in the pool, held by the worker process it was sent to.
type task = taskq.Task[*proc]

// Do runs one item in a worker process. When ctx ends first, Do returns at
// once with an error wrapping ctx.Err(); if a worker was running the item,
// its process group is stopped (SIGTERM, then SIGKILL after KillGrace) and
// a replacement starts when there is work.
func (p *Pool) Do(ctx context.Context, in steps.Input, at *engine.Attempt) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	raw, err := protocol.AppendValue(nil, in.Item)
	if err != nil {
		return nil, steps.Permanent(fmt.Errorf("the item cannot be sent to a worker process: %w", err))
	}
	t := taskq.NewTask[*proc](p.nextID.Add(1), in, raw)
	if err := p.queue.Push(t); err != nil {
		return nil, err
	}
	select {
	case o := <-t.Done():
		// Done was sent after the last Holder was set: this read is safe.
		if at != nil && t.Holder != nil {
			at.Worker, at.Redelivered = t.Holder.name, int(t.Redelivered.Load())
		}
		return o.V, o.Err
	case <-ctx.Done():
		return p.abandon(t, ctx)
	}
}

func (p *Pool) abandon(t *task, ctx context.Context) (any, error) {
	if err, took := withdraw(t, ctx); took {
		return nil, err
	}
	// Done: the outcome is in the channel or about to be.
	o := <-t.Done()
	return o.V, o.Err
}

// withdraw takes t back from the pool for a caller whose ctx ended: took
// is false when t was settled first (its outcome is on its way), else err
// says what became of it.
func withdraw(t *task, ctx context.Context) (err error, took bool) {
	for {
		switch t.State.Load() {
		case taskq.Queued:
			if t.State.CompareAndSwap(taskq.Queued, taskq.Abandoned) {
				return fmt.Errorf("stopped while waiting for a worker process: %w", ctx.Err()), true
			}
		case taskq.Sent:
			if t.State.CompareAndSwap(taskq.Sent, taskq.Abandoned) {
				if pid, stopped := t.Holder.abandon(t); stopped {
					return fmt.Errorf("stopped worker process %d, which was running this item: %w", pid, ctx.Err()), true
				}
				return fmt.Errorf("withdrawn from worker process %d before it started: %w", t.Holder.pid, ctx.Err()), true
			}
		default:
			return nil, false
		}
	}
}

// DoBatch runs many items, as engine.BatchRunner: their tasks are made in
// one allocation and their values encoded into one buffer, queued at once,
// and answered through done by the goroutine that reads each worker's
// results, with no goroutine waiting per item. The items then travel
// exactly as Do's: the same queue, batches to workers, redelivery and blame.
func (p *Pool) DoBatch(ctx context.Context, items []engine.BatchItem, done func(i int, v any, err error)) {
	p.doBatch(ctx, items, done, nil)
}

// DoBatchRuns is DoBatch, answering through run the items of the call that
// a frame of a worker's answers carries together (engine.RunsBatchRunner).
func (p *Pool) DoBatchRuns(ctx context.Context, items []engine.BatchItem, done func(i int, v any, err error), run func([]engine.BatchAnswer)) {
	p.doBatch(ctx, items, done, run)
}

func (p *Pool) doBatch(ctx context.Context, items []engine.BatchItem, done func(i int, v any, err error), run func([]engine.BatchAnswer)) {
	if err := ctx.Err(); err != nil {
		for i := range items {
			done(i, nil, err)
		}
		return
	}
	if !p.batched.Load() {
		p.batched.Store(true)
	}
	var b *batch
	select {
	case b = <-p.batches:
	default:
		b = &batch{all: make(chan struct{}, 1)}
	}
	b.items, b.done, b.run = items, done, run
	n := len(items)
	// Encode first, slice after: the buffer moves while it grows. The
	// buffer is reused with the batch, once every task was answered: a
	// frame copies the values it carries (protocol.Writer) before the
	// worker can answer them, and a lost worker's tasks are unanswered
	// until another has been sent them.
	ends := b.ends[:0]
	raw := b.raw[:0]
	if cap(raw) < 16*n {
		raw = make([]byte, 0, max(16*n, 2*cap(raw)))
	}
	for i := range items {
		start := len(raw)
		var err error
		if raw, err = protocol.AppendValue(raw, items[i].In.Item); err != nil {
			raw = raw[:start]
			ends = append(ends, -1)
			done(i, nil, steps.Permanent(fmt.Errorf("the item cannot be sent to a worker process: %w", err)))
			continue
		}
		ends = append(ends, len(raw))
	}
	b.ends, b.raw = ends, raw
	if cap(b.tasks) < n {
		// Calls grow as the engine learns the items' cost: grow the
		// tasks with them, not to each new size.
		b.tasks = make([]task, max(n, 2*cap(b.tasks)))
	}
	tasks := b.tasks[:n]
	clear(tasks)
	ptrs := b.ptrs[:0]
	id := p.nextID.Add(uint64(n)) - uint64(n)
	start := 0
	for i := range items {
		if ends[i] < 0 {
			continue
		}
		t := &tasks[i]
		t.Init(id+uint64(i)+1, items[i].In, raw[start:ends[i]:ends[i]], b, i)
		start = ends[i]
		ptrs = append(ptrs, t)
	}
	b.ptrs = ptrs
	if len(ptrs) == 0 {
		p.reuse(b)
		return
	}
	b.left.Store(int64(len(ptrs)))
	if err := p.queue.PushAll(ptrs); err != nil {
		for _, t := range ptrs {
			done(t.Slot, nil, err)
		}
		p.reuse(b)
		return
	}
	select {
	case <-b.all:
		p.reuse(b)
		return
	case <-ctx.Done():
	}
	for _, t := range ptrs {
		if err, took := withdraw(t, ctx); took {
			b.answer(t, nil, err)
		}
	}
	<-b.all
	// Withdrawn tasks may linger in the queue and in workers' lists until
	// skipped or answered: this batch's memory is not reused.
}

// batch is one DoBatch call, the taskq.Group of its tasks.
type batch struct {
	items []engine.BatchItem
	done  func(int, any, error)
	run   func([]engine.BatchAnswer) // nil: answers go one by one to done
	left  atomic.Int64               // tasks not yet answered
	all   chan struct{}              // the last answer was given
	// Kept for the next call once every task was answered, none
	// withdrawn: nothing refers to a settled task any more (each is out of
	// the queue and out of its worker's list before it is settled).
	tasks []task
	ptrs  []*task
	ends  []int
	raw   []byte // the items' values, encoded
}

// reuse keeps b for another call.
func (p *Pool) reuse(b *batch) {
	b.items, b.done, b.run = nil, nil, nil
	clear(b.ptrs)
	if cap(b.raw) > 1<<20 {
		b.raw = nil // keep a modest buffer; drop one huge items grew
	}
	select {
	case p.batches <- b:
	default: // more calls at once than the engine makes: let it go
	}
}

// Settled is called once per task by whoever settled it, after the last
// move of its Holder.
func (b *batch) Settled(t *task, v any, err error) {
	b.deliver(t, v, err)
	b.answered(1)
}

// deliver gives a settled task's outcome to the caller; answered must
// follow, once for it or for a run of such tasks.
func (b *batch) deliver(t *task, v any, err error) {
	b.attempt(t)
	b.done(t.Slot, v, err)
}

// attempt fills in the attempt of a settled task, before its answer.
func (b *batch) attempt(t *task) {
	if t.Holder != nil {
		at := b.items[t.Slot].At
		at.Worker, at.Redelivered = t.Holder.name, int(t.Redelivered.Load())
	}
}

// deliverRun gives the outcomes of a run of settled tasks (attempt called
// for each) to the caller; answered(len(as)) must follow.
func (b *batch) deliverRun(as []engine.BatchAnswer) {
	if b.run != nil {
		b.run(as)
		return
	}
	for _, a := range as {
		b.done(a.I, a.V, a.Err)
	}
}

// answered counts n tasks delivered. Once the last is, the batch may be
// reused at once (DoBatch): nothing of its tasks is touched after.
func (b *batch) answered(n int) {
	if b == nil || n == 0 {
		return
	}
	if b.left.Add(int64(-n)) == 0 {
		b.all <- struct{}{}
	}
}

func (b *batch) answer(t *task, v any, err error) {
	b.done(t.Slot, v, err)
	b.answered(1)
}

// Close stops every worker: each finishes the items it holds (KillGrace at
// most) and exits; what is left is killed with its descendants. Items still
// waiting fail. Close returns once every worker process has been reaped.
func (p *Pool) Close() error {
	p.closeOnce.Do(func() {
		close(p.closing)
		for _, t := range p.queue.Close(errClosed) {
			t.Finish(taskq.Queued, nil, errClosed)
		}
		p.mu.Lock()
		procs := make([]*proc, 0, len(p.procs))
		for w := range p.procs {
			procs = append(procs, w)
		}
		p.mu.Unlock()
		for _, w := range procs {
			w.closeInput()
		}
		deadline := time.NewTimer(p.cfg.KillGrace)
		for _, w := range procs {
			select {
			case <-w.exited:
			case <-deadline.C:
			}
		}
		deadline.Stop()
		for _, w := range procs {
			w.kill(errClosed)
		}
		p.wg.Wait()
	})
	return nil
}

// slot keeps one worker process busy while there is work, starting a new
// one whenever the last has gone (recycled, crashed or killed).
func (p *Pool) slot(i int) {
	defer p.wg.Done()
	for p.waitWork() {
		w, err := p.start(i)
		if err != nil {
			p.startFailed(err)
			continue
		}
		p.feed(w)
	}
}

// waitWork waits until items are queued; false once the pool is closed or
// broken.
func (p *Pool) waitWork() bool {
	for {
		select {
		case <-p.closing:
			return false
		default:
		}
		p.mu.Lock()
		broken := p.broken != nil
		p.mu.Unlock()
		if broken {
			return false
		}
		if p.queue.Len() > 0 {
			// Pass the wake-up on: other idle slots start their workers too.
			p.queue.Signal()
			return true
		}
		select {
		case <-p.queue.Notify():
		case <-p.closing:
			return false
		}
	}
}

// maxStartFailures: after this many workers in a row fail to start, the
// pool gives up and fails every item with the reason.
const maxStartFailures = 3

func (p *Pool) startFailed(err error) {
	if errors.Is(err, errClosed) {
		return
	}
	var build *buildError
	p.mu.Lock()
	p.startFailures++
	n := p.startFailures
	if errors.As(err, &build) || n >= maxStartFailures {
		if p.broken == nil {
			p.broken = steps.Permanent(fmt.Errorf("stage %q: %w", p.cfg.Label, err))
		}
		broken := p.broken
		p.mu.Unlock()
		for _, t := range p.queue.Close(broken) {
			t.Finish(taskq.Queued, nil, broken)
		}
		return
	}
	p.mu.Unlock()
	fmt.Fprintf(p.cfg.Stderr, "flow: stage %s: %v; trying again\n", p.cfg.Label, err)
	select {
	case <-time.After(time.Duration(n) * 100 * time.Millisecond):
	case <-p.closing:
	}
}

// window is how many items one worker may hold: enough to cover
// BatchLatency at the measured time per item, at least one.
func (p *Pool) window() int {
	avg := p.avgNS.Load()
	if avg <= 0 {
		return 1
	}
	n := int64(p.cfg.BatchLatency) / avg
	return int(max(1, min(n, int64(p.cfg.MaxWindow))))
}

func (p *Pool) noteBusy(busy time.Duration, n int) {
	if n == 0 {
		return
	}
	per := max(int64(busy)/int64(n), 1)
	old := p.avgNS.Load()
	if old == 0 {
		p.avgNS.Store(per)
		return
	}
	// Lossy under concurrent updates, which is fine for a smoothed guess.
	p.avgNS.Store((old*7 + per) / 8)
}

// feed sends queued items to w until w must take no more.
func (p *Pool) feed(w *proc) {
	for {
		w.mu.Lock()
		if w.stopping {
			w.mu.Unlock()
			return
		}
		if limit := p.cfg.MaxTasksPerChild; limit > 0 && w.sent >= limit {
			w.stopping = true
			w.mu.Unlock()
			w.closeInput() // recycle: the worker drains what it holds, then exits
			return
		}
		n := len(w.outstanding)
		win := p.window()
		// While the worker has a good part of its share queued, let items
		// gather: sent the moment they arrive, they would cross one per
		// frame, a system call and a wake-up each. Items that come by
		// DoBatch have gathered already (a call brings hundreds): then
		// the worker is topped up while it still holds half its window,
		// so that it does not run dry and wait for a round trip, and
		// then wake, for each frame.
		//
		// A worker's share of such items is at least least of them:
		// half of what is queued, worker after worker, would cut each
		// call into a tail of ever smaller frames (a call's 1,200 items
		// crossed in 7 frames).
		lowWater := max(1, min(win, p.cfg.InFlight/p.cfg.Workers)/4)
		least := 1
		if p.batched.Load() {
			lowWater = max(1, win/2)
			least = max(1, min(win, p.cfg.MaxBatch)/8)
		}
		var batch []*task
		if n < win && (n < lowWater || p.queue.Len() >= p.cfg.MaxBatch) {
			k := min(win-n, p.cfg.MaxBatch)
			if limit := p.cfg.MaxTasksPerChild; limit > 0 {
				k = min(k, limit-w.sent)
			}
			clear(w.popped)
			batch = p.queue.PopAppend(w.popped[:0], k, p.cfg.Workers, least, w)
			w.popped = batch
			w.pushOutstandingLocked(batch)
			w.sent += len(batch)
			w.frameLocked(batch)
		}
		w.mu.Unlock()
		if len(batch) > 0 {
			w.send(batch)
			continue
		}
		var more <-chan struct{}
		if n < lowWater {
			more = p.queue.Notify()
		}
		select {
		case <-more:
		case <-w.wake:
		case <-w.exited:
		case <-p.closing:
			return
		}
	}
}
