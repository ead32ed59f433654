package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flowrun/flow/store/cachekey"
)

// Scope says where a cache entry comes from: which pipeline file and stage.
// It is not part of the key (two stages doing the same work share their
// results); it lets `flow cache` list, remove and explain by stage.
type Scope struct {
	Pipeline string // absolute path of the pipeline file
	Stage    string
	// Run and Index, when Run is set, record which run last stored or
	// reused an entry and the item's index in it (ItemOfRun).
	Run   string
	Index int64
}

// runArgs are Scope's run and index as SQL values (NULL without a run).
func (s Scope) runArgs() (run, index any) {
	if s.Run == "" {
		return nil, nil
	}
	return s.Run, s.Index
}

// Entry is one cached result.
type Entry struct {
	Key      string         `json:"key"`
	Kind     string         `json:"kind"`
	Pipeline string         `json:"pipeline"`
	Stage    string         `json:"stage"`
	Parts    cachekey.Parts `json:"parts"`
	Size     int64          `json:"size"` // bytes of the result
	Created  time.Time      `json:"created"`
	Expires  *time.Time     `json:"expires,omitempty"`
	Used     time.Time      `json:"used"`
	Hits     int64          `json:"hits"`
}

// Put stores the result of a successful item under k. ttl <= 0 keeps it
// until removed (flow cache rm / gc).
func (db *DB) Put(ctx context.Context, s Scope, k cachekey.Key, result json.RawMessage, ttl time.Duration) error {
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
	return db.do(ctx, writeReq{stmt: db.putStmt, args: []any{k.Digest, k.Parts.Kind, s.Pipeline, s.Stage, k.Parts.ItemDigest, string(parts), []byte(result), now, expires, now, run, index}})
}

const putSQL = `INSERT INTO cache(key, kind, pipeline, stage, item_digest, parts, result, created_ms, expires_ms, used_ms, hits, run_id, item_index)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)
	ON CONFLICT(key) DO UPDATE SET kind = excluded.kind, pipeline = excluded.pipeline, stage = excluded.stage,
		item_digest = excluded.item_digest, parts = excluded.parts, result = excluded.result,
		created_ms = excluded.created_ms, expires_ms = excluded.expires_ms, used_ms = excluded.used_ms,
		run_id = coalesce(excluded.run_id, run_id), item_index = coalesce(excluded.item_index, item_index)`

// prepare prepares the hot statements, once the schema has them.
func (db *DB) prepare() error {
	var err error
	if db.getStmt, err = db.r.Prepare(`SELECT rowid, result, expires_ms FROM cache WHERE key = ?`); err != nil {
		return err
	}
	if db.putStmt, err = db.w.Prepare(putSQL); err != nil {
		return err
	}
	// By the rowid the look-up read, not the key: no walk down the key's
	// index. The key is checked on the row, in case the entry was replaced
	// since.
	db.touchStmt, err = db.w.Prepare(`UPDATE cache SET hits = hits + 1, used_ms = max(used_ms, ?),
		run_id = coalesce(?, run_id), item_index = coalesce(?, item_index) WHERE rowid = ? AND key = ?`)
	return err
}

// Get returns the result stored under key, if it is there and not past
// its TTL. The hit is counted without waiting for the write (the count is
// for people; it may be dropped when the writer is saturated).
func (db *DB) Get(ctx context.Context, key string) (res json.RawMessage, ok bool, err error) {
	return db.GetFor(ctx, key, Scope{})
}

// GetFor is Get for an item of s: with s.Run set, a hit also records the
// run and the item's index on the entry (ItemOfRun), queued as a stored
// result is (PutQueued), so that no hit of a run goes unrecorded.
func (db *DB) GetFor(ctx context.Context, key string, s Scope) (res json.RawMessage, ok bool, err error) {
	err = retryBusy(func() error { res, ok, err = db.get(ctx, key, s); return err })
	return res, ok, err
}

func (db *DB) get(ctx context.Context, key string, s Scope) (json.RawMessage, bool, error) {
	var (
		rowid   int64
		result  []byte
		expires sql.NullInt64
	)
	snap, err := db.snap(ctx)
	if err != nil {
		return nil, false, db.wrap(err)
	}
	// Not ctx: a look-up is one probe of the key's index that never waits
	// for a writer (WAL), and a cancellable context costs the
	// driver and database/sql a goroutine each to watch it, per look-up.
	if err = ctx.Err(); err == nil {
		err = snap.get.QueryRow(key).Scan(&rowid, &result, &expires)
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		snap.end() // cancelled or busy: the next look-up begins afresh
	}
	db.snaps <- snap
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, db.wrap(err)
	}
	now := db.nowMS()
	if expires.Valid && expires.Int64 <= now {
		return nil, false, nil
	}
	run, index := s.runArgs()
	touch := writeReq{stmt: db.touchStmt, args: []any{now, run, index, rowid, key}}
	if s.Run == "" {
		db.tryWrite(touch)
	} else if err := db.queue(ctx, touch); err != nil {
		return nil, false, err
	}
	return json.RawMessage(result), true, nil
}

