// Package barrier holds the steps that must see all their input before they
// emit anything: sort and top. The engine hands them every item with Add,
// then calls Flush once; items that Flush does not emit are counted as
// filtered.
package barrier

import (
	"container/heap"
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// Register adds this package's kinds to r.
func Register(r *steps.Registry) {
	steps.RegisterBarrier(r, steps.Kind{
		Name:    "sort",
		Summary: "Sort all items by a key, ascending or descending.",
		Doc: "Waits for every item of the previous stage, then emits them sorted by `by` (the item itself when " +
			"omitted), like Python's `sorted(results, key=..., reverse=...)`. The sort is stable: items with equal " +
			"keys keep their arrival order, in both directions. It holds every item in memory.\n\n" +
			"Keys of different types never make the sort fail; they are ordered null < false < true < numbers < " +
			"times < strings < lists < mappings. Numbers compare by value (`3` equals `3.0`), strings byte by " +
			"byte, lists element by element, so `by: \"${ [item.errors, item.file] }\"` sorts by errors, then by " +
			"file. An item without the key (such as a kept error) has a null key: first ascending, last with " +
			"`desc: true`.",
		Result:  "The items themselves, reordered.",
		Example: "by: \"${ item.errors }\"\ndesc: true",
	}, newSort)
	steps.RegisterBarrier(r, steps.Kind{
		Name:    "top",
		Summary: "Keep the first n items, by a key when given, in bounded memory.",
		Doc: "Waits for every item of the previous stage and emits the first `n`: the first `n` to arrive without " +
			"`by`, otherwise the `n` smallest keys (largest with `desc: true`) in key order, like " +
			"`sorted(results, key=..., reverse=True)[:n]`. Only `n` items are ever held, whatever the size of the " +
			"input. Ties keep arrival order, so the result is the same as a stable sort cut at `n`. Keys are " +
			"ordered as for `sort`. Items not kept are reported as filtered.",
		Result:  "At most n of the items, in order.",
		Example: "n: 5\nby: \"${ item.errors }\"\ndesc: true",
	}, newTop)
}

// SortConfig holds the options of 'sort'.
type SortConfig struct {
	By   *tmpl.T `yaml:"by" desc:"Expression giving the sort key of an item. Default: the item itself. A list such as '${ [item.a, item.b] }' sorts by a, then by b." example:"${ item.errors }"`
	Desc bool    `yaml:"desc" default:"false" desc:"Largest keys first."`
}

// TopConfig holds the options of 'top'.
type TopConfig struct {
	N    int     `yaml:"n" required:"true" desc:"How many items to keep (at least 1)." example:"5"`
	By   *tmpl.T `yaml:"by" desc:"Expression giving the key that ranks the items. Default: none, the first n items to arrive are kept." example:"${ item.errors }"`
	Desc bool    `yaml:"desc" default:"false" desc:"Keep the largest keys instead of the smallest."`
}

func (c *TopConfig) Validate() error {
	if c.N < 1 {
		return fmt.Errorf("top n must be at least 1, got %d", c.N)
	}
	return nil
}

// entry is an item with its sort key and arrival number.
type entry struct {
	in  steps.Input
	key any
	seq int64
}

// keyer evaluates a stage's 'by' for one item; with no 'by' the key is the
// item itself.
type keyer struct {
	by   *tmpl.T
	env  *steps.Env
	desc bool
}

func (k *keyer) key(in steps.Input) (any, error) {
	if k.by == nil {
		return normalizeKey(in.Item), nil
	}
	s := &tmpl.Scope{Item: in.Item, Index: in.Index, Ctx: context.Background()}
	if k.env != nil {
		s.Vars, s.Env = k.env.Vars, k.env.Env
	}
	v, err := k.by.Eval(s)
	if err != nil {
		return nil, fmt.Errorf("cannot compute the sort key of item %d: %w", in.Index, err)
	}
	return normalizeKey(v), nil
}

// before reports whether a leaves before b: by key in the chosen direction,
// then by arrival, which keeps equal keys stable either way.
func (k *keyer) before(a, b *entry) bool {
	c := compare(a.key, b.key)
	if k.desc {
		c = -c
	}
	if c != 0 {
		return c < 0
	}
	return a.seq < b.seq
}

// emitAll emits entries in order, stopping at the first refusal.
func emitAll(ctx context.Context, es []*entry, emit func(steps.Input) error) error {
	for _, e := range es {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := emit(e.in); err != nil {
			return err
		}
	}
	return nil
}

// ---- sort

type sorter struct {
	keyer
	mu      sync.Mutex
	entries []*entry
}

func newSort(c *SortConfig, env *steps.Env) (steps.Barrier, error) {
	return &sorter{keyer: keyer{by: c.By, env: env, desc: c.Desc}}, nil
}

func (s *sorter) Add(in steps.Input) error {
	k, err := s.key(in)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, &entry{in: in, key: k, seq: int64(len(s.entries))})
	return nil
}

func (s *sorter) Flush(ctx context.Context, emit func(steps.Input) error) error {
	s.mu.Lock()
	es := s.entries
	s.entries = nil
	s.mu.Unlock()
	sort.Slice(es, func(i, j int) bool { return s.before(es[i], es[j]) })
	return emitAll(ctx, es, emit)
}

// ---- top

type topper struct {
	keyer
	n    int
	mu   sync.Mutex
	seq  int64
	kept topHeap
}

// topHeap keeps the worst kept entry at the root, where a better newcomer
// replaces it.
type topHeap struct {
	es []*entry
	k  *keyer
}

func (h *topHeap) Len() int           { return len(h.es) }
func (h *topHeap) Less(i, j int) bool { return h.k.before(h.es[j], h.es[i]) }
func (h *topHeap) Swap(i, j int)      { h.es[i], h.es[j] = h.es[j], h.es[i] }
func (h *topHeap) Push(x any)         { h.es = append(h.es, x.(*entry)) }
func (h *topHeap) Pop() any {
	e := h.es[len(h.es)-1]
	h.es = h.es[:len(h.es)-1]
	return e
}

func newTop(c *TopConfig, env *steps.Env) (steps.Barrier, error) {
	if c.N < 1 {
		return nil, fmt.Errorf("top n must be at least 1, got %d", c.N)
	}
	t := &topper{keyer: keyer{by: c.By, env: env, desc: c.Desc}, n: c.N}
	t.kept = topHeap{es: make([]*entry, 0, min(c.N, 1024)), k: &t.keyer}
	return t, nil
}

func (t *topper) Add(in steps.Input) error {
	var k any
	if t.by != nil {
		var err error
		if k, err = t.key(in); err != nil {
			return err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Without 'by' every key is null and arrival decides: the first n
	// items are kept and no later one can beat them.
	e := &entry{in: in, key: k, seq: t.seq}
	t.seq++
	switch {
	case len(t.kept.es) < t.n:
		heap.Push(&t.kept, e)
	case t.before(e, t.kept.es[0]):
		t.kept.es[0] = e
		heap.Fix(&t.kept, 0)
	}
	return nil
}

func (t *topper) Flush(ctx context.Context, emit func(steps.Input) error) error {
	t.mu.Lock()
	es := t.kept.es
	t.kept.es = nil
	t.mu.Unlock()
	sort.Slice(es, func(i, j int) bool { return t.before(es[i], es[j]) })
	return emitAll(ctx, es, emit)
}

var (
	_ steps.Barrier = (*sorter)(nil)
	_ steps.Barrier = (*topper)(nil)
)
