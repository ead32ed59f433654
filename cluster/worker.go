package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/stagehost"
	"github.com/flowrun/flow/steps"
)

// WorkerConfig configures a `flow worker`.
type WorkerConfig struct {
	Name  string // shown by `flow workers` and in attempts; default host:pid
	Slots int    // items run at once
	// Labels are what this worker offers: it runs the items of stages
	// that require some of them, beside unlabelled ones. "*" offers
	// every label (a run's in-process workers on its embedded server).
	Labels   []string
	Registry *steps.Registry
	Settings Settings
	// Log receives one line per event worth a person's attention (a stage
	// that cannot be built, a run gone); never item values or variables.
	Log io.Writer
}

// Worker pulls batches of items from the work stream and runs them.
type Worker struct {
	cfg WorkerConfig
	nc  *nats.Conn
	st  *store

	ackWait time.Duration

	mu      sync.Mutex
	stages  map[string]*hosted // by RUN.STAGE
	alive   map[string]time.Time
	running map[string]map[uint64]context.CancelFunc // run -> item -> cancel
	dropped map[string]map[uint64]bool               // cancelled before they started
	gone    map[string]bool                          // runs taken up by another (flow.drain)
	batches map[string]int                           // batches running, by run
	busy    int
	done    int64

	srcs sources // the consumers it pulls from (labels.go)
}

// hosted is a stage built in this worker, or why it could not be.
type hosted struct {
	step  steps.Built
	err   error
	used  time.Time
	hello string // digest of the hello, on every answer
}

// NewWorker connects a worker to the cluster's streams on nc.
func NewWorker(ctx context.Context, nc *nats.Conn, cfg WorkerConfig) (*Worker, error) {
	cfg.Settings.defaults()
	if cfg.Slots <= 0 {
		return nil, fmt.Errorf("a worker needs at least 1 slot, got %d", cfg.Slots)
	}
	if cfg.Name == "" {
		host, _ := os.Hostname()
		cfg.Name = host + ":" + strconv.Itoa(os.Getpid())
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := ensure(ctx, nc, js, cfg.Settings)
	if err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, nc: nc, st: st, stages: map[string]*hosted{}, alive: map[string]time.Time{},
		running: map[string]map[uint64]context.CancelFunc{}, dropped: map[string]map[uint64]bool{},
		gone: map[string]bool{}, batches: map[string]int{}}
	w.ackWait, _ = st.consumerSettings(ctx)
	return w, nil
}

// Serve runs items until ctx ends; what it runs then is cancelled and its
// batches go back to the stream (no ack) for other workers.
func (w *Worker) Serve(ctx context.Context) error {
	sub, err := w.nc.Subscribe("flow.cancel.*", w.onCancel)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	dsub, err := w.nc.Subscribe("flow.drain.*", w.onDrain)
	if err != nil {
		return err
	}
	defer dsub.Unsubscribe()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.announce(ctx) }()
	slots := make(chan struct{}, w.cfg.Slots)
	for ctx.Err() == nil {
		// Take as many batches as there are free slots, no more: a batch
		// waiting here would have its ack wait running for nothing.
		slots <- struct{}{}
		free := 1
	fill:
		for free < w.cfg.Slots {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break fill
			}
		}
		// What is there now, at once; when nothing is, wait for one (a
		// Fetch of several would wait for all of them).
		got := 0
		cons := w.pullFrom(ctx)
		take := func(msgs jetstream.MessageBatch) {
			for m := range msgs.Messages() {
				got++
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-slots }()
					w.handle(ctx, m)
				}()
			}
		}
		var err error
		for _, c := range cons {
			if got == free || err != nil {
				break
			}
			var msgs jetstream.MessageBatch
			if msgs, err = c.FetchNoWait(free - got); err == nil {
				take(msgs)
			}
		}
		if got == 0 && err == nil && ctx.Err() == nil {
			// The first of the rotation waits, shorter when there are
			// several to come back to.
			var msgs jetstream.MessageBatch
			if msgs, err = cons[0].Fetch(1, jetstream.FetchMaxWait(time.Second/time.Duration(len(cons)))); err == nil {
				take(msgs)
			}
		}
		for range free - got {
			<-slots
		}
		if err != nil && ctx.Err() == nil {
			if errors.Is(err, nats.ErrConnectionClosed) {
				wg.Wait()
				return err
			}
			time.Sleep(100 * time.Millisecond) // the server restarting, say
		}
	}
	wg.Wait()
	return nil
}

// announce keeps this worker's entry in the workers bucket fresh.
func (w *Worker) announce(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		w.mu.Lock()
		info := Info{Name: w.cfg.Name, Labels: w.cfg.Labels, Slots: w.cfg.Slots, Busy: w.busy, Done: w.done, Seen: time.Now().UTC()}
		w.mu.Unlock()
		if b, err := json.Marshal(info); err == nil {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = w.st.workers.Put(pctx, workerKey(w.cfg.Name), b)
			cancel()
		}
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = w.st.workers.Delete(dctx, workerKey(w.cfg.Name))
			cancel()
			return
		case <-t.C:
		}
	}
}