func (db *DB) expired(e Entry) bool {
	return e.Expires != nil && !db.now().Before(*e.Expires)
}

// tryWrite queues a write without waiting for it, or drops it when the
// queue is full or the DB closed.
func (db *DB) tryWrite(req writeReq) {
	db.mu.RLock()
	defer db.mu.RUnlock()
	if db.closed {
		return
	}
	select {
	case db.reqs <- req:
	default:
	}
}

const entryColumns = `key, kind, pipeline, stage, parts, length(result), created_ms, expires_ms, used_ms, hits`

func (db *DB) entry(ctx context.Context, key string) (Entry, bool, error) {
	e, err := scanEntry(db.r.QueryRowContext(ctx, `SELECT `+entryColumns+` FROM cache WHERE key = ?`, key))
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, db.wrap(err)
	}
	return e, true, nil
}

// scanEntry reads an entry without its result (List and Explain do not
// need it; Get reads the result alone).
func scanEntry(s scanner) (Entry, error) {
	var (
		e             Entry
		parts         string
		created, used int64
		expires       sql.NullInt64
	)
	if err := s.Scan(&e.Key, &e.Kind, &e.Pipeline, &e.Stage, &parts, &e.Size, &created, &expires, &used, &e.Hits); err != nil {
		return e, err
	}
	if err := json.Unmarshal([]byte(parts), &e.Parts); err != nil {
		return e, fmt.Errorf("cache entry %s: parts: %w", e.Key, err)
	}
	e.Created, e.Used = time.UnixMilli(created).UTC(), time.UnixMilli(used).UTC()
	if expires.Valid {
		t := time.UnixMilli(expires.Int64).UTC()
		e.Expires = &t
	}
	return e, nil
}

// Explanation says whether a key hits, and if not, what differs from the
// closest stored entry.
type Explanation struct {
	Key     string            `json:"key"`
	Hit     bool              `json:"hit"`
	Expired bool              `json:"expired,omitempty"` // stored under this key, but past its TTL
	Closest *Entry            `json:"closest,omitempty"` // nil when nothing is comparable
	Changes []cachekey.Change `json:"changes,omitempty"` // from Closest to the key asked about
}

func (x Explanation) String() string {
	var b strings.Builder
	switch {
	case x.Hit:
		fmt.Fprintf(&b, "hit: %s\n", short(x.Key))
	case x.Expired:
		fmt.Fprintf(&b, "miss: %s is stored but expired on %s\n", short(x.Key), x.Closest.Expires.Format(time.RFC3339))
	case x.Closest == nil:
		fmt.Fprintf(&b, "miss: %s: nothing comparable is stored (no entry of this stage or kind)\n", short(x.Key))
	default:
		fmt.Fprintf(&b, "miss: %s; the closest entry, %s (stage %s, stored %s), differs in:\n",
			short(x.Key), short(x.Closest.Key), x.Closest.Stage, x.Closest.Created.Format(time.RFC3339))
		for _, c := range x.Changes {
			fmt.Fprintf(&b, "  %s\n", c)
		}
	}
	return b.String()
}

func short(key string) string {
	if len(key) > 12 {
		return key[:12]
	}
	return key
}

// explainCandidates bounds the entries compared to find the closest one.
const explainCandidates = 64

// Explain tells whether k hits and, on a miss, which parts changed against
// the closest stored entry: of the same item in the same stage if there is
// one, else of the same stage, else of the same kind; the one with the
// fewest changes, the most recent among equals.
func (db *DB) Explain(ctx context.Context, s Scope, k cachekey.Key) (x Explanation, err error) {
	err = retryBusy(func() error { x, err = db.explain(ctx, s, k); return err })
	return x, err
}

