// Package store is flow's state: an embedded SQLite database (pure Go,
// modernc.org/sqlite, no cgo) that holds the run history and the result
// cache that resume is built on.
//
// Several flow processes may use one database at once (two cron runs of one
// pipeline, say). SQLite allows one writer at a time; in WAL mode readers
// never wait for it. Within a process every write goes through one writer
// goroutine, which batches what is queued into one transaction (a savepoint
// per write, so one failing write does not undo the others) and begins it
// with BEGIN IMMEDIATE: a process waits for the write lock up front, under
// busy_timeout, instead of failing with SQLITE_BUSY when a read transaction
// tries to become a write. Readers use their own connections, read-only.
//
// The schema is versioned (see migrate.go). A database written by a newer
// flow is refused before anything is written to it.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// FileName is the database's name inside its state directory.
const FileName = "state.db"

// DirName is the state directory created beside a pipeline file by default.
const DirName = ".flow"

// busyTimeout is how long a connection waits for a lock held by another
// process before SQLite gives up with SQLITE_BUSY. The writer then retries
// (see busyRetryFor), so a long transaction elsewhere delays a write rather
// than failing it.
const busyTimeout = 5 * time.Second

// busyRetryFor bounds the retries of a write (or a migration) that still
// met SQLITE_BUSY: after busyTimeout, or at once where SQLite does not call
// its busy handler (a deadlock between a reader and a writer in rollback
// mode while a new database is switched to WAL, WAL recovery by another
// process).
const busyRetryFor = time.Minute

// retryBusy runs fn until it succeeds, fails otherwise than with
// SQLITE_BUSY, or busyRetryFor has passed, with a growing pause between
// tries.
func retryBusy(fn func() error) error {
	deadline := time.Now().Add(busyRetryFor)
	pause := 5 * time.Millisecond
	for {
		err := fn()
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(pause)
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// maxBatch is the most writes committed in one transaction, and the
// writer's queue holds as many: a stage faster than the writer waits for
// room (a bounded queue) instead of piling results up in memory.
const maxBatch = 4096

// flushEvery is how long a queued write (PutQueued, a hit's record) may
// wait for others to share its transaction. A commit costs about as much
// as a few hundred rows (WAL frames, and every reader's page cache is
// dropped by it), so rows are committed by the thousand; a process killed
// loses at most the writes of the last flushEvery and the commit under
// way: for a cache, only items run again. A write someone waits for (Put,
// a run's record) is committed at once, with what is queued before it.
const flushEvery = 200 * time.Millisecond

// writerCacheKiB is the writer connection's page cache (SQLite's default
// is 2 MiB): about the key index of a million entries.
const writerCacheKiB = 64 << 10

// ErrClosed is returned by writes on a closed DB.
var ErrClosed = errors.New("store: closed")

// ErrNotExist is returned by Open with Options.MustExist when there is no
// database at the path.
var ErrNotExist = errors.New("store: no state database")

// Options tune Open.
type Options struct {
	// MustExist refuses to create a database (`flow runs` reads one; it
	// should not leave an empty one behind).
	MustExist bool
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time
}

// DB is an open state database.
type DB struct {
	path string
	now  func() time.Time

	w *sql.DB // one connection: the writer goroutine's
	r *sql.DB // read-only connections

	// The cache's hot statements, prepared once: parsing is most of the
	// cost of a small query.
	getStmt, putStmt, touchStmt *sql.Stmt
	// snaps are the look-ups' read transactions (snapshot.go); gen counts
	// the writer's commits, which make them stale.
	snaps chan *snapshot
	gen   atomic.Uint64

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool
	reqs   chan writeReq
	done   chan struct{}
}

type writeReq struct {
	fn  func(*sql.Tx) error
	err chan error // nil: nobody waits (PutQueued, tryWrite)
	// stmt, when set (and fn nil), is one prepared statement run with
	// args: a single statement needs no savepoint of its own (SQLite undoes
	// a failing statement alone), and its transaction-bound form is made
	// once per batch.
	stmt *sql.Stmt
	args []any
}

// Open opens (creating it and its directory unless opts.MustExist) the
// database at path, brings its schema up to date and starts its writer.
func Open(path string, opts Options) (*DB, error) {
	return openTo(path, opts, len(migrations))
}

// openTo is Open stopping at schema version target (tests of upgrades).
func openTo(path string, opts Options, target int) (*DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(abs, "?#") {
		// The driver splits its parameters at '?'.
		return nil, fmt.Errorf("state database %s: the path must not contain '?' or '#'; choose another directory with --state", abs)
	}
	if _, err := os.Stat(abs); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("state database %s: %w", abs, err)
		}
		if opts.MustExist {
			return nil, fmt.Errorf("%w at %s", ErrNotExist, abs)
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			return nil, fmt.Errorf("state directory: %w", err)
		}
	}
	db := &DB{path: abs, now: opts.Now, reqs: make(chan writeReq, maxBatch), done: make(chan struct{})}
	if db.now == nil {
		db.now = time.Now
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(NORMAL)") // durable at each checkpoint, consistent always: WAL's usual setting
	q.Set("_txlock", "immediate")
	if db.w, err = sql.Open("sqlite", abs+"?"+q.Encode()); err != nil {
		return nil, err
	}
	db.w.SetMaxOpenConns(1)
	db.w.SetConnMaxIdleTime(0)
	// The writer keeps its page cache from one transaction to the next
	// (no other process writes, as a rule): big enough for the cache's
	// indexes, whose rows go to random pages, it reads each page once.
	if _, err := db.w.Exec(fmt.Sprintf("PRAGMA cache_size = -%d", writerCacheKiB)); err != nil {
		db.w.Close()
		return nil, db.wrap(err)
	}
	q.Add("_pragma", "query_only(1)")
	q.Set("_txlock", "deferred")
	if db.r, err = sql.Open("sqlite", abs+"?"+q.Encode()); err != nil {
		db.w.Close()
		return nil, err
	}
	db.r.SetMaxOpenConns(snapReaders + readConns)
	if err := retryBusy(func() error { return db.migrateTo(context.Background(), target) }); err != nil {
		db.w.Close()
		db.r.Close()
		return nil, err
	}
	if target == len(migrations) {
		if err := db.prepare(); err != nil {
			db.w.Close()
			db.r.Close()
			return nil, db.wrap(err)
		}
	}
	db.snaps = make(chan *snapshot, snapReaders)
	for range snapReaders {
		db.snaps <- &snapshot{}
	}
	go db.writer()
	return db, nil
}

// Path is the database file's absolute path.
func (db *DB) Path() string { return db.path }

// Close waits for the queued writes, then closes the database.
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	close(db.reqs)
	db.mu.Unlock()
	<-db.done
	db.endSnapshots()
	return errors.Join(db.w.Close(), db.r.Close())
}