// handle runs one batch: the items in order, answering them all in one
// results message (item by item when the batch was delivered before, so
// that what killed the last worker is pinned to one item).
func (w *Worker) handle(ctx context.Context, m jetstream.Msg) {
	run, stageStr := m.Headers().Get(hdrRun), m.Headers().Get(hdrStage)
	stage, err := strconv.Atoi(stageStr)
	md, merr := m.Metadata()
	if err != nil || merr != nil || run == "" {
		_ = m.TermWithReason("not a flow batch")
		return
	}
	if !w.runAlive(ctx, run) {
		// Its parent is gone: nobody reads the answers.
		_ = m.TermWithReason("the run is gone")
		return
	}
	// Counted before the check, under one lock with it, so that a drain
	// either stops this batch or waits for it.
	w.mu.Lock()
	if w.gone[run] {
		w.mu.Unlock()
		_ = m.TermWithReason("the run was taken up by another")
		return
	}
	w.batches[run]++
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		if w.batches[run]--; w.batches[run] <= 0 {
			delete(w.batches, run)
		}
		w.mu.Unlock()
	}()
	h := w.stageFor(ctx, run, stage)
	msg, err := protocol.ParseBody(m.Data())
	items, ok := msg.(*protocol.Items)
	if err != nil || !ok {
		_ = m.TermWithReason("the batch does not decode")
		return
	}
	// Signs of life while the batch runs, so that a long item is not
	// mistaken for a dead worker.
	stopBeat := make(chan struct{})
	go func() {
		t := time.NewTicker(max(w.ackWait/3, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-stopBeat:
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	defer close(stopBeat)
	w.mu.Lock()
	w.busy++
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.busy--
		w.done += int64(len(*items))
		w.mu.Unlock()
	}()
	redelivered := md.NumDelivered > 1
	var out protocol.Results
	start, first, taken := time.Now(), 0, false
	for i, it := range *items {
		if ctx.Err() != nil {
			// Stopping: the batch goes to another worker, after a pause
			// (a negative ack without one would come straight back).
			_ = m.NakWithDelay(time.Second)
			return
		}
		if w.isGone(run) {
			taken = true
			break
		}
		var res protocol.Result
		switch {
		case h.err != nil:
			res = stagehost.Result(it.ID, nil, steps.Permanent(h.err))
		case w.take(run, it.ID):
			res = stagehost.Result(it.ID, nil, context.Canceled)
		default:
			v, err := w.do(ctx, run, h.step.Step, it)
			res = stagehost.Result(it.ID, v, err)
		}
		out.Results = append(out.Results, res)
		if redelivered {
			out.Busy = time.Since(start)
			if w.answer(ctx, m, run, stage, h.hello, &out, (*items)[first:i+1], len(*items) == 1, md.NumDelivered) != nil {
				return
			}
			out.Results, start, first = out.Results[:0], time.Now(), i+1
		}
	}
	if len(out.Results) > 0 {
		out.Busy = time.Since(start)
		if w.answer(ctx, m, run, stage, h.hello, &out, (*items)[first:first+len(out.Results)], first == 0 && len(out.Results) == len(*items), md.NumDelivered) != nil {
			return
		}
	}
	if taken {
		// The run taking this one up computes the rest.
		_ = m.TermWithReason("the run was taken up by another")
		return
	}
	// The answers are in the results stream (acknowledged) before the
	// batch leaves the work stream: a death in between, or an ack lost on
	// the way, costs a second run, whose answers are then ignored; never
	// an answer. So the ack need not wait for its confirmation.
	_ = m.Ack()
}

// answer publishes the results of items, followed by the items themselves
// (the batch's own bytes when it is answered whole), so that a run taking
// this one up can match them to its own items.
func (w *Worker) answer(ctx context.Context, m jetstream.Msg, run string, stage int, hello string, res *protocol.Results, items protocol.Items, whole bool, delivery uint64) error {
	body, err := protocol.AppendBody(nil, res)
	if err != nil {
		return err
	}
	off := len(body)
	if whole {
		body = append(body, m.Data()...)
	} else if body, err = protocol.AppendBody(body, &items); err != nil {
		return err
	}
	msg := nats.NewMsg(resultsSubject(run, stage))
	msg.Header.Set(hdrStage, strconv.Itoa(stage))
	msg.Header.Set(hdrWorker, w.cfg.Name)
	msg.Header.Set(hdrDelivery, strconv.FormatUint(delivery, 10))
	msg.Header.Set(hdrItems, strconv.Itoa(off))
	if hello != "" {
		msg.Header.Set(hdrHello, hello)
	}
	msg.Data = body
	id := fmt.Sprintf("%s.%d.%s.%d.%d", run, stage, m.Headers().Get(hdrBatch), delivery, res.Results[0].ID)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = w.st.js.PublishMsg(pctx, msg, jetstream.WithMsgID(id))
	return err
}

// do runs one item with a context its run can cancel.
func (w *Worker) do(ctx context.Context, run string, s steps.Step, it protocol.Item) (v any, err error) {
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.mu.Lock()
	if w.running[run] == nil {
		w.running[run] = map[uint64]context.CancelFunc{}
	}
	w.running[run][it.ID] = cancel
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.running[run], it.ID)
		w.mu.Unlock()
		if p := recover(); p != nil {
			v, err = nil, &steps.Error{Err: fmt.Errorf("panic: %v\n%s", p, debug.Stack()), Class: "crash", Permanent: true}
		}
	}()
	val := it.Value
	if it.Raw != nil {
		if val, err = protocol.ParseValue(it.Raw); err != nil {
			return nil, steps.Permanent(fmt.Errorf("the item does not decode: %w", err))
		}
	}
	return s.Do(ictx, steps.Input{Index: it.Index, Item: val})
}

