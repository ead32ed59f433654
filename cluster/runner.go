package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/stagehost"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/taskq"
)

// Client is one run's side of the cluster: it publishes the hellos and the
// work of the run's cluster stages, reads their results back, and keeps
// the run's key alive so that workers know the run is.
type Client struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	st       *store
	run      string
	settings Settings
	maxDel   int

	mu      sync.Mutex
	runners map[int]*Runner
	bySeq   map[uint64]*batch // batches in the work stream, for max-delivery advisories

	lostAt time.Time // when the connection went down (guarded by mu)
	stop   chan struct{}
	wg     sync.WaitGroup
	// results reads this run's answers; replaced by watchResults when it
	// stalls (guarded by resMu). lastSeq and lastAt: the stream sequence
	// and time of the last answer read.
	resMu   sync.Mutex
	results jetstream.ConsumeContext
	lastSeq atomic.Uint64
	lastAt  atomic.Int64
	// runRev is the revision of the run's key last written (keepAlive's).
	runRev uint64
	advSub *nats.Subscription
	closed atomic.Bool
	xfer   runFiles // the bucket of transfer: true stages (transfer.go)

	// answers are earlier runs' successes (RunOptions.Resume), by
	// answerKey; read-only once the client is made.
	answers map[string]answer
}

// NewClient makes the run's client on nc.
func NewClient(ctx context.Context, nc *nats.Conn, s Settings) (*Client, error) {
	return NewClientFor(ctx, nc, s, RunOptions{})
}

