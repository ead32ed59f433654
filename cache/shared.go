package cache

import (
	"bytes"
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
	// renewing it (it died). Neither value nor claim: the wait was given
	// up (see KV.Claim), and the caller computes the item without one.
	// The value is the bucket's: Value.Check it against the key.
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

// Check tells whether v was stored for key (a digest): the digest of its
// parts must be the key. A writer with another idea of the key, or an
// entry written by hand, would otherwise become this machine's result.
func (v *Value) Check(key string) error {
	p := v.Parts
	p.Item = nil
	if got := cachekey.Digest(cachekey.Canonical(p)); got != key {
		return fmt.Errorf("its parts have the digest %s, not the key %s", shortKey(got), shortKey(key))
	}
	return nil
}

func shortKey(k string) string {
	if len(k) > 12 {
		return k[:12]
	}
	return k
}

// entry is a key's value in the bucket: a claim or a value.
type entry struct {
	Claim string `json:"claim,omitempty"` // the holder, while claimed
	// TTL is the claim's time to live in seconds, the one the server
	// expires it with. A claim without it was not written by this
	// version, so nothing says it ever expires: it is taken over.
	TTL int64 `json:"ttl,omitempty"`
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
	// CallTimeout bounds each request to the server (DefaultCallTimeout
	// when 0), so that a server gone away fails the shared cache, not the
	// items waiting on it.
	CallTimeout time.Duration
	// Warn hears, once, of entries in the bucket that this version cannot
	// read and takes over (nil: not said).
	Warn func(msg string)
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
	// DefaultCallTimeout bounds one request to the server.
	DefaultCallTimeout = 5 * time.Second
)

// KV is the shared cache in a JetStream key-value bucket. Each key holds
// either a claim, created with KV create (atomic create-if-absent) and a
// per-key TTL that its holder renews, or a value. A claim whose holder
// dies expires; the server then leaves a delete marker, which the waiting
// runs see and race to claim the key again with KV create, one winning.
type KV struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	subject  string // the bucket's subject prefix, for renewing with a TTL
	claimTTL time.Duration
	maxValue int
	holder   string
	callTTL  time.Duration
	warn     func(string)
	warnOnce sync.Once
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
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
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
	if !o.Existing {
		if err := checkTTLs(ctx, kv, o.Bucket); err != nil {
			return nil, err
		}
	}
	host, _ := os.Hostname()
	return &KV{nc: nc, js: js, kv: kv, subject: "$KV." + o.Bucket + ".", claimTTL: o.ClaimTTL, maxValue: o.MaxValue,
		callTTL: o.CallTimeout, warn: o.Warn,
		holder: fmt.Sprintf("%s:%d:%s", host, os.Getpid(), cachekey.Digest([]byte(time.Now().String()))[:8])}, nil
}

// checkTTLs refuses a bucket made without per-message TTLs (by hand, or by
// another tool): every claim would fail with a server error, and one that
// did not would never expire with a dead holder.
func checkTTLs(ctx context.Context, kv jetstream.KeyValue, bucket string) error {
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("the shared cache's key-value bucket %s: reading its configuration: %w", bucket, err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return nil
	}
	if c := bs.StreamInfo().Config; !c.AllowMsgTTL || c.SubjectDeleteMarkerTTL <= 0 {
		return fmt.Errorf("the shared cache's key-value bucket %s lacks per-message TTLs (it was not made by flow, or with an option missing), which its claims need; delete it (nats kv del %s) and flow makes it again as it needs it", bucket, bucket)
	}
	return nil
}

// call bounds one request to the server: at most the call timeout, and at
// most half the time ctx has left, so that a server that does not answer
// (gone, reconnecting) fails the shared cache while the item still has
// time to run. A connection known to be down fails at once.
func (s *KV) call(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if st := s.nc.Status(); st != nats.CONNECTED {
		return nil, nil, fmt.Errorf("not connected to NATS (%s)", st)
	}
	d := s.callTTL
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl) / 2; left < d {
			d = left
		}
	}
	c, cancel := context.WithTimeout(ctx, d)
	return c, cancel, nil
}

