package engine

import (
	"container/list"
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/flowrun/flow/clock"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/tmpl"
)

// limit is a rate and/or concurrency limit: a stage's own `rate:`, or a named
// entry of `limits:` shared by every stage that names it. With a key, each
// distinct key gets its own bucket; buckets are bounded in number and the
// least recently used idle one is dropped first.
type limit struct {
	name    string
	rate    rate.Limit // 0: no rate
	burst   int
	conc    int // 0: no concurrency bound
	key     *tmpl.T
	maxKeys int
	clk     clock.Clock

	mu      sync.Mutex
	single  *bucket
	buckets map[string]*list.Element
	lru     *list.List // front: most recently used

}

type bucket struct {
	key string
	rl  *rate.Limiter
	// rlMu and rlLast keep the times given to rl from going backwards.
	// rate.Limiter takes a time earlier than the last it saw as its new
	// "last" and credits the gap again on the next call: a waiter that read
	// the clock, then lost the CPU while another stage or worker took a
	// later token, would start at the same instant as that token and hand
	// the limit an extra one (golang/go#56287).
	rlMu   sync.Mutex
	rlLast time.Time
	sem    *semaphore.Weighted
	inUse  int
}

func newLimit(name string, r *spec.Rate, burst, conc int, key *tmpl.T, maxKeys int, clk clock.Clock) *limit {
	l := &limit{name: name, conc: conc, key: key, maxKeys: maxKeys, clk: clk}
	if r != nil && r.N > 0 {
		l.rate = rate.Limit(r.PerSecond())
		l.burst = max(burst, 1)
	}
	if key == nil {
		l.single = l.newBucket("")
	} else {
		l.buckets = map[string]*list.Element{}
		l.lru = list.New()
	}
	return l
}

func (l *limit) newBucket(key string) *bucket {
	b := &bucket{key: key}
	if l.rate > 0 {
		b.rl = rate.NewLimiter(l.rate, l.burst)
	}
	if l.conc > 0 {
		b.sem = semaphore.NewWeighted(int64(l.conc))
	}
	return b
}

// get returns the bucket of key, marked in use until put.
func (l *limit) get(key string) *bucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.single != nil {
		return l.single
	}
	if e, ok := l.buckets[key]; ok {
		l.lru.MoveToFront(e)
		b := e.Value.(*bucket)
		b.inUse++
		return b
	}
	// Evict idle buckets from the back; a bucket in use is kept, so that
	// the concurrency bound of a busy key is never forgotten mid-flight.
	for e := l.lru.Back(); e != nil && len(l.buckets) >= l.maxKeys; {
		prev := e.Prev()
		if b := e.Value.(*bucket); b.inUse == 0 {
			l.lru.Remove(e)
			delete(l.buckets, b.key)
		}
		e = prev
	}
	b := l.newBucket(key)
	b.inUse = 1
	l.buckets[key] = l.lru.PushFront(b)
	return b
}

func (l *limit) put(b *bucket) {
	if l.single != nil {
		return
	}
	l.mu.Lock()
	b.inUse--
	l.mu.Unlock()
}

func (l *limit) keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// wait takes one rate token, sleeping on the engine clock until it is due.
func (l *limit) wait(ctx context.Context, b *bucket) error {
	if b.rl == nil {
		return nil
	}
	now := l.clk.Now()
	b.rlMu.Lock()
	now = b.monotonic(now)
	r := b.rl.ReserveN(now, 1)
	b.rlMu.Unlock()
	if d := r.DelayFrom(now); d > 0 {
		if err := l.clk.SleepUntil(ctx, now.Add(d)); err != nil {
			now := l.clk.Now()
			b.rlMu.Lock()
			r.CancelAt(b.monotonic(now))
			b.rlMu.Unlock()
			return err
		}
	}
	return nil
}

// monotonic returns t, or the latest time rl was given if t is earlier: a
// time read before another waiter's, reaching the lock after it. The clock
// has passed that latest time already, so it is no later than now.
// Called with rlMu held.
func (b *bucket) monotonic(t time.Time) time.Time {
	if t.Before(b.rlLast) {
		return b.rlLast
	}
	b.rlLast = t
	return t
}

// limiter is the ordered set of limits one stage obeys.
type limiter struct {
	limits []*limit
}

// held is what one attempt holds: the buckets, for release.
type held struct {
	b    [4]*bucket
	more []*bucket
}

func (h *held) set(i int, b *bucket) {
	if i < len(h.b) {
		h.b[i] = b
		return
	}
	h.more = append(h.more, b)
}

func (h *held) at(i int) *bucket {
	if i < len(h.b) {
		return h.b[i]
	}
	return h.more[i-len(h.b)]
}

// keysOf evaluates the key of every keyed limit for one item.
func (lm *limiter) keysOf(s *tmpl.Scope) ([]string, error) {
	var keys []string
	for i, l := range lm.limits {
		if l.key == nil {
			continue
		}
		if keys == nil {
			keys = make([]string, len(lm.limits))
		}
		v, err := l.key.Eval(s)
		if err != nil {
			return nil, fmt.Errorf("key of limit %q: %w", l.name, err)
		}
		keys[i] = tmpl.Stringify(v)
	}
	return keys, nil
}

// acquire takes every concurrency slot (in a fixed order, so that two stages
// sharing limits cannot deadlock), then every rate token. It is called before
// each attempt, retries included.
func (lm *limiter) acquire(ctx context.Context, keys []string, h *held) error {
	for i, l := range lm.limits {
		k := ""
		if keys != nil {
			k = keys[i]
		}
		b := l.get(k)
		h.set(i, b)
		if b.sem != nil {
			if err := b.sem.Acquire(ctx, 1); err != nil {
				l.put(b)
				lm.release(h, i)
				return context.Cause(ctx)
			}
		}
	}
	for i, l := range lm.limits {
		if err := l.wait(ctx, h.at(i)); err != nil {
			lm.release(h, len(lm.limits))
			return err
		}
	}
	return nil
}

// release gives back the first n buckets and their concurrency slots.
func (lm *limiter) release(h *held, n int) {
	for i := 0; i < n; i++ {
		b := h.at(i)
		if b.sem != nil {
			b.sem.Release(1)
		}
		lm.limits[i].put(b)
	}
	h.more = h.more[:0]
}

func (lm *limiter) done(h *held) { lm.release(h, len(lm.limits)) }

// buildLimits makes the named limits of a pipeline, shared by its stages.
func buildLimits(p *spec.Pipeline, clk clock.Clock) map[string]*limit {
	out := map[string]*limit{}
	for name, l := range p.Limits {
		if l == nil {
			continue
		}
		out[name] = newLimit(name, l.Rate, l.Burst, l.Concurrency, l.Key, l.MaxKeys, clk)
	}
	return out
}

// stageLimiter returns the limits a stage obeys: its own rate, then the
// named limits sorted by name; nil when there are none.
func stageLimiter(s *spec.Stage, named map[string]*limit, clk clock.Clock) *limiter {
	var ls []*limit
	if s.Rate != nil {
		ls = append(ls, newLimit("rate of stage "+s.Name, s.Rate, s.Burst, 0, nil, 0, clk))
	}
	names := append([]string(nil), s.Limit...)
	sort.Strings(names)
	for i, n := range names {
		if i > 0 && names[i-1] == n {
			continue
		}
		if l := named[n]; l != nil {
			ls = append(ls, l)
		}
	}
	if len(ls) == 0 {
		return nil
	}
	return &limiter{limits: ls}
}