// NewClientFor makes the client of the run o names, taking up o.Resume.
func NewClientFor(ctx context.Context, nc *nats.Conn, s Settings, o RunOptions) (*Client, error) {
	s.defaults()
	// Work is published without waiting (Runner.send); a publish that
	// gets no acknowledgement is sent again after this long.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	st, err := ensure(ctx, nc, js, s)
	if err != nil {
		return nil, err
	}
	run := o.ID
	if run == "" {
		run = newRunID()
	}
	c := &Client{nc: nc, js: js, st: st, run: run, settings: s, runners: map[int]*Runner{},
		bySeq: map[uint64]*batch{}, stop: make(chan struct{})}
	_, c.maxDel = st.consumerSettings(ctx)
	if c.runRev, err = st.runs.Put(ctx, c.run, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		return nil, fmt.Errorf("announcing the run: %w", err)
	}
	c.wg.Add(1)
	go c.keepAlive()
	if err := c.adopt(o.Resume); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.readResults(ctx, 0); err != nil {
		c.Close()
		return nil, fmt.Errorf("reading results: %w", err)
	}
	// Any consumer of the work stream: the shared one and those of labels.
	adv := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + workStream + ".*"
	if c.advSub, err = nc.Subscribe(adv, c.onMaxDeliveries); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// RunID names the run in subjects and keys.
func (c *Client) RunID() string { return c.run }

// Factory is the engine's RunnerFactory for `mode: cluster` stages of this run.
func (c *Client) Factory(sr engine.StageRun) (engine.Runner, error) {
	if len(sr.Pipeline.Vars.Secrets()) > 0 && !Private(c.nc) {
		return nil, fmt.Errorf("stage %q: the pipeline has secret variables, and the connection to NATS (%s) is neither TLS nor loopback: secrets would cross the network in clear text; use tls:// with --nats-ca, or run the stage in another mode", sr.Stage.Name, c.nc.ConnectedUrl())
	}
	hello, err := stagehost.HelloFor(sr.Pipeline, sr.Stage, sr.Workers)
	if err != nil {
		return nil, err
	}
	body, err := protocol.AppendBody(nil, &hello)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx := sr.Stage.Index
	if _, err := c.st.hello.Put(ctx, helloKey(c.run, idx), body); err != nil {
		return nil, fmt.Errorf("stage %q: giving the pipeline to workers: %w", sr.Stage.Name, err)
	}
	r := &Runner{c: c, stage: idx, name: sr.Stage.Name, queue: taskq.New[*batch](), sent: map[uint64]*task{},
		inFlight: sr.Workers, done: make(chan struct{}), subject: workSubject(c.run, idx),
		hello: helloDigest(body), answers: c.answers, pubSlots: make(chan struct{}, maxPubs)}
	if r.labels = labelKey(sr.Stage.Labels); r.labels != "" {
		if err := ensureLabelConsumer(ctx, c.st, r.labels); err != nil {
			return nil, fmt.Errorf("stage %q: %w", sr.Stage.Name, err)
		}
		r.subject = labelledSubject(r.labels, c.run, idx)
	}
	if sr.Stage.Timeout <= 0 {
		// Cheap items cross by the hundred in one message: the engine must
		// keep more of them in flight than the stage has workers.
		r.inFlight = sr.Workers * inFlightPerWorker
	}
	if sr.Stage.Transfer {
		if r.xfer, err = newShipper(ctx, c, sr); err != nil {
			return nil, err
		}
		// Each item in flight holds its files in the bucket: no more
		// than the stage's workers.
		r.inFlight = sr.Workers
	}
	c.mu.Lock()
	c.runners[idx] = r
	c.mu.Unlock()
	r.wg.Add(1)
	go r.publish()
	if r.labels != "" {
		r.wg.Add(1)
		go r.watchLabels(sr.Stderr)
	}
	if r.xfer != nil {
		return fileRunner{r}, nil
	}
	return r, nil
}

const (
	// inFlightPerWorker: items in flight per `workers:` of a stage without
	// a timeout. Each is a goroutine of the engine waiting in Do; more of
	// them cost more than they bring (every GC scans their stacks): 24
	// keeps six full batches out at the default 64 workers, and used 15%
	// less CPU than 64 for trivial items (A/B, BenchmarkClusterTrivial).
	inFlightPerWorker = 24
	maxBatch          = 256
	// batchWork is about how much work one message should carry: cheap
	// items go by the hundred, slow ones alone, so that they spread over
	// the workers.
	batchWork = 5 * time.Millisecond
	// lingerMax bounds how long a batch waits to fill up.
	lingerMax = 2 * time.Millisecond
)

// keepAlive refreshes the run's key (workers drop the work of runs whose
// key expired) and watches the connection: items out when NATS has been
// unreachable too long fail, so that the run ends instead of waiting.
func (c *Client) keepAlive() {
	defer c.wg.Done()
	tick := min(c.settings.RunTTL/3, c.settings.Unreachable/4)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if err := c.unreachable(); err != nil {
				c.mu.Lock()
				rs := make([]*Runner, 0, len(c.runners))
				for _, r := range c.runners {
					rs = append(rs, r)
				}
				c.mu.Unlock()
				for _, r := range rs {
					r.failSent(err)
				}
				continue
			}
			c.refreshRun()
			c.watchResults(3 * tick)
		}
	}
}

// unreachable says, once NATS has been out of reach for longer than
// Settings.Unreachable, why the items out fail.
func (c *Client) unreachable() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc.Status() == nats.CONNECTED {
		c.lostAt = time.Time{}
		return nil
	}
	if c.lostAt.IsZero() {
		c.lostAt = time.Now()
	}
	if d := time.Since(c.lostAt); d > c.settings.Unreachable {
		return &steps.Error{Class: "connection", Err: fmt.Errorf("NATS has been unreachable for %s (%s): the items out on the cluster are failed, not waited for; retry: and on_error: decide what follows", d.Round(time.Second), c.nc.Status())}
	}
	return nil
}

// failSent fails every item published and not answered.
func (r *Runner) failSent(err error) {
	r.mu.Lock()
	var out []*task
	for _, t := range r.sent {
		out = append(out, t)
		r.unsend(t)
	}
	r.mu.Unlock()
	for _, t := range out {
		t.Finish(taskq.Sent, nil, err)
	}
}

