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
	"strings"
	"sync"
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

// maxBatch is the most queued writes committed in one transaction.
const maxBatch = 512

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

	mu     sync.RWMutex // guards closed against sends on reqs
	closed bool
	reqs   chan writeReq
	done   chan struct{}
}

type writeReq struct {
	fn  func(*sql.Tx) error
	err chan error
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
	q.Add("_pragma", "query_only(1)")
	q.Set("_txlock", "deferred")
	if db.r, err = sql.Open("sqlite", abs+"?"+q.Encode()); err != nil {
		db.w.Close()
		return nil, err
	}
	db.r.SetMaxOpenConns(4)
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
	return errors.Join(db.w.Close(), db.r.Close())
}

// write runs fn in a write transaction on the writer goroutine and returns
// its error (or the commit's).
func (db *DB) write(ctx context.Context, fn func(*sql.Tx) error) error {
	req := writeReq{fn: fn, err: make(chan error, 1)}
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
	for req := range db.reqs {
		batch = append(batch[:0], req)
	more:
		for len(batch) < maxBatch {
			select {
			case r, ok := <-db.reqs:
				if !ok {
					break more
				}
				batch = append(batch, r)
			default:
				break more
			}
		}
		var errs []error
		err := retryBusy(func() (err error) {
			errs, err = db.commit(batch)
			return err
		})
		for i, r := range batch {
			if r.err == nil {
				continue // tryWrite: nobody waits
			}
			if err != nil {
				r.err <- fmt.Errorf("state database %s: write: %w", db.path, err)
			} else {
				r.err <- errs[i]
			}
		}
	}
}

// commit runs a batch in one transaction, each write in a savepoint of its
// own. It returns each write's error, or the error that failed them all.
func (db *DB) commit(batch []writeReq) ([]error, error) {
	tx, err := db.w.Begin() // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return nil, err
	}
	errs := make([]error, len(batch))
	for i, r := range batch {
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
	if len(batch) == 1 && errs[0] != nil {
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