func (w *Worker) isGone(run string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gone[run]
}

// take reports whether item id of run was cancelled before it started.
func (w *Worker) take(run string, id uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dropped[run][id] {
		delete(w.dropped[run], id)
		return true
	}
	return false
}

func (w *Worker) onCancel(m *nats.Msg) {
	run := m.Subject[len("flow.cancel."):]
	msg, err := protocol.ParseBody(m.Data)
	ids, ok := msg.(*protocol.Cancel)
	if err != nil || !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range *ids {
		if c := w.running[run][id]; c != nil {
			c()
			continue
		}
		if w.dropped[run] == nil {
			w.dropped[run] = map[uint64]bool{}
		}
		if len(w.dropped[run]) < 1<<16 {
			w.dropped[run][id] = true
		}
	}
}

// runAlive asks the runs bucket, remembering a yes for a few seconds.
func (w *Worker) runAlive(ctx context.Context, run string) bool {
	w.mu.Lock()
	at, ok := w.alive[run]
	w.mu.Unlock()
	if ok && time.Since(at) < 2*time.Second {
		return true
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := w.st.runs.Get(gctx, run); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			w.forget(run)
			return false
		}
		return true // cannot tell (a reconnect): do the work
	}
	w.mu.Lock()
	w.alive[run] = time.Now()
	w.mu.Unlock()
	return true
}

// forget closes what a finished run left in this worker.
func (w *Worker) forget(run string) {
	w.mu.Lock()
	var gone []*hosted
	for k, h := range w.stages {
		if len(k) > len(run) && k[:len(run)] == run && k[len(run)] == '.' {
			gone = append(gone, h)
			delete(w.stages, k)
		}
	}
	delete(w.alive, run)
	delete(w.dropped, run)
	w.mu.Unlock()
	for _, h := range gone {
		_ = h.step.Close()
	}
}

// stageFor builds (once per run and stage) the step a batch runs, from
// the hello its run published.
func (w *Worker) stageFor(ctx context.Context, run string, stage int) *hosted {
	key := helloKey(run, stage)
	w.mu.Lock()
	h := w.stages[key]
	w.mu.Unlock()
	if h != nil {
		return h
	}
	h = &hosted{}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	entry, err := w.st.hello.Get(gctx, key)
	cancel()
	switch {
	case err != nil:
		h.err = fmt.Errorf("worker %s cannot read the stage's hello: %w", w.cfg.Name, err)
	default:
		msg, perr := protocol.ParseBody(entry.Value())
		hello, ok := msg.(*protocol.Hello)
		if perr != nil || !ok {
			h.err = fmt.Errorf("worker %s: the stage's hello does not decode", w.cfg.Name)
			break
		}
		h.hello = helloDigest(entry.Value())
		h.step, h.err = stagehost.Build(hello, w.cfg.Registry, w.cfg.Log)
		if h.err == nil {
			h.step, h.err = w.transferring(run, hello, h.step)
		}
		if h.err != nil {
			fmt.Fprintf(w.cfg.Log, "flow worker %s: run %s, stage %s: %v\n", w.cfg.Name, run, hello.Stage, h.err)
		}
	}
	w.mu.Lock()
	if old := w.stages[key]; old != nil {
		w.mu.Unlock()
		_ = h.step.Close()
		return old
	}
	w.stages[key] = h
	w.mu.Unlock()
	return h
}

// Info is a worker as `flow workers` lists it.
type Info struct {
	Name   string    `json:"name"`
	Labels []string  `json:"labels,omitempty"`
	Slots  int       `json:"slots"`
	Busy   int       `json:"busy"`
	Done   int64     `json:"done"`
	Seen   time.Time `json:"seen"`
}

func workerKey(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Workers lists the workers seen in the last 15 seconds.
func Workers(ctx context.Context, nc *nats.Conn) ([]Info, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, workersBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var i Info
		if json.Unmarshal(e.Value(), &i) == nil {
			out = append(out, i)
		}
	}
	return out, nil
}
