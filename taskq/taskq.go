// Package taskq is the bookkeeping that a runner handing items to workers
// elsewhere needs, whatever carries them: the queue of items no worker has
// yet, each item's state (queued, sent, done, abandoned by its caller),
// redelivery of the items a lost worker held, and the blame for a worker's
// death. procpool uses it over pipes; a runner over a message queue reuses
// it rather than writing it again.
//
// The rules it encodes:
//   - an item is settled exactly once: whoever moves it out of sent
//     (a result, a redelivery, an abandon) owns it;
//   - items a lost worker held go back to the front of the queue with no
//     error (they were not at fault), counted in Task.Redelivered, which is
//     not the item's retry budget;
//   - the item the worker was running when it died fails (class "crash");
//     items that ran before it in that worker run again, but an item after
//     which MaxCrashes workers died fails too (it leaves something behind
//     that kills workers).
package taskq

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowrun/flow/steps"
)

// Task states.
const (
	Queued int32 = iota
	Sent
	Done
	Abandoned
)

// Task is one item in a runner, held by the worker H it was sent to.
//
// The fields are laid out for the goroutines that pass a task along, each
// often on another core: the first 64 bytes hold all that the reader of
// results touches (match, settle, blame), the rest what the sender reads,
// and a task takes exactly two cache lines, so that the tasks of a batch,
// made as one slice, do not straddle lines. TestTaskLayout keeps it so.
type Task[H any] struct {
	ID    uint64
	State atomic.Int32
	// Redelivered counts the times the item went back to the queue
	// because its worker was lost.
	Redelivered atomic.Int32
	// Holder is set before the move to Sent.
	Holder H
	// group, when set, takes the outcome instead of done (see Init);
	// Slot is the task's place in it.
	group Group[H]
	Slot  int
	done  chan Outcome
	// Crashes counts the workers that died between items after running
	// this one; only the holder touches it.
	Crashes int32
	_       int32

	In  steps.Input
	Raw []byte // the item as encoded for the transport
	// abandonedAt is when the caller gave up on the item, on the
	// monotonic clock of epoch (guarded by the holder's lock).
	abandonedAt time.Duration
	_           [8]byte
}

// epoch is the origin of Task.abandonedAt: a duration since it is
// monotonic, as a time.Time is, in a third of the bytes.
var epoch = time.Now()

// MarkAbandoned records that the caller gave up on t now.
func (t *Task[H]) MarkAbandoned() { t.abandonedAt = time.Since(epoch) }

// SinceAbandoned is the time since MarkAbandoned.
func (t *Task[H]) SinceAbandoned() time.Duration { return time.Since(epoch) - t.abandonedAt }

// Outcome is a settled task's result.
type Outcome struct {
	V   any
	Err error
}

// NewTask makes a queued task whose outcome is delivered on Done.
func NewTask[H any](id uint64, in steps.Input, raw []byte) *Task[H] {
	return &Task[H]{ID: id, In: in, Raw: raw, done: make(chan Outcome, 1)}
}

// Group takes the outcomes of tasks made with Init: one caller waiting on
// many items, as a batch, instead of a channel and a goroutine per item.
// Settled is called exactly once per task, by whoever settles it (a
// result, a worker's loss, a closed queue), and must not block.
type Group[H any] interface {
	Settled(t *Task[H], v any, err error)
}

// Init makes t, which may be an element of a slice of tasks (one
// allocation for a batch), a queued task whose outcome goes to g.Settled.
// Done is nil for such a task.
func (t *Task[H]) Init(id uint64, in steps.Input, raw []byte, g Group[H], slot int) {
	t.ID, t.In, t.Raw, t.group, t.Slot = id, in, raw, g, slot
}

// Finish delivers the outcome of a task that is still wanted; from is the
// state the caller believes it is in. It reports whether it settled it.
func (t *Task[H]) Finish(from int32, v any, err error) bool {
	if t.State.CompareAndSwap(from, Done) {
		if t.group != nil {
			t.group.Settled(t, v, err)
		} else {
			t.done <- Outcome{v, err}
		}
		return true
	}
	return false
}

// Take moves t from the state from to Done, as Finish, but leaves its
// outcome to the caller, who must then deliver it to t's Group (a task of
// Init): one who settles many tasks of a group at once may then tell the
// group once. It reports whether it took t.
func (t *Task[H]) Take(from int32) bool { return t.State.CompareAndSwap(from, Done) }

// Group is the group given to Init, nil for a task of NewTask.
func (t *Task[H]) Group() Group[H] { return t.group }

// Done delivers the outcome once the task is settled (nil for a task of a
// Group).
func (t *Task[H]) Done() <-chan Outcome { return t.done }

// Queue holds the items no worker has taken yet.
type Queue[H any] struct {
	mu    sync.Mutex
	items []*Task[H]
	// base is the array items was last allocated as (see appendLocked).
	base   []*Task[H]
	closed error
	notify chan struct{} // one token: "there may be items"
}

// New makes an empty queue.
func New[H any]() *Queue[H] { return &Queue[H]{notify: make(chan struct{}, 1)} }

// Notify is signalled when items may be waiting.
func (q *Queue[H]) Notify() <-chan struct{} { return q.notify }

