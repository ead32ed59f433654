package taskq

import (
	"errors"
	"fmt"
	"testing"
	"unsafe"

	"github.com/flowrun/flow/steps"
)

type holder struct{ name string }

func sent(q *Queue[*holder], n int, h *holder) []*Task[*holder] {
	for i := range n {
		if err := q.Push(NewTask[*holder](uint64(i+1), steps.Input{Index: int64(i)}, nil)); err != nil {
			panic(err)
		}
	}
	return q.Pop(n, 1, h)
}

// A lost worker's items go back to the front of the queue, counted as
// redeliveries, and the running one fails with the reason.
func TestSettleBlamesTheCulpritAndRedeliversTheRest(t *testing.T) {
	q := New[*holder]()
	w := &holder{"pid 1"}
	held := sent(q, 4, w)
	if len(held) != 4 || q.Len() != 0 || held[0].Holder != w {
		t.Fatalf("popped %d, queue %d", len(held), q.Len())
	}
	if err := q.Push(NewTask[*holder](9, steps.Input{Index: 9}, nil)); err != nil {
		t.Fatal(err)
	}
	crash := errors.New("worker died")
	n := Settle(q, held, Lost{Culprit: 2, Reason: crash, Repeated: func(int) error { return errors.New("repeated") }})
	if n != 3 {
		t.Fatalf("requeued %d, want 3", n)
	}
	o := <-held[1].Done()
	if o.Err != crash {
		t.Fatalf("culprit got %v", o.Err)
	}
	w2 := &holder{"pid 2"}
	again := q.Pop(10, 1, w2)
	var ids []uint64
	for _, x := range again {
		ids = append(ids, x.ID)
	}
	if len(ids) != 4 || ids[0] != 1 || ids[1] != 3 || ids[2] != 4 || ids[3] != 9 {
		t.Fatalf("order after redelivery %v, want [1 3 4 9]: redelivered items first", ids)
	}
	for _, x := range again[:3] {
		if x.Redelivered.Load() != 1 || x.Holder != w2 {
			t.Errorf("task %d: redelivered %d, holder %v", x.ID, x.Redelivered.Load(), x.Holder)
		}
	}
	if again[3].Redelivered.Load() != 0 {
		t.Errorf("a task never sent counts a redelivery")
	}
}

// With an exact report of what ran, items that ran before the death run
// again, until MaxCrashes deaths follow the same item: then it fails.
func TestSettleFailsAnItemAfterMaxCrashes(t *testing.T) {
	q := New[*holder]()
	var last error
	for round := 1; round <= MaxCrashes; round++ {
		held := q.Pop(10, 1, &holder{})
		if round == 1 {
			held = sent(q, 2, &holder{})
		}
		// Task 1 ran, task 2 was next; the worker died between them.
		Settle(q, held, Lost{LastStarted: 1, Exact: true, Reason: errors.New("x"),
			Repeated: func(c int) error { last = errors.New("after crashes"); return last }})
	}
	held := q.Pop(10, 1, &holder{})
	if len(held) != 1 || held[0].ID != 2 {
		t.Fatalf("left in the queue: %d tasks", len(held))
	}
	if last == nil {
		t.Fatal("the item after which every worker died never failed")
	}
}

// Settling is exactly once: an item abandoned by its caller is not requeued,
// and a closed queue fails what would have gone back.
func TestRequeueSkipsAbandonedAndFailsWhenClosed(t *testing.T) {
	q := New[*holder]()
	held := sent(q, 2, &holder{})
	held[0].State.Store(Abandoned)
	closed := errors.New("closed")
	q.Close(closed)
	if n := q.Requeue(held); n != 0 {
		t.Fatalf("requeued %d into a closed queue", n)
	}
	if o := <-held[1].Done(); o.Err != closed {
		t.Fatalf("got %v, want the close error", o.Err)
	}
	select {
	case <-held[0].Done():
		t.Fatal("an abandoned task was settled again")
	default:
	}
}

// group collects the outcomes of its tasks by slot.
type group struct{ got map[int]Outcome }

func (g *group) Settled(t *Task[*holder], v any, err error) { g.got[t.Slot] = Outcome{v, err} }