// write runs fn in a write transaction on the writer goroutine and returns
// its error (or the commit's).
func (db *DB) write(ctx context.Context, fn func(*sql.Tx) error) error {
	return db.do(ctx, writeReq{fn: fn})
}

// do hands req to the writer and waits for its commit.
func (db *DB) do(ctx context.Context, req writeReq) error {
	req.err = make(chan error, 1)
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return ErrClosed
	}
	select {
	case db.reqs <- req:
	case <-ctx.Done():
		db.mu.RUnlock()
		return ctx.Err()
	}
	db.mu.RUnlock()
	// Once queued, a write is done or failed whatever ctx says: the caller
	// must know which.
	return <-req.err
}

func (db *DB) writer() {
	defer close(db.done)
	batch := make([]writeReq, 0, maxBatch)
	timer := time.NewTimer(flushEvery)
	timer.Stop()
	tick := time.NewTicker(snapAge)
	defer tick.Stop()
	for open := true; open; {
		var req writeReq
		select {
		case r, ok := <-db.reqs:
			if !ok {
				return
			}
			req = r
		case <-tick.C:
			db.releaseStale()
			continue
		}
		batch = append(batch[:0], req)
		urgent := req.err != nil
		if !urgent {
			timer.Reset(flushEvery)
		}
	collect:
		for len(batch) < maxBatch {
			if urgent {
				// Someone waits: take only what is queued already.
				select {
				case r, ok := <-db.reqs:
					if !ok {
						open = false
						break collect
					}
					batch = append(batch, r)
				default:
					break collect
				}
				continue
			}
			select {
			case r, ok := <-db.reqs:
				if !ok {
					open = false
					break collect
				}
				batch = append(batch, r)
				urgent = r.err != nil
			case <-timer.C:
				break collect
			}
		}
		timer.Stop()
		var errs []error
		err := retryBusy(func() (err error) {
			errs, err = db.commit(batch)
			return err
		})
		// Before anyone hears of the commit: a look-up from now on takes a
		// snapshot that sees it. A batch of hits' records alone changes
		// nothing a look-up reads (result, expiry): the snapshots, and their
		// page caches, are kept.
		if slices.ContainsFunc(batch, func(r writeReq) bool { return r.stmt != db.touchStmt }) {
			db.gen.Add(1)
		}
		db.releaseStale()
		for i, r := range batch {
			if r.err == nil {
				continue // nobody waits
			}
			if err != nil {
				r.err <- fmt.Errorf("state database %s: write: %w", db.path, err)
			} else {
				r.err <- errs[i]
			}
		}
		clear(batch) // drop the rows' arguments until the next batch
	}
	// Closed: the loop above committed the last batch.
}

// commit runs a batch in one transaction, each write in a savepoint of its
// own but single prepared statements. It returns each write's error, or
// the error that failed them all.
func (db *DB) commit(batch []writeReq) ([]error, error) {
	tx, err := db.w.Begin() // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return nil, err
	}
	errs := make([]error, len(batch))
	var stmts map[*sql.Stmt]*sql.Stmt
	for i, r := range batch {
		if r.fn == nil {
			s := stmts[r.stmt]
			if s == nil {
				if stmts == nil {
					stmts = map[*sql.Stmt]*sql.Stmt{}
				}
				s = tx.Stmt(r.stmt)
				stmts[r.stmt] = s
			}
			_, errs[i] = s.Exec(r.args...)
			if errs[i] != nil && isBusy(errs[i]) {
				tx.Rollback()
				return nil, errs[i]
			}
			continue
		}
		if len(batch) == 1 {
			errs[i] = r.fn(tx)
			break
		}
		if _, err := tx.Exec("SAVEPOINT w"); err != nil {
			tx.Rollback()
			return nil, err
		}
		if errs[i] = r.fn(tx); errs[i] != nil {
			if _, err := tx.Exec("ROLLBACK TO w"); err != nil {
				tx.Rollback()
				return nil, err
			}
		}
		if _, err := tx.Exec("RELEASE w"); err != nil {
			tx.Rollback()
			return nil, err
		}
	}
	if len(batch) == 1 && batch[0].fn != nil && errs[0] != nil {
		tx.Rollback()
		return errs, nil
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return errs, nil
}

func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && (e.Code()&0xff == sqlite3.SQLITE_BUSY || e.Code()&0xff == sqlite3.SQLITE_LOCKED)
}

func (db *DB) nowMS() int64 { return db.now().UnixMilli() }

// Now is the database's clock (time.Now unless Options.Now).
func (db *DB) Now() time.Time { return db.now() }