// Close ends the run's side: its key goes, so that workers drop what is
// left of its work, and its hellos go with it. Results stay for a day.
func (c *Client) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(c.stop)
	if c.advSub != nil {
		_ = c.advSub.Unsubscribe()
	}
	c.wg.Wait()
	c.resMu.Lock()
	if c.results != nil {
		c.results.Stop()
	}
	c.resMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.dropFiles(ctx)
	_ = c.st.runs.Delete(ctx, c.run)
	c.mu.Lock()
	for idx := range c.runners {
		_ = c.st.hello.Delete(ctx, helloKey(c.run, idx))
	}
	c.mu.Unlock()
	return nil
}

// onResults settles the items a results message answers. Answers for items
// already settled (a worker that came back after its batch went to another,
// a redelivered batch answered twice) are ignored: each item is settled once.
func (c *Client) onResults(m jetstream.Msg) {
	defer m.Ack()
	c.sawResult(m)
	h := m.Headers()
	idx, err := strconv.Atoi(h.Get(hdrStage))
	if err != nil {
		return
	}
	c.mu.Lock()
	r := c.runners[idx]
	c.mu.Unlock()
	if r == nil {
		return
	}
	data := m.Data()
	if off, err := strconv.Atoi(h.Get(hdrItems)); err == nil && off >= 0 && off <= len(data) {
		data = data[:off] // the items answered follow, for a resumed run
	}
	msg, err := protocol.ParseBody(data)
	if err != nil {
		return
	}
	res, ok := msg.(*protocol.Results)
	if !ok {
		return
	}
	delivery, _ := strconv.Atoi(h.Get(hdrDelivery))
	r.settle(res, h.Get(hdrWorker), delivery)
}

