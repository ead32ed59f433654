package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Settings are the JetStream knobs a run and its workers share. The first
// to create the work consumer sets AckWait and MaxDeliver for everybody;
// later ones use what exists.
type Settings struct {
	// AckWait is how long a batch a worker took may go without a sign of
	// life (in-progress acks every AckWait/3 while it runs) before it is
	// given to another worker: the bound on noticing a dead worker.
	AckWait time.Duration
	// MaxDeliver bounds the deliveries of one batch; past it, the item
	// that was running each time fails with class "crash".
	MaxDeliver int
	// MaxAckPending bounds the batches taken by workers and not yet acked.
	MaxAckPending int
	// RunTTL: a run whose parent has not refreshed its key for this long
	// is dead, and workers drop its work.
	RunTTL time.Duration
	// MaxWorkBytes bounds the work stream; publishing past it waits
	// (backpressure) rather than dropping anything.
	MaxWorkBytes int64
	// TransferMaxFile and TransferMaxItem bound what a transfer: true
	// stage ships for one item, each way: the size of one file, and of
	// all of an item's files together (1 GiB and 4 GiB by default).
	TransferMaxFile, TransferMaxItem int64
	// Unreachable is how long a run waits for NATS to come back (a server
	// restarting, a partition) before it fails the items it has out with
	// class "connection", which the stage's retry and on_error then
	// handle: a run never hangs on a server that is gone.
	Unreachable time.Duration
}

func (s *Settings) defaults() {
	if s.AckWait <= 0 {
		s.AckWait = 30 * time.Second
	}
	if s.MaxDeliver <= 0 {
		s.MaxDeliver = 4
	}
	if s.MaxAckPending <= 0 {
		s.MaxAckPending = 4096
	}
	if s.RunTTL <= 0 {
		s.RunTTL = 30 * time.Second
	}
	if s.MaxWorkBytes <= 0 {
		s.MaxWorkBytes = 1 << 30
	}
	if s.TransferMaxFile <= 0 {
		s.TransferMaxFile = 1 << 30
	}
	if s.TransferMaxItem <= 0 {
		s.TransferMaxItem = 4 << 30
	}
	if s.Unreachable <= 0 {
		s.Unreachable = 2 * time.Minute
	}
}

// store is the streams, consumer and buckets, made sure of by parents and
// workers alike (creating what is missing, never changing what exists).
type store struct {
	js      jetstream.JetStream
	work    jetstream.Stream
	cons    jetstream.Consumer
	hello   jetstream.KeyValue
	runs    jetstream.KeyValue
	workers jetstream.KeyValue
}

func ensure(ctx context.Context, js jetstream.JetStream, s Settings) (*store, error) {
	st := &store{js: js}
	var err error
	st.work, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: workStream, Subjects: []string{"flow.work.>"},
		Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
		MaxBytes: s.MaxWorkBytes, MaxAge: 7 * 24 * time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("the work stream %s: %w", workStream, err)
	}
	if _, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: resultsStream, Subjects: []string{"flow.results.>"},
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxAge: 24 * time.Hour, Duplicates: 10 * time.Minute,
	}); err != nil {
		return nil, fmt.Errorf("the results stream %s: %w", resultsStream, err)
	}
	st.cons, err = st.work.Consumer(ctx, workConsumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		st.cons, err = st.work.CreateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: workConsumer, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: s.AckWait, MaxDeliver: s.MaxDeliver, MaxAckPending: s.MaxAckPending,
			FilterSubject: sharedFilter, // labelled work has consumers of its own (labels.go)
			// No BackOff: it would replace AckWait as the redelivery delay.
		})
		if errors.Is(err, jetstream.ErrConsumerExists) {
			st.cons, err = st.work.Consumer(ctx, workConsumer)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the work consumer %s: %w", workConsumer, err)
	}
	kv := func(name string, ttl time.Duration) (jetstream.KeyValue, error) {
		b, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, TTL: ttl, History: 1})
		if err != nil {
			return nil, fmt.Errorf("the key-value bucket %s: %w", name, err)
		}
		return b, nil
	}
	if st.hello, err = kv(helloBucket, 7*24*time.Hour); err != nil {
		return nil, err
	}
	if st.runs, err = kv(runsBucket, s.RunTTL); err != nil {
		return nil, err
	}
	if st.workers, err = kv(workersBucket, 15*time.Second); err != nil {
		return nil, err
	}
	return st, nil
}

// consumerSettings reads the settings in force from the work consumer.
func (st *store) consumerSettings(ctx context.Context) (ackWait time.Duration, maxDeliver int) {
	info, err := st.cons.Info(ctx)
	if err != nil {
		return 30 * time.Second, 4
	}
	return info.Config.AckWait, info.Config.MaxDeliver
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
