package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// readResults (re)starts reading this run's answers from stream sequence
// from (0: from the first).
func (c *Client) readResults(ctx context.Context, from uint64) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{resultsFilter(c.run)}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := c.js.OrderedConsumer(ctx, resultsStream, cfg)
	if err != nil {
		return err
	}
	cc, err := cons.Consume(c.onResults)
	if err != nil {
		return err
	}
	c.resMu.Lock()
	old := c.results
	c.results = cc
	c.resMu.Unlock()
	if old != nil {
		old.Stop()
	}
	c.lastAt.Store(time.Now().UnixNano())
	return nil
}

func (c *Client) sawResult(m jetstream.Msg) {
	if md, err := m.Metadata(); err == nil {
		for {
			old := c.lastSeq.Load()
			if md.Sequence.Stream <= old || c.lastSeq.CompareAndSwap(old, md.Sequence.Stream) {
				break
			}
		}
	}
	c.lastAt.Store(time.Now().UnixNano())
}

// watchResults restarts the reading of answers when it has stalled: items
// are out, nothing was read for quiet, and the stream holds answers of
// this run past the last one read. The ordered consumer that reads them
// is a single copy on one server; when that server dies in a cluster, the
// client may stay connected to another and never hear of it (seen with
// one node of three killed: every answer in the stream, the run waiting).
func (c *Client) watchResults(quiet time.Duration) {
	if time.Since(time.Unix(0, c.lastAt.Load())) < quiet {
		return
	}
	c.mu.Lock()
	var stages []int
	for idx, r := range c.runners {
		r.mu.Lock()
		if len(r.sent) > 0 {
			stages = append(stages, idx)
		}
		r.mu.Unlock()
	}
	c.mu.Unlock()
	if len(stages) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.js.Stream(ctx, resultsStream)
	if err != nil {
		return
	}
	last := c.lastSeq.Load()
	for _, idx := range stages {
		m, err := s.GetLastMsgForSubject(ctx, resultsSubject(c.run, idx))
		if err == nil && m.Sequence > last {
			_ = c.readResults(ctx, last+1)
			return
		}
	}
}

// refreshRun keeps the run's key alive. When the key lapsed meanwhile
// (JetStream electing a leader longer than RunTTL, say), workers may have
// dropped this run's batches as a dead run's: every item out is sent
// again, and whichever answer comes first settles it.
func (c *Client) refreshRun() {
	ctx, cancel := context.WithTimeout(context.Background(), c.settings.RunTTL/3)
	defer cancel()
	val := []byte(time.Now().UTC().Format(time.RFC3339))
	rev, err := c.st.runs.Update(ctx, c.run, val, c.runRev)
	if err == nil {
		c.runRev = rev
		return
	}
	// A timeout, or the key is not at the revision written last: gone,
	// or written by an update whose acknowledgement was lost.
	rev, err = c.st.runs.Create(ctx, c.run, val)
	switch {
	case err == nil:
		c.runRev = rev
		c.mu.Lock()
		rs := make([]*Runner, 0, len(c.runners))
		for _, r := range c.runners {
			rs = append(rs, r)
		}
		c.mu.Unlock()
		for _, r := range rs {
			r.resendOut()
		}
	case errors.Is(err, jetstream.ErrKeyExists):
		if e, err := c.st.runs.Get(ctx, c.run); err == nil {
			c.runRev = e.Revision()
		}
	}
}

// resendOut puts every item published and not answered back in the queue.
func (r *Runner) resendOut() {
	r.mu.Lock()
	out := make([]*task, 0, len(r.sent))
	for _, t := range r.sent {
		r.unsend(t)
		out = append(out, t)
	}
	r.mu.Unlock()
	r.c.mu.Lock()
	for seq, b := range r.c.bySeq {
		if b.r == r {
			delete(r.c.bySeq, seq)
			r.outstanding.Add(-1)
		}
	}
	r.c.mu.Unlock()
	r.queue.Requeue(out)
}
