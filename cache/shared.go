package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flow/store/cachekey"
)

// Shared is a result cache several runs, on several machines, share,
// beside each machine's state database. Claim makes sure that two runs
// never compute one item at once: one holds the item's claim, the others
// wait for its result.
type Shared interface {
	// Claim returns the stored value of key, or a claim this run holds on
	// it (then it computes the item and fills or releases the claim). A
	// claim held by another run is waited for: its result is returned
	// when it comes, or the claim is taken over when its holder stops
	// renewing it (it died).
	Claim(ctx context.Context, key string) (*Value, Held, error)
	// Put stores a value without a claim (a run that computes afresh).
	Put(ctx context.Context, key string, v Value, ttl time.Duration) error
	// Lookup reads the value of key without claiming it (for explain).
	Lookup(ctx context.Context, key string) (*Value, bool, error)
}

// Held is a claim this run holds.
type Held interface {
	// Fill stores the item's value in place of the claim and lets the
	// runs waiting on it go on. A value over the shared cache's bound is
	// not stored: the claim is released instead.
	Fill(ctx context.Context, v Value, ttl time.Duration) error
	// Release gives the claim up without a value (the item failed): a
	// waiting run claims it and computes the item itself.
	Release()
}

// Value is what the shared cache holds for a key: the result and the parts
// of the key, so that a miss elsewhere can be explained against it.
type Value struct {
	Parts  cachekey.Parts  `json:"parts"`
	Result json.RawMessage `json:"result"`
}

// entry is a key's value in the bucket: a claim or a value.
type entry struct {
	Claim string `json:"claim,omitempty"` // the holder, while claimed
	*Value
}

// KVOptions configure OpenKV.
type KVOptions struct {
	// Bucket is the JetStream key-value bucket (DefaultBucket when "").
	Bucket string
	// ClaimTTL is how long a claim lives without being renewed: the time a
	// run waits for an item whose claimer died. The holder renews it every
	// third of it. DefaultClaimTTL when 0; at least a second.
	ClaimTTL time.Duration
	// MaxValue bounds a stored value (parts and result, as JSON);
	// MaxSharedValue when 0. A larger one stays in the local store only.
	MaxValue int
	// Existing opens the bucket only if it is there (a reader such as
	// flow cache explain must not create one).
	Existing bool
}

const (
	// DefaultBucket is the bucket of the shared cache.
	DefaultBucket = "flow-cache"
	// DefaultClaimTTL: a dead claimer holds its items back this long.
	DefaultClaimTTL = 30 * time.Second
	// MaxSharedValue is the default bound of a shared value: a result
	// bigger than this (a large page) is kept by the machine that computed
	// it, and computed again by others.
	MaxSharedValue = 256 << 10
)

// KV is the shared cache in a JetStream key-value bucket. Each key holds
// either a claim, created with KV create (atomic create-if-absent) and a
// per-key TTL that its holder renews, or a value. A claim whose holder
// dies expires; the server then leaves a delete marker, which the waiting
// runs see and race to claim the key again with KV create, one winning.
type KV struct {
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	subject  string // the bucket's subject prefix, for renewing with a TTL
	claimTTL time.Duration
	maxValue int
	holder   string
}

