package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flow/protocol"
)

// RunOptions name a run in the cluster and say which earlier runs it takes
// up (flow run --resume).
type RunOptions struct {
	// ID names the run in subjects and keys; "" makes a new one. RunIDFor
	// derives it from the run's id in the state database, so that a later
	// --resume finds the run's answers in FLOW_RESULTS.
	ID string
	// Resume lists earlier runs of the same pipeline, newest first: the
	// answers their workers published (before or after their parent died)
	// settle this run's items of the same stage, index and value instead
	// of running them again.
	Resume []string
}

// RunIDFor is the cluster's name of the run the state database calls
// stateID: a valid subject token (no dots).
func RunIDFor(stateID string) string {
	return "r" + strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_").Replace(stateID)
}

// answer is a success an earlier run's worker published.
type answer struct {
	res    protocol.Result
	worker string
}

// answerKey identifies an item of a stage across runs: the stage's hello
// (the pipeline text, the effective variables, the stage: a change to any
// of them makes earlier answers unusable), the item's index and its value.
func answerKey(hello string, index int64, raw []byte) string {
	return hello + "\x00" + strconv.FormatInt(index, 10) + "\x00" + string(raw)
}

// helloDigest names a hello in the answers published for it.
func helloDigest(body []byte) string {
	s := sha256.Sum256(body)
	return hex.EncodeToString(s[:16])
}

func drainSubject(run string) string { return "flow.drain." + run }

// adopt takes up the earlier runs prev: their work leaves the stream (a
// dead parent's batches would otherwise keep workers busy until its key
// expires), the workers finish the items of theirs they are running, and
// the answers of all of them are read back for Runner.Do.
func (c *Client) adopt(prev []string) error {
	for _, run := range prev {
		if run == c.run || run == "" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = c.st.runs.Delete(ctx, run)
		err := c.st.work.Purge(ctx, jetstream.WithPurgeSubject("flow.work."+run+".>"))
		if err == nil { // the batches of its stages that require labels
			err = c.st.work.Purge(ctx, jetstream.WithPurgeSubject("flow.work.L.*."+run+".>"))
		}
		cancel()
		if err != nil {
			return fmt.Errorf("taking up run %s: removing its work from %s: %w", run, workStream, err)
		}
		c.drain(run)
		if err := c.readAnswers(run); err != nil {
			return fmt.Errorf("taking up run %s: reading its answers from %s: %w", run, resultsStream, err)
		}
	}
	return nil
}

// drain asks every live worker to stop running items of run and waits,
// for at most the ack wait, until each has answered the items it was
// running: those answers are then in the results stream, and nothing of
// run runs while this run computes what is missing.
func (c *Client) drain(run string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ws, _ := Workers(ctx, c.nc)
	cancel()
	want := map[string]bool{}
	for _, w := range ws {
		// A worker announces itself every 5 s: an older entry is a dead
		// worker's, which will not answer.
		if time.Since(w.Seen) < 8*time.Second {
			want[w.Name] = true
		}
	}
	if len(want) == 0 {
		return
	}
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return
	}
	defer sub.Unsubscribe()
	if c.nc.PublishRequest(drainSubject(run), inbox, nil) != nil {
		return
	}
	deadline := time.Now().Add(c.settings.AckWait)
	for len(want) > 0 {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return
		}
		delete(want, string(m.Data))
	}
}

// readAnswers reads run's answers from the results stream.
func (c *Client) readAnswers(run string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := c.st.resultsInfo(ctx, resultsFilter(run))
	if err != nil {
		return err
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return nil
	}
	cons, err := c.js.OrderedConsumer(ctx, resultsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{resultsFilter(run)}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return err
	}
	for read := uint64(0); read < total; {
		batch, err := cons.Fetch(int(min(total-read, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			c.learn(m)
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if got == 0 {
			return fmt.Errorf("%d of %d answers read", read, total)
		}
		read += uint64(got)
	}
	return nil
}

// learn keeps the successes of one results message of an earlier run.
func (c *Client) learn(m jetstream.Msg) {
	h := m.Headers()
	hello := h.Get(hdrHello)
	off, err := strconv.Atoi(h.Get(hdrItems))
	data := m.Data()
	if hello == "" || err != nil || off < 0 || off > len(data) {
		return // from a worker that does not say what it answered
	}
	rmsg, err1 := protocol.ParseBody(data[:off])
	imsg, err2 := protocol.ParseBody(data[off:])
	res, ok1 := rmsg.(*protocol.Results)
	items, ok2 := imsg.(*protocol.Items)
	if err1 != nil || err2 != nil || !ok1 || !ok2 {
		return
	}
	byID := make(map[uint64]*protocol.Item, len(*items))
	for i := range *items {
		byID[(*items)[i].ID] = &(*items)[i]
	}
	worker := h.Get(hdrWorker)
	if c.answers == nil {
		c.answers = map[string]answer{}
	}
	for _, r := range res.Results {
		it := byID[r.ID]
		if r.Err != nil || it == nil {
			continue // failures run again, as with the result cache
		}
		raw, err := protocol.AppendValue(nil, it.Value)
		if err != nil {
			continue
		}
		k := answerKey(hello, it.Index, raw)
		if _, seen := c.answers[k]; !seen { // the newest run's answer wins
			c.answers[k] = answer{res: r, worker: worker}
		}
	}
}

func (st *store) resultsInfo(ctx context.Context, filter string) (*jetstream.StreamInfo, error) {
	s, err := st.js.Stream(ctx, resultsStream)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx, jetstream.WithSubjectFilter(filter))
}

// onDrain makes a worker stop the items of runs taken up by another.
func (w *Worker) onDrain(m *nats.Msg) {
	run := m.Subject[len("flow.drain."):]
	w.mu.Lock()
	if len(w.gone) > 1<<12 {
		w.gone = map[string]bool{}
	}
	w.gone[run] = true
	w.mu.Unlock()
	go func() {
		defer w.forget(run)
		// Answer once the batches of run running here have answered what
		// they ran (they stop after their current item).
		for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			w.mu.Lock()
			n := w.batches[run]
			w.mu.Unlock()
			if n == 0 {
				break
			}
		}
		_ = m.Respond([]byte(w.cfg.Name))
	}()
}

func (a answer) value() (any, error) {
	if a.res.Raw != nil {
		return protocol.ParseValue(a.res.Raw)
	}
	return a.res.Value, nil
}
