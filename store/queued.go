package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/flowrun/flow/store/cachekey"
)

// PutQueued stores a result as Put does, without waiting for the commit:
// it returns once the write is queued (waiting for room in the queue, so
// that a fast stage cannot outrun the writer without bound). Queued writes
// are committed by the thousand, or after flushEvery, where callers
// waiting on Put one by one commit a transaction per item or two. Close
// commits what is queued; a process killed before that loses the writes of
// the last flushEvery, which for a cache only means running those items
// again. An error is only the queueing's: ctx
// done or the DB closed.
func (db *DB) PutQueued(ctx context.Context, s Scope, k cachekey.Key, result json.RawMessage, ttl time.Duration) error {
	parts, err := k.PartsJSON()
	if err != nil {
		return err
	}
	now := db.nowMS()
	var expires any
	if ttl > 0 {
		expires = now + ttl.Milliseconds()
	}
	run, index := s.runArgs()
	return db.queue(ctx, writeReq{stmt: db.putStmt, args: []any{k.Digest, k.Parts.Kind, s.Pipeline, s.Stage, k.Parts.ItemDigest, string(parts), []byte(result), now, expires, now, run, index}})
}

// queue hands a write to the writer without waiting for its commit,
// waiting only for room in the queue.
func (db *DB) queue(ctx context.Context, req writeReq) error {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return ErrClosed
	}
	select {
	case db.reqs <- req:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