// onMaxDeliveries handles a batch that reached MaxDeliver without an
// answer: every worker that took it died or hung. The first unanswered item
// is taken to be what kills them and fails; the others go out again in
// another batch, so one poison item does not take its neighbours along.
func (c *Client) onMaxDeliveries(m *nats.Msg) {
	var adv struct {
		StreamSeq  uint64 `json:"stream_seq"`
		Deliveries uint64 `json:"deliveries"`
	}
	if json.Unmarshal(m.Data, &adv) != nil {
		return
	}
	c.mu.Lock()
	b := c.bySeq[adv.StreamSeq]
	delete(c.bySeq, adv.StreamSeq)
	c.mu.Unlock()
	if b == nil {
		return // another run's batch
	}
	b.r.outstanding.Add(-1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = c.st.work.DeleteMsg(ctx, adv.StreamSeq)
	cancel()
	b.r.poisoned(b, int(adv.Deliveries))
}

// Runner runs one stage's items on the cluster's workers; it implements
// engine.Runner and engine.InFlighter.
type Runner struct {
	c        *Client
	stage    int
	name     string
	inFlight int
	subject  string // where its batches go: by labels, if it has some
	labels   string // labelKey of the stage's labels
	// noWorker is set while no live worker has offered the labels for
	// too long: the error items fail with.
	noWorker atomic.Pointer[error]
	xfer     *shipper // transfer: true: files go with the items
	nextID   atomic.Uint64
	nextB    atomic.Uint64
	queue    *taskq.Queue[*batch]
	avgNS    atomic.Int64 // time per item in the workers, smoothed
	// batched counts the items handed over by DoBatch (tests read it:
	// that the engine takes the batch path).
	batched atomic.Int64
	// outstanding counts published batches not yet fully answered; pubs,
	// those whose publish is not yet acknowledged (at most maxPubs, by
	// pubSlots).
	outstanding atomic.Int64
	pubs        atomic.Int64
	pubSlots    chan struct{}

	mu   sync.Mutex
	sent map[uint64]*task // published and unsettled, by item ID

	cancelMu sync.Mutex
	cancels  []uint64

	// hello is the digest of the stage's hello; answers, earlier runs'
	// successes (shared, read-only).
	hello   string
	answers map[string]answer

	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

type task = taskq.Task[*batch]

// batch is one message of items; the answering worker is recorded on it
// before its items are settled.
type batch struct {
	r        *Runner
	id       uint64
	seq      uint64
	tasks    []*task
	worker   string
	delivery int
	open     int // tasks still in Runner.sent (guarded by Runner.mu)
}

var (
	_ engine.Runner     = (*Runner)(nil)
	_ engine.InFlighter = (*Runner)(nil)
)

// InFlight is how many Do calls the runner can use at once.
func (r *Runner) InFlight() int { return r.inFlight }

var errClosed = errors.New("the cluster runner was closed before a worker took this item")

// Do runs one item on a worker of the cluster.
func (r *Runner) Do(ctx context.Context, in steps.Input, at *engine.Attempt) (any, error) {
	if r.xfer != nil {
		return r.xfer.run(ctx, in, at, r.do)
	}
	return r.do(ctx, in, at)
}

func (r *Runner) do(ctx context.Context, in steps.Input, at *engine.Attempt) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if e := r.noWorker.Load(); e != nil {
		return nil, *e
	}
	raw, err := protocol.AppendValue(nil, in.Item)
	if err != nil {
		return nil, steps.Permanent(fmt.Errorf("the item cannot be sent to a worker: %w", err))
	}
	if len(r.answers) == 0 || r.xfer != nil {
		// A new run: nothing to take up (and no key to build per item).
		// A transfer: true stage runs again on resume: an earlier answer
		// names output objects of the earlier run's bucket, which are not
		// this run's to fetch.
	} else if a, ok := r.answers[answerKey(r.hello, in.Index, raw)]; ok {
		if v, err := a.value(); err == nil {
			// A worker of the run this one takes up computed it.
			if at != nil {
				at.Cached, at.Worker = true, a.worker
			}
			return v, nil
		}
	}
	t := taskq.NewTask[*batch](r.nextID.Add(1), in, raw)
	if err := r.queue.Push(t); err != nil {
		return nil, err
	}
	select {
	case o := <-t.Done():
		if b := t.Holder; b != nil && at != nil {
			r.mu.Lock()
			at.Worker, at.Redelivered = b.worker, max(0, b.delivery-1)+int(t.Redelivered.Load())
			r.mu.Unlock()
		}
		return o.V, o.Err
	case <-ctx.Done():
		return r.abandon(t, ctx)
	}
}

func (r *Runner) abandon(t *task, ctx context.Context) (any, error) {
	if err, took := r.withdraw(t, ctx); took {
		return nil, err
	}
	o := <-t.Done()
	return o.V, o.Err
}

// cancel tells the workers to stop item id; cancels go out in batches.
func (r *Runner) cancel(id uint64) {
	r.cancelMu.Lock()
	r.cancels = append(r.cancels, id)
	first := len(r.cancels) == 1
	r.cancelMu.Unlock()
	if first {
		go func() {
			time.Sleep(time.Millisecond)
			r.cancelMu.Lock()
			ids := r.cancels
			r.cancels = nil
			r.cancelMu.Unlock()
			c := protocol.Cancel(ids)
			if body, err := protocol.AppendBody(nil, &c); err == nil {
				msg := nats.NewMsg(cancelSubject(r.c.run))
				msg.Header.Set(hdrStage, strconv.Itoa(r.stage))
				msg.Data = body
				_ = r.c.nc.PublishMsg(msg)
			}
		}()
	}
}

// batchSize is how many items one message carries: about batchWork of
// work at the measured time per item.
func (r *Runner) batchSize() int {
	avg := r.avgNS.Load()
	if avg <= 0 {
		return 1
	}
	return int(max(1, min(int64(batchWork)/avg, maxBatch)))
}

// publish sends queued items to the work stream, a batch per message.
func (r *Runner) publish() {
	defer r.wg.Done()
	for {
		select {
		case <-r.done:
			return
		case <-r.queue.Notify():
		}
		for r.queue.Len() > 0 {
			want := r.batchSize()
			r.linger(want)
			b := &batch{r: r, id: r.nextB.Add(1)}
			b.tasks = r.queue.Pop(want, 1, b)
			if len(b.tasks) == 0 {
				continue
			}
			if err := r.send(b); err != nil {
				r.failBatch(b, err)
			}
		}
	}
}

// linger waits a little for a full batch while earlier ones are still
// out: published at once, items would cross a few per message and the
// workers would spend their time on messages instead of items. With
// nothing out, the first items go at once (a slow stage's latency).
func (r *Runner) linger(want int) {
	if r.queue.Len() >= want || r.outstanding.Load()+r.pubs.Load() == 0 {
		return
	}
	deadline := time.NewTimer(lingerMax)
	defer deadline.Stop()
	for r.queue.Len() < want && r.outstanding.Load()+r.pubs.Load() > 0 {
		select {
		case <-r.done:
			return
		case <-deadline.C:
			return
		case <-r.queue.Notify():
		}
	}
	r.queue.Signal() // the token taken here may stand for items still queued
}

// maxPubs bounds a stage's batches published and not yet acknowledged by
// JetStream: publishing waits for no acknowledgement (a round trip to the
// server's disk per batch would cap the stage), yet a server that stops
// answering holds up only this many.
const maxPubs = 16

// send publishes b without waiting for JetStream's acknowledgement; a
// publish that fails is sent again, waiting, by publishSync.
func (r *Runner) send(b *batch) error {
	msg, id, err := r.prepare(b)
	if err != nil {
		return err
	}
	select {
	case r.pubSlots <- struct{}{}:
	case <-r.done:
		return errClosed
	}
	r.pubs.Add(1)
	f, err := r.c.js.PublishMsgAsync(msg, jetstream.WithMsgID(id))
	if err != nil {
		<-r.pubSlots
		r.pubs.Add(-1)
		return r.publishSync(b, msg, id)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		var ack *jetstream.PubAck
		select {
		case ack = <-f.Ok():
		case <-f.Err():
		}
		<-r.pubSlots
		r.pubs.Add(-1)
		if ack != nil {
			r.published(b, ack.Sequence)
			return
		}
		// Sent again under the same message ID: if the first one was
		// stored after all, JetStream drops this one.
		if err := r.publishSync(b, msg, id); err != nil {
			r.failBatch(b, err)
		}
	}()
	return nil
}

// prepare records b's items as sent and builds its message.
func (r *Runner) prepare(b *batch) (*nats.Msg, string, error) {
	items := make(protocol.Items, len(b.tasks))
	r.mu.Lock()
	for i, t := range b.tasks {
		items[i] = protocol.Item{ID: t.ID, Index: t.In.Index, Raw: t.Raw}
		r.sent[t.ID] = t
	}
	b.open = len(b.tasks)
	r.mu.Unlock()
	body, err := protocol.AppendBody(nil, &items)
	if err != nil {
		return nil, "", err
	}
	msg := nats.NewMsg(r.subject)
	msg.Header.Set(hdrRun, r.c.run)
	msg.Header.Set(hdrStage, strconv.Itoa(r.stage))
	msg.Header.Set(hdrBatch, strconv.FormatUint(b.id, 10))
	msg.Data = body
	return msg, r.c.run + "." + strconv.Itoa(r.stage) + "." + strconv.FormatUint(b.id, 10), nil
}

// published records b under its stream sequence, for the max-deliveries
// advisory. The answers may be back before the acknowledgement: only a
// batch some of whose items are still out is recorded.
func (r *Runner) published(b *batch, seq uint64) {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	b.seq = seq
	r.mu.Lock()
	open := b.open > 0
	r.mu.Unlock()
	if open {
		r.c.bySeq[seq] = b
		r.outstanding.Add(1)
	}
}

// failBatch fails the items of b still out.
func (r *Runner) failBatch(b *batch, err error) {
	var out []*task
	r.mu.Lock()
	for _, t := range b.tasks {
		if r.sent[t.ID] == t {
			r.unsend(t)
			out = append(out, t)
		}
	}
	r.mu.Unlock()
	for _, t := range out {
		t.Finish(taskq.Sent, nil, &steps.Error{Err: err, Class: "connection"})
	}
}

// publishSync publishes msg and waits for its acknowledgement. A full work
// stream (Discard: New) refuses the publish: it waits and tries again,
// which is backpressure, until the run stops or NATS is unreachable too
// long.
func (r *Runner) publishSync(b *batch, msg *nats.Msg, id string) error {
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ack, err := r.c.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			r.published(b, ack.Sequence)
			return nil
		}
		select {
		case <-r.done:
			return errClosed
		case <-time.After(wait):
		}
		if err := r.c.unreachable(); err != nil {
			return err
		}
		if r.c.nc.IsClosed() {
			return fmt.Errorf("the connection to NATS is closed: %w", err)
		}
	}
}

