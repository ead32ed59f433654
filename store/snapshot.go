package store

import (
	"context"
	"database/sql"
	"time"
)

// A look-up in a read transaction of its own pays for the transaction:
// the WAL's shared-memory locks (system calls), and the connection's
// whole page cache whenever anything was committed since its last read.
// Cache look-ups share read transactions instead (snapshots). A snapshot
// is renewed once this process has committed a write since it began
// (hits' records aside, which change nothing a look-up reads), so that a
// result stored (Put returned, or a queued one committed) is found by
// every look-up that starts after; and after snapAge, so that other
// processes' writes are seen soon and their checkpoints are not held
// back for long.
const snapAge = 500 * time.Millisecond

// snapReaders is how many look-ups run at once, each on a read
// connection of its own; the other reads (explain, ls, file digests) have
// readConns more.
const (
	snapReaders = 4
	readConns   = 4
)

type snapshot struct {
	tx    *sql.Tx
	get   *sql.Stmt
	gen   uint64 // db.gen when it began
	began time.Time
}

// stale says the snapshot may miss a write: this process committed one
// since it began, or it is old.
func (s *snapshot) stale(db *DB) bool {
	return s.tx != nil && (s.gen != db.gen.Load() || time.Since(s.began) > snapAge)
}

func (s *snapshot) end() {
	if s.tx != nil {
		s.tx.Rollback()
		s.tx, s.get = nil, nil
	}
}

// snap takes a snapshot that sees every write this process committed
// before the call; put it back with db.snaps <- s.
func (db *DB) snap(ctx context.Context) (*snapshot, error) {
	var s *snapshot
	select {
	case s = <-db.snaps:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if s.stale(db) {
		s.end()
	}
	if s.tx == nil {
		gen := db.gen.Load() // before BEGIN: the snapshot is at least as new
		// Not ctx: database/sql would end the transaction with it.
		tx, err := db.r.BeginTx(context.Background(), &sql.TxOptions{ReadOnly: true})
		if err != nil {
			db.snaps <- s
			return nil, err
		}
		s.tx, s.get, s.gen, s.began = tx, tx.Stmt(db.getStmt), gen, time.Now()
	}
	return s, nil
}

// releaseStale ends the idle snapshots that are stale, so that an idle
// process holds back no checkpoint.
func (db *DB) releaseStale() {
	for range snapReaders {
		select {
		case s := <-db.snaps:
			if s.stale(db) {
				s.end()
			}
			defer func() { db.snaps <- s }()
		default:
			return
		}
	}
}

// endSnapshots ends them all, waiting for the look-ups under way.
func (db *DB) endSnapshots() {
	for range snapReaders {
		s := <-db.snaps
		s.end()
		defer func() { db.snaps <- s }()
	}
}