// callErr says that a request went unanswered when its own bound, not
// ctx, ended it.
func callErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
		return fmt.Errorf("NATS did not answer in time: %w", err)
	}
	return err
}

// kvKey turns a cache key (hex) into a bucket key.
func kvKey(key string) string { return "r." + key }

// Lookup reads a stored value.
func (s *KV) Lookup(ctx context.Context, key string) (*Value, bool, error) {
	cctx, cancel, err := s.call(ctx)
	if err != nil {
		return nil, false, err
	}
	defer cancel()
	e, err := s.kv.Get(cctx, kvKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, callErr(ctx, err)
	}
	var en entry
	if err := json.Unmarshal(e.Value(), &en); err != nil || en.Value == nil {
		return nil, false, nil
	}
	return en.Value, true, nil
}

// Claim: see Shared. When ctx has a deadline (the attempt's timeout), the
// wait for another run's claim takes at most half the time left: then
// Claim returns neither value nor claim, and the caller computes the item
// itself rather than let the wait time the item out.
func (s *KV) Claim(ctx context.Context, key string) (*Value, Held, error) {
	k := kvKey(key)
	// The common cases without a watcher: a value is there, or nothing
	// is and the claim is ours.
	cctx, cancel, err := s.call(ctx)
	if err != nil {
		return nil, nil, err
	}
	e, err := s.kv.Get(cctx, k)
	cancel()
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
		return nil, nil, callErr(ctx, err)
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
	if err := decodeEntry(e.Value(), &en); err != nil || en.Claim != "" || en.Value == nil {
		return nil, false
	}
	return en.Value, true
}

// decodeEntry keeps the numbers of a value's parts as written, so that
// the parts' digest can be checked against the key (Value.Check).
func decodeEntry(b []byte, en *entry) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(en)
}

// foreign tells a put entry this version cannot use: one that does not
// decode, holds neither claim nor value, or a claim with no TTL (nothing
// says it ever expires). Waiting on it would wait twice the claim TTL
// for nothing.
func foreign(e jetstream.KeyValueEntry) (string, bool) {
	var en entry
	switch err := json.Unmarshal(e.Value(), &en); {
	case err != nil:
		return fmt.Sprintf("an entry that does not decode (%v)", err), true
	case en.Claim == "" && en.Value == nil:
		return "an entry with neither claim nor value", true
	case en.Claim != "" && en.TTL <= 0:
		return fmt.Sprintf("a claim by %s without a TTL", en.Claim), true
	}
	return "", false
}

// holderOf names the run holding the claim in e, for errors.
func holderOf(e jetstream.KeyValueEntry) string {
	var en entry
	if json.Unmarshal(e.Value(), &en) == nil && en.Claim != "" {
		return en.Claim
	}
	return "another run"
}

// create claims k; nil, nil when another run has just claimed it.
func (s *KV) create(ctx context.Context, k string) (Held, error) {
	cctx, cancel, err := s.call(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	b, _ := json.Marshal(entry{Claim: s.holder, TTL: int64(s.claimTTL / time.Second)})
	rev, err := s.kv.Create(cctx, k, b, jetstream.KeyTTL(s.claimTTL))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, nil
	}
	if err != nil {
		return nil, callErr(ctx, err)
	}
	return s.hold(k, rev), nil
}