func (db *DB) explain(ctx context.Context, s Scope, k cachekey.Key) (Explanation, error) {
	x := Explanation{Key: k.Digest}
	e, ok, err := db.entry(ctx, k.Digest)
	if err != nil {
		return x, err
	}
	if ok {
		if db.expired(e) {
			x.Expired, x.Closest = true, &e
			return x, nil
		}
		x.Hit = true
		return x, nil
	}
	queries := []struct {
		where string
		args  []any
	}{
		{`pipeline = ? AND stage = ? AND item_digest = ?`, []any{s.Pipeline, s.Stage, k.Parts.ItemDigest}},
		{`pipeline = ? AND stage = ?`, []any{s.Pipeline, s.Stage}},
		{`kind = ?`, []any{k.Parts.Kind}},
	}
	for _, q := range queries {
		rows, err := db.r.QueryContext(ctx, `SELECT `+entryColumns+` FROM cache WHERE `+q.where+` ORDER BY created_ms DESC LIMIT ?`,
			append(q.args, explainCandidates)...)
		if err != nil {
			return x, db.wrap(err)
		}
		var best *Entry
		var bestChanges []cachekey.Change
		for rows.Next() {
			c, err := scanEntry(rows)
			if err != nil {
				rows.Close()
				return x, db.wrap(err)
			}
			ch := cachekey.Diff(c.Parts, k.Parts)
			if best == nil || len(ch) < len(bestChanges) {
				best, bestChanges = &c, ch
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return x, db.wrap(err)
		}
		if best != nil {
			x.Closest, x.Changes = best, bestChanges
			return x, nil
		}
	}
	return x, nil
}

// CacheFilter selects entries for List and Remove.
type CacheFilter struct {
	Key      string // an entry's key, or a prefix of it
	Pipeline string
	Stage    string
	Limit    int // List only; 0 for all
}

func (f CacheFilter) where() (string, []any) {
	var conds []string
	var args []any
	if f.Key != "" {
		conds, args = append(conds, `key >= ? AND key < ?`), append(args, f.Key, f.Key+"\U0010FFFF")
	}
	if f.Pipeline != "" {
		conds, args = append(conds, `pipeline = ?`), append(args, f.Pipeline)
	}
	if f.Stage != "" {
		conds, args = append(conds, `stage = ?`), append(args, f.Stage)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// List returns entries (without their results), the most recently stored
// first.
func (db *DB) List(ctx context.Context, f CacheFilter) (l []Entry, err error) {
	err = retryBusy(func() error { l, err = db.list(ctx, f); return err })
	return l, err
}

func (db *DB) list(ctx context.Context, f CacheFilter) ([]Entry, error) {
	where, args := f.where()
	q := `SELECT ` + entryColumns + ` FROM cache` + where + ` ORDER BY created_ms DESC, key`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, db.wrap(err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, db.wrap(err)
		}
		out = append(out, e)
	}
	return out, db.wrap(rows.Err())
}

// Remove deletes the entries f selects and returns how many. An empty
// filter removes every entry.
func (db *DB) Remove(ctx context.Context, f CacheFilter) (int64, error) {
	where, args := f.where()
	var n int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM cache`+where, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// GC removes the entries past their TTL and those neither stored nor used
// for olderThan (0: only the expired ones), and forgets the digests of
// files not looked at for as long. It returns how many entries went.
func (db *DB) GC(ctx context.Context, olderThan time.Duration) (int64, error) {
	now := db.nowMS()
	var n int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		q, args := `DELETE FROM cache WHERE expires_ms <= ?`, []any{now}
		if olderThan > 0 {
			q += ` OR used_ms < ?`
			args = append(args, now-olderThan.Milliseconds())
		}
		res, err := tx.Exec(q, args...)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		if olderThan > 0 {
			_, err = tx.Exec(`DELETE FROM file_digests WHERE checked_ms < ?`, now-olderThan.Milliseconds())
		}
		return err
	})
	return n, err
}

// ItemOfRun returns the entry that item index of stage stored or reused in
// run: its parts hold the item (Parts.Item, when it is under 4 KiB). ok is
// false when the run recorded no success of that item in that stage (it
// failed, never ran, the stage is not cached, or its entry was removed or
// reused since by a later run). An item equal to another of the same run
// is one entry, found under the index of the last of them.
func (db *DB) ItemOfRun(ctx context.Context, run, stage string, index int64) (e Entry, ok bool, err error) {
	err = retryBusy(func() error {
		e, err = scanEntry(db.r.QueryRowContext(ctx, `SELECT `+entryColumns+` FROM cache WHERE run_id = ? AND stage = ? AND item_index = ? LIMIT 1`, run, stage, index))
		if errors.Is(err, sql.ErrNoRows) {
			ok, err = false, nil
			return nil
		}
		ok = err == nil
		return db.wrap(err)
	})
	return e, ok, err
}