// OpenKV opens (creating it if missing) the shared cache's bucket on nc.
func OpenKV(ctx context.Context, nc *nats.Conn, o KVOptions) (*KV, error) {
	if o.Bucket == "" {
		o.Bucket = DefaultBucket
	}
	if o.ClaimTTL <= 0 {
		o.ClaimTTL = DefaultClaimTTL
	}
	if o.ClaimTTL < time.Second {
		// JetStream's per-message TTL is counted in seconds.
		o.ClaimTTL = time.Second
	}
	if o.MaxValue <= 0 {
		o.MaxValue = MaxSharedValue
	}
	// The envelope and the headers must fit in one message too.
	if mp := int(nc.MaxPayload()) - 4096; mp > 0 && o.MaxValue > mp {
		o.MaxValue = mp
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	var kv jetstream.KeyValue
	if o.Existing {
		kv, err = js.KeyValue(ctx, o.Bucket)
	} else {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      o.Bucket,
			Description: "flow's shared result cache (docs/state.md)",
			History:     1,
			// Per-key TTLs (the claims) need it; a marker is how the waiters
			// learn that a claim expired.
			LimitMarkerTTL: 10 * time.Minute,
		})
	}
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, o.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("the shared cache's key-value bucket %s: %w", o.Bucket, err)
	}
	host, _ := os.Hostname()
	return &KV{js: js, kv: kv, subject: "$KV." + o.Bucket + ".", claimTTL: o.ClaimTTL, maxValue: o.MaxValue,
		holder: fmt.Sprintf("%s:%d:%s", host, os.Getpid(), cachekey.Digest([]byte(time.Now().String()))[:8])}, nil
}

// kvKey turns a cache key (hex) into a bucket key.
func kvKey(key string) string { return "r." + key }

// Lookup reads a stored value.
func (s *KV) Lookup(ctx context.Context, key string) (*Value, bool, error) {
	e, err := s.kv.Get(ctx, kvKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var en entry
	if err := json.Unmarshal(e.Value(), &en); err != nil || en.Value == nil {
		return nil, false, nil
	}
	return en.Value, true, nil
}

// Claim: see Shared.
func (s *KV) Claim(ctx context.Context, key string) (*Value, Held, error) {
	k := kvKey(key)
	// The common cases without a watcher: a value is there, or nothing
	// is and the claim is ours.
	e, err := s.kv.Get(ctx, k)
	switch {
	case err == nil:
		if v, ok := s.value(e); ok {
			return v, nil, nil
		}
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		if h, err := s.create(ctx, k); h != nil || err != nil {
			return nil, h, err
		}
	default:
		return nil, nil, err
	}
	return s.wait(ctx, k)
}

// value decodes an entry holding a value; a claim or an entry that does
// not decode is no value.
func (s *KV) value(e jetstream.KeyValueEntry) (*Value, bool) {
	if e.Operation() != jetstream.KeyValuePut {
		return nil, false
	}
	var en entry
	if err := json.Unmarshal(e.Value(), &en); err != nil || en.Claim != "" || en.Value == nil {
		return nil, false
	}
	return en.Value, true
}

// create claims k; nil, nil when another run has just claimed it.
func (s *KV) create(ctx context.Context, k string) (Held, error) {
	b, _ := json.Marshal(entry{Claim: s.holder})
	rev, err := s.kv.Create(ctx, k, b, jetstream.KeyTTL(s.claimTTL))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return s.hold(k, rev), nil
}

// wait watches k, claimed by another run, until its value comes or the
// claim goes (released, or expired with its holder), then claims it.
func (s *KV) wait(ctx context.Context, k string) (*Value, Held, error) {
	w, err := s.kv.Watch(ctx, k)
	if err != nil {
		return nil, nil, err
	}
	defer w.Stop()
	// A safety beyond the server's expiry marker: a claim unchanged for
	// twice its TTL by this run's own clock is taken over by compare and
	// set on its revision.
	stale := time.NewTimer(2 * s.claimTTL)
	defer stale.Stop()
	var last uint64
	for {
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-stale.C:
			if last != 0 {
				if rev, err := s.renew(ctx, k, last, s.claimTTL); err == nil {
					return nil, s.hold(k, rev), nil
				}
			}
			stale.Reset(2 * s.claimTTL)
		case e, ok := <-w.Updates():
			if !ok {
				return nil, nil, errors.New("the shared cache's watch ended")
			}
			if e == nil {
				// The current state has been delivered; nothing was there.
				if last == 0 {
					if h, err := s.create(ctx, k); h != nil || err != nil {
						return nil, h, err
					}
				}
				continue
			}
			if v, ok := s.value(e); ok {
				return v, nil, nil
			}
			if e.Operation() != jetstream.KeyValuePut {
				// Released, or expired with its holder: race for it.
				if h, err := s.create(ctx, k); h != nil || err != nil {
					return nil, h, err
				}
				continue
			}
			// A claim, new or renewed.
			last = e.Revision()
			if !stale.Stop() {
				select {
				case <-stale.C:
				default:
				}
			}
			stale.Reset(2 * s.claimTTL)
		}
	}
}