// wait watches k, claimed by another run, until its value comes or the
// claim goes (released, or expired with its holder), then claims it.
func (s *KV) wait(ctx context.Context, k string) (*Value, Held, error) {
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if dl, ok := ctx.Deadline(); ok {
		wctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(dl)/2))
	}
	defer cancel()
	w, err := s.kv.Watch(wctx, k)
	if err != nil {
		return nil, nil, callErr(ctx, err)
	}
	defer w.Stop()
	// A safety beyond the server's expiry marker: a claim unchanged for
	// twice its TTL by this run's own clock is taken over by compare and
	// set on its revision.
	stale := time.NewTimer(2 * s.claimTTL)
	defer stale.Stop()
	// A watch does not notice that the connection is gone: the
	// connection's status does.
	alive := time.NewTicker(time.Second)
	defer alive.Stop()
	var last uint64
	holder := "another run"
	for {
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, nil, fmt.Errorf("waiting for %s's claim on this item in the shared cache: %w", holder, ctx.Err())
			}
			// Half the attempt's time is gone: the item is computed here
			// too rather than time out.
			return nil, nil, nil
		case <-alive.C:
			if st := s.nc.Status(); st != nats.CONNECTED {
				return nil, nil, fmt.Errorf("waiting for %s's claim on this item: not connected to NATS (%s)", holder, st)
			}
		case <-stale.C:
			if last != 0 {
				if rev, err := s.renew(ctx, k, last, s.claimTTL); err == nil {
					return nil, s.hold(k, rev), nil
				}
			}
			stale.Reset(2 * s.claimTTL)
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() == nil && wctx.Err() != nil {
					return nil, nil, nil
				}
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
			if what, bad := foreign(e); bad {
				// Taken over by compare and set: of the runs that meet it,
				// one wins and the others wait on its claim.
				if rev, err := s.renew(ctx, k, e.Revision(), s.claimTTL); err == nil {
					s.warnOnce.Do(func() {
						if s.warn != nil {
							s.warn(fmt.Sprintf("key %s held %s, which this version of flow cannot use; it was taken over (and others like it will be, without a word)", k, what))
						}
					})
					return nil, s.hold(k, rev), nil
				}
				continue
			}
			// A claim, new or renewed.
			last = e.Revision()
			holder = holderOf(e)
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
	b, _ := json.Marshal(entry{Claim: s.holder, TTL: int64(ttl / time.Second)})
	return s.publish(ctx, k, b, rev, ttl)
}

// publish writes k if its latest revision is still rev, with a per-key TTL
// when ttl > 0 (KV update has no TTL of its own).
func (s *KV) publish(ctx context.Context, k string, b []byte, rev uint64, ttl time.Duration) (uint64, error) {
	cctx, cancel, err := s.call(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(rev)}
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	ack, err := s.js.PublishMsg(cctx, &nats.Msg{Subject: s.subject + k, Data: b}, opts...)
	if err != nil {
		return 0, callErr(ctx, err)
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
	cctx, cancel, err := s.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = s.js.PublishMsg(cctx, &nats.Msg{Subject: s.subject + kvKey(key), Data: b}, opts...)
	return callErr(ctx, err)
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
		cctx, cancel, err := h.s.call(ctx)
		if err != nil {
			return err
		}
		defer cancel()
		_, err = h.s.kv.Create(cctx, h.k, b, opts...)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil
		}
		return callErr(ctx, err)
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
	if rev == 0 {
		return
	}
	// If this fails, the claim expires by itself.
	if cctx, cancel, err := h.s.call(ctx); err == nil {
		_ = h.s.kv.Delete(cctx, h.k, jetstream.LastRevision(rev))
		cancel()
	}
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// badShared says once per stage that the shared cache held an entry for a
// key that is not the entry's. The shared cache stays on: one bad entry
// (a hand-written one, a writer with another idea of keys) says nothing
// of the others.
func (r *runner) badShared(key string, err error) {
	r.bwarn.Do(func() {
		if r.stderr != nil {
			fmt.Fprintf(r.stderr, "flow: warning: stage %s: shared cache: the entry of key %s was not written for it (%v); the item runs here and its result replaces the entry\n", r.scope.Stage, shortKey(key), err)
		}
	})
}