// settle delivers the answers of one results message.
func (r *Runner) settle(res *protocol.Results, worker string, delivery int) {
	if n := len(res.Results); n > 0 && res.Busy > 0 {
		per := max(int64(res.Busy)/int64(n), 1)
		if old := r.avgNS.Load(); old == 0 {
			r.avgNS.Store(per)
		} else {
			r.avgNS.Store((old*7 + per) / 8)
		}
	}
	// One lock for the whole message: it answers up to a few hundred items.
	tasks := make([]*task, len(res.Results))
	var done []*batch
	r.mu.Lock()
	for i := range res.Results {
		t := r.sent[res.Results[i].ID]
		if t == nil {
			continue // settled already: a late or repeated answer
		}
		tasks[i] = t
		if r.unsend(t) {
			done = append(done, t.Holder)
		}
		if t.Holder != nil {
			t.Holder.worker, t.Holder.delivery = worker, delivery
		}
	}
	r.mu.Unlock()
	if len(done) > 0 {
		r.retire(done)
	}
	for i, t := range tasks {
		if t == nil {
			continue
		}
		a := &res.Results[i]
		if a.Err != nil {
			t.Finish(taskq.Sent, nil, stagehost.ErrorOf(a.Err))
			continue
		}
		v := a.Value
		if a.Raw != nil {
			pv, err := protocol.ParseValue(a.Raw)
			if err != nil {
				t.Finish(taskq.Sent, nil, steps.Permanent(fmt.Errorf("a worker's answer does not decode: %w", err)))
				continue
			}
			v = pv
		}
		t.Finish(taskq.Sent, v, nil)
	}
}

