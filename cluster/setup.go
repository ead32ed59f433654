package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/nats-io/nats.go"
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
	// Replicas is how many copies JetStream keeps of the streams and
	// buckets flow creates. 0 decides: 3 on a cluster of three or more
	// servers (one node may die and nothing is lost), 1 on a single
	// server; a stream that exists keeps the replicas it has.
	Replicas int
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

func ensure(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, s Settings) (*store, error) {
	st := &store{js: js}
	auto := clusterReplicas(nc)
	replicas := func(stream string) int {
		if s.Replicas > 0 {
			return s.Replicas
		}
		// Never scale down what exists: a client that has not yet heard
		// of every node of the cluster must not undo its replication.
		if str, err := js.Stream(ctx, stream); err == nil {
			return max(str.CachedInfo().Config.Replicas, 1)
		}
		return auto
	}
	var err error
	st.work, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: workStream, Subjects: []string{"flow.work.>"},
		Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
		MaxBytes: s.MaxWorkBytes, MaxAge: 7 * 24 * time.Hour, Replicas: replicas(workStream),
	})
	if err != nil {
		return nil, fmt.Errorf("the work stream %s: %w", workStream, err)
	}
	if _, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: resultsStream, Subjects: []string{"flow.results.>"},
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxAge: resultsMaxAge, Duplicates: 10 * time.Minute, Replicas: replicas(resultsStream),
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
		b, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, TTL: ttl, History: 1, Replicas: replicas("KV_" + name)})
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

// resultsMaxAge is how long answers stay in FLOW_RESULTS: the time a run
// whose parent died has to be resumed (flow run --resume) without running
// again what its workers finished.
const resultsMaxAge = 24 * time.Hour

// clusterReplicas is the replication the servers nc reaches allow: 3 when
// they form a cluster of at least three (the URLs given and those the
// servers announce), else 1.
func clusterReplicas(nc *nats.Conn) int {
	if nc == nil || nc.ConnectedClusterName() == "" {
		return 1
	}
	seen := map[string]bool{}
	for _, u := range nc.Servers() {
		if pu, err := url.Parse(u); err == nil {
			seen[pu.Port()+"@"+canonicalHost(pu.Hostname())] = true
		}
	}
	if len(seen) >= 3 {
		return 3
	}
	return 1
}

func canonicalHost(h string) string {
	if h == "localhost" {
		return "127.0.0.1"
	}
	return h
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