// Signal passes the "items may be waiting" token on.
func (q *Queue[H]) Signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Push queues t; it fails once the queue is closed.
func (q *Queue[H]) Push(t *Task[H]) error {
	q.mu.Lock()
	if q.closed != nil {
		q.mu.Unlock()
		return q.closed
	}
	q.appendLocked(t)
	q.mu.Unlock()
	q.Signal()
	return nil
}

// appendLocked appends ts. Pops take items off the front, so the queue
// creeps along its array: once it would outgrow what is left, it moves back
// to the start of the array (popped slots are nil) rather than grow anew.
func (q *Queue[H]) appendLocked(ts ...*Task[H]) {
	n := len(q.items)
	if n+len(ts) > cap(q.items) && n+len(ts) <= cap(q.base) {
		copy(q.base[:n], q.items)
		clear(q.base[n:cap(q.base)])
		q.items = q.base[:n]
	}
	grow := n+len(ts) > cap(q.items)
	q.items = append(q.items, ts...)
	if grow {
		q.base = q.items[:0]
	}
}

// PushAll queues ts in order; once the queue is closed it queues none and
// returns the reason.
func (q *Queue[H]) PushAll(ts []*Task[H]) error {
	q.mu.Lock()
	if q.closed != nil {
		q.mu.Unlock()
		return q.closed
	}
	q.appendLocked(ts...)
	q.mu.Unlock()
	q.Signal()
	return nil
}

// Requeue puts back items a worker will not answer, ahead of the rest: they
// have waited longest. It returns how many went back (not those given up
// on by their callers, nor those failed because the queue is closed).
func (q *Queue[H]) Requeue(ts []*Task[H]) int {
	var back []*Task[H]
	for _, t := range ts {
		if t.State.CompareAndSwap(Sent, Queued) {
			t.Redelivered.Add(1)
			back = append(back, t)
		}
	}
	if len(back) == 0 {
		return 0
	}
	q.mu.Lock()
	if q.closed != nil {
		err := q.closed
		q.mu.Unlock()
		for _, t := range back {
			t.Finish(Queued, nil, err)
		}
		return 0
	}
	q.items = append(back, q.items...)
	q.base = q.items[:0]
	q.mu.Unlock()
	q.Signal()
	return len(back)
}

// Pop takes up to k wanted items for holder h, at most a fair share of the
// queue among slots takers so that one worker does not hoard a burst.
func (q *Queue[H]) Pop(k, slots int, h H) []*Task[H] { return q.PopAppend(nil, k, slots, 1, h) }

// PopAppend is Pop appending to out, so that a caller reuses its slice,
// with a fair share of at least least items (up to k): shares that halve
// what is left, taker after taker, end in a tail of a few items each.
func (q *Queue[H]) PopAppend(out []*Task[H], k, slots, least int, h H) []*Task[H] {
	q.mu.Lock()
	defer q.mu.Unlock()
	k = min(k, max(1, least, (len(q.items)+slots-1)/slots))
	k += len(out)
	i := 0
	for ; i < len(q.items) && len(out) < k; i++ {
		t := q.items[i]
		q.items[i] = nil
		t.Holder = h
		if t.State.CompareAndSwap(Queued, Sent) {
			out = append(out, t)
		}
	}
	q.items = q.items[i:]
	if len(q.items) == 0 {
		q.items = q.base[:0]
	} else {
		q.Signal()
	}
	return out
}

// Len is the number of queued items.
func (q *Queue[H]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Close refuses further items and returns those waiting.
func (q *Queue[H]) Close(err error) []*Task[H] {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed == nil {
		q.closed = err
	}
	out := q.items
	q.items, q.base = nil, nil
	return out
}

// MaxCrashes is how many workers may die between items after running an
// item before that item is failed as their cause.
const MaxCrashes = 3

// Lost is what is known of a worker that is gone while holding items.
type Lost struct {
	// Culprit is the ID of the item it ran (or was stopped for), 0 if none.
	Culprit uint64
	// LastStarted is the last item it started, when Exact.
	LastStarted uint64
	// Exact: the worker reported what it ran (a shared page, a heartbeat),
	// so the items before the culprit are known to have run.
	Exact bool
	// Reason fails the culprit.
	Reason error
	// Repeated fails an item after MaxCrashes deaths following it.
	Repeated func(crashes int) error
}

// Settle blames a lost worker's death: the culprit fails with Reason,
// items that ran before it may have caused it too (failed after MaxCrashes
// such deaths), and the rest goes back to q. It returns how many went back.
func Settle[H any](q *Queue[H], held []*Task[H], l Lost) int {
	ci, ran := -1, -1
	for i, t := range held {
		if l.Culprit != 0 && t.ID == l.Culprit {
			ci = i
		}
		if t.ID == l.LastStarted {
			ran = i
		}
	}
	if ci >= 0 || !l.Exact {
		// Nobody else is suspect. (Without an exact report nothing tells
		// which items ran: the culprit was taken to be the oldest.)
		ran = -1
	}
	var again []*Task[H]
	for i, t := range held {
		switch {
		case i == ci:
			t.Finish(Sent, nil, l.Reason)
		case i <= ran:
			// It died between items, so one that ran may have left behind
			// what killed it: each runs again, but not forever.
			t.Crashes++
			if t.Crashes >= MaxCrashes {
				t.Finish(Sent, nil, l.Repeated(int(t.Crashes)))
				continue
			}
			again = append(again, t)
		default:
			again = append(again, t)
		}
	}
	return q.Requeue(again)
}