// Tasks of a batch, made in one slice and queued at once, are popped in
// order, and each outcome reaches the group once, whoever settles it.
func TestGroupTasksSettleThroughTheGroup(t *testing.T) {
	q := New[*holder]()
	g := &group{got: map[int]Outcome{}}
	tasks := make([]Task[*holder], 5)
	ptrs := make([]*Task[*holder], 5)
	for i := range tasks {
		tasks[i].Init(uint64(10+i), steps.Input{Index: int64(i)}, nil, g, i)
		ptrs[i] = &tasks[i]
	}
	if err := q.PushAll(ptrs); err != nil {
		t.Fatal(err)
	}
	w := &holder{"pid 1"}
	got := q.PopAppend(make([]*Task[*holder], 0, 8), 3, 1, 1, w)
	if len(got) != 3 || got[0].ID != 10 || got[2].ID != 12 || got[1].Holder != w {
		t.Fatalf("popped %v", got)
	}
	if tasks[0].Done() != nil {
		t.Error("a task of a group has a channel of its own")
	}
	got[0].Finish(Sent, "a", nil)
	crash := errors.New("worker died")
	Settle(q, got[1:], Lost{Culprit: 12, Reason: crash})
	if q.Len() != 3 || tasks[1].Redelivered.Load() != 1 {
		t.Fatalf("queue %d, redelivered %d", q.Len(), tasks[1].Redelivered.Load())
	}
	closed := errors.New("closed")
	for _, t := range q.Close(closed) {
		t.Finish(Queued, nil, closed)
	}
	if q.PushAll(ptrs[:1]) != closed {
		t.Error("PushAll after Close queued")
	}
	want := map[int]Outcome{0: {"a", nil}, 1: {nil, closed}, 2: {nil, crash}, 3: {nil, closed}, 4: {nil, closed}}
	if len(g.got) != len(want) {
		t.Fatalf("outcomes %v", g.got)
	}
	for i, o := range want {
		if g.got[i] != o {
			t.Errorf("task %d: got %v, want %v", i, g.got[i], o)
		}
	}
}

// The queue hands items out first in, first out across pushes, pops that
// leave some behind, and requeues, and it reuses its array: a steady
// stream of pushes and pops allocates nothing, drained or not.
func TestQueueOrderAndReuse(t *testing.T) {
	q := New[*holder]()
	h := &holder{"w"}
	next, want := uint64(1), uint64(1)
	push := func(n int) {
		ts := make([]*Task[*holder], n)
		for i := range ts {
			ts[i] = NewTask[*holder](next, steps.Input{}, nil)
			next++
		}
		if err := q.PushAll(ts); err != nil {
			t.Fatal(err)
		}
	}
	var out []*Task[*holder]
	pop := func(k int) {
		out = q.PopAppend(out[:0], k, 1, 1, h)
		for _, tk := range out {
			if tk.ID != want {
				t.Fatalf("popped %d, want %d", tk.ID, want)
			}
			want++
		}
	}
	for round := range 200 {
		push(1 + round%7*13)
		pop(1 + round%5*17)
		if round%50 == 49 {
			// A lost worker's items go back in front, in their order.
			back := q.PopAppend(nil, 3, 1, 1, h)
			if q.Requeue(back) != len(back) {
				t.Fatal("requeue")
			}
		}
	}
	pop(q.Len())
	if q.Len() != 0 || want != next {
		t.Fatalf("%d left, popped up to %d of %d", q.Len(), want-1, next-1)
	}

	ts := make([]*Task[*holder], 100)
	for i := range ts {
		ts[i] = NewTask[*holder](uint64(i+1), steps.Input{}, nil)
	}
	for _, keep := range []int{0, 1} { // drained each time, or not
		q := New[*holder]()
		if keep > 0 {
			_ = q.Push(NewTask[*holder](1000, steps.Input{}, nil))
		}
		out := make([]*Task[*holder], 0, 100)
		cycle := func() {
			for _, tk := range ts {
				tk.State.Store(Queued)
			}
			_ = q.PushAll(ts)
			out = q.PopAppend(out[:0], len(ts), 1, 1, h)
		}
		for range 10 {
			cycle() // reach the steady size
		}
		if a := testing.AllocsPerRun(100, cycle); a != 0 {
			t.Errorf("keeping %d: %.1f allocations per push and pop, want 0", keep, a)
		}
	}
}

// TestTaskLayout keeps a task at two cache lines with what the reader of
// results touches in the first (see Task).
func TestTaskLayout(t *testing.T) {
	var task Task[*int]
	if s := unsafe.Sizeof(task); s != 128 {
		t.Errorf("a task is %d bytes, want 128", s)
	}
	if o := unsafe.Offsetof(task.In); o != 64 {
		t.Errorf("the sender's fields start at byte %d, want 64", o)
	}
}

// A fair share among takers is half of what is queued, for two; with
// least, no share is smaller than least items (nor than what is left), so
// that a burst does not cross as a tail of ever smaller frames.
func TestPopShareIsAtLeastLeast(t *testing.T) {
	for _, c := range []struct {
		least int
		want  []int
	}{
		{1, []int{50, 25, 13, 6, 3, 2, 1}},
		{16, []int{50, 25, 16, 9}},
	} {
		q := New[*holder]()
		for i := range 100 {
			if err := q.Push(NewTask[*holder](uint64(i+1), steps.Input{}, nil)); err != nil {
				t.Fatal(err)
			}
		}
		w := &holder{"pid 1"}
		var got []int
		// Takers ask for up to 50 each; the last pop takes what is left.
		for q.Len() > 0 && len(got) < 10 {
			got = append(got, len(q.PopAppend(nil, 50, 2, c.least, w)))
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("least %d: pops of %v, want %v", c.least, got, c.want)
		}
	}
}
