package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flow/steps"
)

// Labels route a stage's items to the workers that offer every label the
// stage requires (`labels: [gpu]` on the stage, `flow worker --label gpu`).
//
// The JetStream way: a labelled stage publishes to
// flow.work.L.KEY.RUN.STAGE, KEY being its sorted labels joined by '+', and
// each set of labels has a durable consumer of its own on FLOW_WORK
// (flow-workers-KEY, filtering flow.work.L.KEY.>), beside the shared one,
// which filters flow.work.*.* (unlabelled work). The filters never overlap,
// as a work-queue stream requires. A worker pulls from the shared consumer
// and from every label consumer whose labels it offers, in turn, so that
// no set of labels it serves starves the others.

// anyLabel, in a worker's labels, offers every label: the in-process
// workers of a run on its embedded server, so that a pipeline written for
// a cluster runs on a laptop as it is.
const anyLabel = "*"

// sharedFilter is the shared consumer's: RUN.STAGE, nothing labelled.
const sharedFilter = "flow.work.*.*"

// labelKey is the canonical name of a set of labels: sorted, each once,
// joined by '+' ("" for none). Labels are checked by spec.ValidLabel, so
// the key is a valid subject token and consumer name.
func labelKey(labels []string) string {
	ls := slices.Clone(labels)
	slices.Sort(ls)
	return strings.Join(slices.Compact(ls), "+")
}

func labelConsumer(key string) string { return workConsumer + "-" + key }

func labelledSubject(key, run string, stage int) string {
	return "flow.work.L." + key + "." + run + "." + strconv.Itoa(stage)
}

// offers reports whether a worker with labels has every label of key.
func offers(labels []string, key string) bool {
	if key == "" || slices.Contains(labels, anyLabel) {
		return true
	}
	for _, l := range strings.Split(key, "+") {
		if !slices.Contains(labels, l) {
			return false
		}
	}
	return true
}

// ensureLabelConsumer makes sure the consumer of a set of labels exists,
// with the shared consumer's ack wait and delivery bounds.
func ensureLabelConsumer(ctx context.Context, st *store, key string) error {
	ackWait, maxDeliver := st.consumerSettings(ctx)
	maxPending := 4096
	if info, err := st.cons.Info(ctx); err == nil {
		maxPending = info.Config.MaxAckPending
	}
	_, err := st.work.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: labelConsumer(key), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: ackWait, MaxDeliver: maxDeliver, MaxAckPending: maxPending,
		FilterSubject: "flow.work.L." + key + ".>",
	})
	if errors.Is(err, jetstream.ErrConsumerExists) {
		_, err = st.work.Consumer(ctx, labelConsumer(key))
	}
	if err != nil {
		return fmt.Errorf("the consumer of the workers labelled %s: %w", strings.ReplaceAll(key, "+", ", "), err)
	}
	return nil
}

// sources are the consumers a worker pulls from: the shared one and those
// of the label sets it offers, looked up again every few seconds (a run
// creates its stage's consumer before it publishes there).
type sources struct {
	mu    sync.Mutex
	at    time.Time
	cons  []jetstream.Consumer
	round int
}

const sourcesRefresh = 2 * time.Second

// list returns the consumers to pull from, rotated by one at each call so
// that each in turn is asked first.
func (w *Worker) pullFrom(ctx context.Context) []jetstream.Consumer {
	s := &w.srcs
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cons == nil || time.Since(s.at) > sourcesRefresh {
		s.cons, s.at = []jetstream.Consumer{w.st.cons}, time.Now()
		if len(w.cfg.Labels) > 0 {
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			names := w.st.work.ConsumerNames(lctx)
			for name := range names.Name() {
				key, ok := strings.CutPrefix(name, workConsumer+"-")
				if !ok || !offers(w.cfg.Labels, key) {
					continue
				}
				if c, err := w.st.work.Consumer(lctx, name); err == nil {
					s.cons = append(s.cons, c)
				}
			}
			cancel()
		}
	}
	s.round++
	n := len(s.cons)
	out := make([]jetstream.Consumer, n)
	for i := range n {
		out[i] = s.cons[(s.round+i)%n]
	}
	return out
}

// watchLabels warns when no live worker offers the labels of a stage, and
// once none has for Settings.Unreachable, fails its items out and refuses
// new ones (until one comes): a stage nobody can run must not hang.
func (r *Runner) watchLabels(stderr io.Writer) {
	defer r.wg.Done()
	every := min(time.Second, r.c.settings.Unreachable/4)
	warnAfter := min(10*time.Second, r.c.settings.Unreachable/2)
	t := time.NewTicker(every)
	defer t.Stop()
	var since time.Time
	warned := false
	for {
		select {
		case <-r.done:
			return
		case <-t.C:
		}
		if r.labelsOffered() {
			since, warned = time.Time{}, false
			r.noWorker.Store(nil)
			continue
		}
		if since.IsZero() {
			since = time.Now()
		}
		gone := time.Since(since)
		names := strings.ReplaceAll(r.labels, "+", ", ")
		if gone >= warnAfter && !warned {
			warned = true
			fmt.Fprintf(stderr, "flow: stage %q needs a worker labelled %s, and no live worker offers them (flow workers --nats URL lists them); start one with flow worker --label %s\n",
				r.name, names, strings.ReplaceAll(r.labels, "+", " --label "))
		}
		if gone >= r.c.settings.Unreachable {
			err := error(&steps.Error{Class: "no_worker", Err: fmt.Errorf("no live worker has offered the labels %s that stage %q requires for %s: start flow worker --label %s, or change the stage's labels:",
				names, r.name, gone.Round(time.Second), strings.ReplaceAll(r.labels, "+", " --label "))})
			r.noWorker.Store(&err)
			r.failSent(err)
		}
	}
}

// labelsOffered asks the workers bucket whether a live worker offers the
// stage's labels; when NATS cannot tell, it says yes (unreachability has
// its own bound).
func (r *Runner) labelsOffered() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, err := Workers(ctx, r.c.nc)
	if err != nil {
		return true
	}
	for _, w := range ws {
		if offers(w.Labels, r.labels) {
			return true
		}
	}
	return false
}