// retire forgets batches none of whose items is out any more: the
// max-deliveries advisory has nothing left to settle in them, and the
// publisher no longer waits on them (linger).
func (r *Runner) retire(done []*batch) {
	r.c.mu.Lock()
	for _, b := range done {
		if r.c.bySeq[b.seq] == b {
			delete(r.c.bySeq, b.seq)
			r.outstanding.Add(-1)
		}
	}
	r.c.mu.Unlock()
}

// unsend takes t out of the published and unsettled (r.mu held), and
// reports whether that was the last of its batch: counted, since looking
// over the batch for each answer would cost its length per item.
func (r *Runner) unsend(t *task) (last bool) {
	delete(r.sent, t.ID)
	if b := t.Holder; b != nil {
		b.open--
		return b.open == 0
	}
	return false
}

// poisoned settles a batch that reached MaxDeliver: the first unanswered
// item fails with class crash, the rest goes out again.
func (r *Runner) poisoned(b *batch, deliveries int) {
	var open []*task
	r.mu.Lock()
	for _, t := range b.tasks {
		if r.sent[t.ID] == t {
			r.unsend(t)
			open = append(open, t)
		}
	}
	b.delivery = deliveries
	r.mu.Unlock()
	if len(open) == 0 {
		return
	}
	open[0].Finish(taskq.Sent, nil, &steps.Error{Class: "crash", Permanent: true,
		Err: fmt.Errorf("delivered to workers %d times and never answered: each worker died or hung while it held this item (raise --ack-wait for items that run long without progress; check the worker logs)", deliveries)})
	r.queue.Requeue(open[1:])
}

// Close stops the stage's publishing; items still queued fail.
func (r *Runner) Close() error {
	r.closeOnce.Do(func() {
		close(r.done)
		for _, t := range r.queue.Close(errClosed) {
			t.Finish(taskq.Queued, nil, errClosed)
		}
		r.wg.Wait()
	})
	return nil
}