// renew replaces revision rev of k with this run's claim (compare and set)
// for ttl more.
func (s *KV) renew(ctx context.Context, k string, rev uint64, ttl time.Duration) (uint64, error) {
	b, _ := json.Marshal(entry{Claim: s.holder})
	return s.publish(ctx, k, b, rev, ttl)
}

// publish writes k if its latest revision is still rev, with a per-key TTL
// when ttl > 0 (KV update has no TTL of its own).
func (s *KV) publish(ctx context.Context, k string, b []byte, rev uint64, ttl time.Duration) (uint64, error) {
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(rev)}
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: s.subject + k, Data: b}, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// Put stores v without a claim.
func (s *KV) Put(ctx context.Context, key string, v Value, ttl time.Duration) error {
	b, err := json.Marshal(entry{Value: &v})
	if err != nil {
		return err
	}
	if len(b) > s.maxValue {
		return nil
	}
	var opts []jetstream.PublishOpt
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	_, err = s.js.PublishMsg(ctx, &nats.Msg{Subject: s.subject + kvKey(key), Data: b}, opts...)
	return err
}

// hold starts renewing the claim on k, at revision rev.
func (s *KV) hold(k string, rev uint64) *held {
	ctx, cancel := context.WithCancel(context.Background())
	h := &held{s: s, k: k, rev: rev, cancel: cancel, done: make(chan struct{})}
	go h.renewLoop(ctx)
	return h
}

type held struct {
	s      *KV
	k      string
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	rev    uint64 // 0 once the claim is lost
}

func (h *held) renewLoop(ctx context.Context) {
	defer close(h.done)
	t := time.NewTicker(h.s.claimTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.mu.Lock()
			if h.rev == 0 {
				h.mu.Unlock()
				return
			}
			rev, err := h.s.renew(ctx, h.k, h.rev, h.s.claimTTL)
			if err == nil {
				h.rev = rev
			} else if ctx.Err() == nil && isWrongSequence(err) {
				// Taken over (this run was stalled past the TTL): the
				// other run computes the item too.
				h.rev = 0
			}
			h.mu.Unlock()
		}
	}
}

// stop ends the renewals and returns the claim's revision (0: lost).
func (h *held) stop() uint64 {
	h.cancel()
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	rev := h.rev
	h.rev = 0
	return rev
}

func (h *held) Fill(ctx context.Context, v Value, ttl time.Duration) error {
	rev := h.stop()
	b, err := json.Marshal(entry{Value: &v})
	if err != nil || len(b) > h.s.maxValue {
		h.release(ctx, rev)
		return err
	}
	if rev == 0 {
		// The claim was taken over: the value goes in anyway, unless the
		// new holder stored its own first (then both are the item's).
		var opts []jetstream.KVCreateOpt
		if ttl > 0 {
			opts = append(opts, jetstream.KeyTTL(ttl))
		}
		_, err := h.s.kv.Create(ctx, h.k, b, opts...)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil
		}
		return err
	}
	_, err = h.s.publish(ctx, h.k, b, rev, ttl)
	if isWrongSequence(err) {
		return nil
	}
	return err
}

func (h *held) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h.release(ctx, h.stop())
}

func (h *held) release(ctx context.Context, rev uint64) {
	if rev != 0 {
		// If this fails, the claim expires by itself.
		_ = h.s.kv.Delete(ctx, h.k, jetstream.LastRevision(rev))
	}
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
