package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// migrations are the schema, in order: migrations[i] brings a database from
// version i to version i+1. Never edit one that has shipped: add another.
var migrations = []string{
	// 1: run history.
	`CREATE TABLE runs (
		id           TEXT PRIMARY KEY,
		file         TEXT NOT NULL,
		pipeline     TEXT NOT NULL,
		file_sha256  TEXT NOT NULL,
		vars         TEXT NOT NULL,
		started_ms   INTEGER NOT NULL,
		ended_ms     INTEGER,
		status       TEXT NOT NULL,
		reason       TEXT NOT NULL DEFAULT '',
		exit_code    INTEGER,
		host         TEXT NOT NULL,
		pid          INTEGER NOT NULL,
		flow_version TEXT NOT NULL,
		report       TEXT
	) STRICT;
	CREATE INDEX runs_file ON runs(file, started_ms);
	CREATE TABLE run_stages (
		run_id    TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
		position  INTEGER NOT NULL,
		name      TEXT NOT NULL,
		kind      TEXT NOT NULL,
		items_in  INTEGER NOT NULL,
		succeeded INTEGER NOT NULL,
		failed    INTEGER NOT NULL,
		skipped   INTEGER NOT NULL,
		cancelled INTEGER NOT NULL,
		filtered  INTEGER NOT NULL,
		timed_out INTEGER NOT NULL,
		retries   INTEGER NOT NULL,
		items_out INTEGER NOT NULL,
		PRIMARY KEY (run_id, position)
	) STRICT;`,

	// 2: the result cache and the stat cache of file digests.
	`CREATE TABLE cache (
		key         TEXT PRIMARY KEY,
		kind        TEXT NOT NULL,
		pipeline    TEXT NOT NULL,
		stage       TEXT NOT NULL,
		item_digest TEXT NOT NULL,
		parts       TEXT NOT NULL,
		result      BLOB NOT NULL,
		created_ms  INTEGER NOT NULL,
		expires_ms  INTEGER,
		used_ms     INTEGER NOT NULL,
		hits        INTEGER NOT NULL DEFAULT 0
	) STRICT;
	CREATE INDEX cache_stage_item ON cache(stage, item_digest);
	CREATE TABLE file_digests (
		path       TEXT PRIMARY KEY,
		size       INTEGER NOT NULL,
		mtime_ns   INTEGER NOT NULL,
		ctime_ns   INTEGER NOT NULL,
		inode      INTEGER NOT NULL,
		sha256     TEXT NOT NULL,
		checked_ms INTEGER NOT NULL
	) STRICT;`,

	// 3: which run last stored or reused an entry, and the item's index in
	// it, so that `flow cache explain --index N` finds item N of the last
	// run (its input is kept in parts.item) without a row per item per run.
	`ALTER TABLE cache ADD COLUMN run_id TEXT;
	ALTER TABLE cache ADD COLUMN item_index INTEGER;
	CREATE INDEX cache_run_item ON cache(run_id, stage, item_index);`,
}

// SchemaVersion is the schema version this flow writes.
func SchemaVersion() int { return len(migrations) }

const versionsTable = `CREATE TABLE IF NOT EXISTS schema_versions (
	version    INTEGER PRIMARY KEY,
	applied_ms INTEGER NOT NULL
) STRICT`

// NewerError is the refusal of a database written by a newer flow.
type NewerError struct {
	Path          string
	Version, Know int
}

func (e *NewerError) Error() string {
	return fmt.Sprintf("%s was written by a newer flow (schema version %d; this flow knows up to %d) and is left as it is: upgrade flow, or use another state directory (--state DIR) or --no-state", e.Path, e.Version, e.Know)
}

// migrateTo brings the schema up to version target. It reads the version first and
// refuses a newer database before writing anything, WAL mode included.
// Each migration runs in its own IMMEDIATE transaction that checks the
// version again, so that two processes opening a new database at once
// apply each migration once.
func (db *DB) migrateTo(ctx context.Context, target int) error {
	v, err := version(ctx, db.w)
	if err != nil {
		return db.wrap(fmt.Errorf("reading the schema version: %w", err))
	}
	if err := db.checkNewer(v); err != nil {
		return err
	}
	// Persistent: set once, every later connection is in WAL mode.
	var mode string
	if err := db.w.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode); err != nil {
		return db.wrap(fmt.Errorf("setting WAL mode: %w", err))
	}
	for next := v + 1; next <= target; next++ {
		if err := db.apply(ctx, next); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) apply(ctx context.Context, next int) error {
	tx, err := db.w.BeginTx(ctx, nil) // IMMEDIATE: holds the write lock
	if err != nil {
		return db.wrap(fmt.Errorf("schema migration %d: %w", next, err))
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, versionsTable); err != nil {
		return db.wrap(err)
	}
	v, err := version(ctx, tx)
	if err != nil {
		return db.wrap(err)
	}
	if err := db.checkNewer(v); err != nil {
		return err
	}
	if v >= next {
		return nil // another process applied it meanwhile
	}
	if _, err := tx.ExecContext(ctx, migrations[next-1]); err != nil {
		return db.wrap(fmt.Errorf("schema migration %d: %w", next, err))
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_versions(version, applied_ms) VALUES (?, ?)", next, db.nowMS()); err != nil {
		return db.wrap(err)
	}
	return db.wrap(tx.Commit())
}

func (db *DB) checkNewer(v int) error {
	if v > len(migrations) {
		return &NewerError{Path: db.path, Version: v, Know: len(migrations)}
	}
	return nil
}

func (db *DB) wrap(err error) error {
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), "file is not a database") {
		return fmt.Errorf("%s is not a flow state database (not SQLite): move it away or use --state DIR", db.path)
	}
	return fmt.Errorf("state database %s: %w", db.path, err)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// version is the highest applied migration, 0 for a new database.
func version(ctx context.Context, q querier) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_versions'").Scan(&n)
	if err != nil || n == 0 {
		return 0, err
	}
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, "SELECT max(version) FROM schema_versions").Scan(&v); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	return int(v.Int64), nil
}
