package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/flowrun/flow/internal/leftover"
	"github.com/flowrun/flow/report"
)

// Run statuses besides the report's (succeeded, failed, interrupted,
// timed_out).
const (
	StatusRunning = "running"
	// StatusDied is shown for a run still recorded as running whose
	// process, on this host, is gone: killed (SIGKILL, OOM) or the machine
	// restarted. It is never stored.
	StatusDied = "died"
)

// Run is one recorded run.
type Run struct {
	ID          string         `json:"id"`
	File        string         `json:"file"` // absolute path, "<stdin>" when read from stdin
	Pipeline    string         `json:"pipeline"`
	FileSHA256  string         `json:"file_sha256"`
	Vars        map[string]any `json:"vars"` // effective values, secrets redacted
	Start       time.Time      `json:"start"`
	End         *time.Time     `json:"end,omitempty"`
	Status      string         `json:"status"`
	Reason      string         `json:"reason,omitempty"`
	ExitCode    *int           `json:"exit_code,omitempty"`
	Host        string         `json:"host"`
	PID         int            `json:"pid"`
	FlowVersion string         `json:"flow_version"`
	Stages      []StageCounts  `json:"stages"`
}

// StageCounts are one stage's counts in a run.
type StageCounts struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	In        int64  `json:"in"`
	Succeeded int64  `json:"succeeded"`
	Failed    int64  `json:"failed"`
	Skipped   int64  `json:"skipped"`
	Cancelled int64  `json:"cancelled"`
	Filtered  int64  `json:"filtered"`
	TimedOut  int64  `json:"timed_out"`
	Retries   int64  `json:"retries"`
	Out       int64  `json:"out"`
}

// NewRunID returns an id that sorts by start time: the UTC time to the
// millisecond, then random bits so that runs started in the same
// millisecond (on several machines) do not collide.
func NewRunID(t time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return t.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b[:])
}

// StartRun records r as running. r.Start, r.Host and r.PID are filled in
// when empty.
func (db *DB) StartRun(ctx context.Context, r Run) error {
	if r.ID == "" {
		return errors.New("store: a run needs an id (NewRunID)")
	}
	if r.Start.IsZero() {
		r.Start = db.now()
	}
	if r.Host == "" {
		r.Host, _ = os.Hostname()
	}
	if r.PID == 0 {
		r.PID = os.Getpid()
	}
	vars, err := json.Marshal(r.Vars)
	if err != nil {
		return fmt.Errorf("run vars: %w", err)
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO runs(id, file, pipeline, file_sha256, vars, started_ms, status, host, pid, flow_version)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, r.File, r.Pipeline, r.FileSHA256, string(vars), r.Start.UnixMilli(), StatusRunning, r.Host, r.PID, r.FlowVersion)
		return err
	})
}

// FinishRun records the end of run id: its status, exit code, stage counts
// and full report. rep may be nil (the run did not start); status and
// reason then say why.
func (db *DB) FinishRun(ctx context.Context, id string, exitCode int, status, reason string, rep *report.Report) error {
	end := db.now()
	var doc []byte
	if rep != nil {
		var err error
		if doc, err = json.Marshal(rep); err != nil {
			return fmt.Errorf("run report: %w", err)
		}
		if !rep.End.IsZero() {
			end = rep.End
		}
	}
	return db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE runs SET ended_ms = ?, status = ?, reason = ?, exit_code = ?, report = ? WHERE id = ?`,
			end.UnixMilli(), status, reason, exitCode, nullString(doc), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("no run %s to finish", id)
		}
		if rep == nil {
			return nil
		}
		for i, s := range rep.Stages {
			_, err := tx.Exec(`INSERT OR REPLACE INTO run_stages(run_id, position, name, kind, items_in, succeeded, failed, skipped, cancelled, filtered, timed_out, retries, items_out)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				id, i, s.Name, s.Kind, s.In, s.Succeeded, s.Failed, s.Skipped, s.Cancelled, s.Filtered, s.TimedOut, s.Retries, s.Out)
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func nullString(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// RunFilter selects runs.
type RunFilter struct {
	File  string // only the runs of this pipeline file (absolute path)
	Limit int    // the most recent Limit runs; 0 for all
}

// Runs lists runs, the most recent first.
func (db *DB) Runs(ctx context.Context, f RunFilter) (runs []Run, err error) {
	err = retryBusy(func() error { runs, err = db.runs(ctx, f); return err })
	return runs, err
}

func (db *DB) runs(ctx context.Context, f RunFilter) ([]Run, error) {
	q := `SELECT id, file, pipeline, file_sha256, vars, started_ms, ended_ms, status, reason, exit_code, host, pid, flow_version FROM runs`
	var args []any
	if f.File != "" {
		q += ` WHERE file = ?`
		args = append(args, f.File)
	}
	q += ` ORDER BY started_ms DESC, id DESC`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, db.wrap(err)
	}
	defer rows.Close()
	var runs []Run
	byID := map[string]int{}
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, db.wrap(err)
		}
		byID[r.ID] = len(runs)
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, db.wrap(err)
	}
	rows.Close()
	if len(runs) == 0 {
		return runs, nil
	}
	// Stage counts of the listed runs only.
	ids := make([]any, 0, len(runs))
	for _, r := range runs {
		ids = append(ids, r.ID)
	}
	srows, err := db.r.QueryContext(ctx, `SELECT run_id, name, kind, items_in, succeeded, failed, skipped, cancelled, filtered, timed_out, retries, items_out
		FROM run_stages WHERE run_id IN (?`+strings.Repeat(",?", len(ids)-1)+`) ORDER BY run_id, position`, ids...)
	if err != nil {
		return nil, db.wrap(err)
	}
	defer srows.Close()
	for srows.Next() {
		var id string
		var s StageCounts
		if err := srows.Scan(&id, &s.Name, &s.Kind, &s.In, &s.Succeeded, &s.Failed, &s.Skipped, &s.Cancelled, &s.Filtered, &s.TimedOut, &s.Retries, &s.Out); err != nil {
			return nil, db.wrap(err)
		}
		r := &runs[byID[id]]
		r.Stages = append(r.Stages, s)
	}
	return runs, db.wrap(srows.Err())
}

type scanner interface{ Scan(dest ...any) error }

func scanRun(s scanner) (Run, error) {
	var (
		r     Run
		vars  string
		start int64
		end   sql.NullInt64
		code  sql.NullInt64
	)
	if err := s.Scan(&r.ID, &r.File, &r.Pipeline, &r.FileSHA256, &vars, &start, &end, &r.Status, &r.Reason, &code, &r.Host, &r.PID, &r.FlowVersion); err != nil {
		return r, err
	}
	if err := json.Unmarshal([]byte(vars), &r.Vars); err != nil {
		return r, fmt.Errorf("run %s: vars: %w", r.ID, err)
	}
	r.Start = time.UnixMilli(start).UTC()
	if end.Valid {
		t := time.UnixMilli(end.Int64).UTC()
		r.End = &t
	}
	if code.Valid {
		c := int(code.Int64)
		r.ExitCode = &c
	}
	r.Stages = []StageCounts{}
	if r.Status == StatusRunning && r.Host == hostname() && leftover.Gone(r.PID) {
		r.Status = StatusDied
		r.Reason = fmt.Sprintf("process %d is gone and never recorded an end (killed, or the machine restarted)", r.PID)
	}
	return r, nil
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// ErrNoRun is returned by FindRun for an id no run has.
var ErrNoRun = errors.New("no such run")

// FindRun returns the run whose id is id or starts with it ("latest" for
// the most recent one), and its report (nil while it runs or when it did
// not start).
func (db *DB) FindRun(ctx context.Context, id string) (r Run, doc json.RawMessage, err error) {
	err = retryBusy(func() error { r, doc, err = db.findRun(ctx, id); return err })
	return r, doc, err
}

func (db *DB) findRun(ctx context.Context, id string) (Run, json.RawMessage, error) {
	var ids []string
	q := `SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2`
	args := []any{id, id + "\U0010FFFF"}
	if id == "latest" {
		q, args = `SELECT id FROM runs ORDER BY started_ms DESC, id DESC LIMIT 1`, nil
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return Run{}, nil, db.wrap(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return Run{}, nil, db.wrap(err)
		}
		ids = append(ids, s)
	}
	rows.Close()
	switch {
	case len(ids) == 0:
		return Run{}, nil, fmt.Errorf("%w %q in %s (flow runs lists them)", ErrNoRun, id, db.path)
	case len(ids) > 1 && ids[0] != id:
		return Run{}, nil, fmt.Errorf("%q names more than one run (%s, %s...): give more of the id", id, ids[0], ids[1])
	}
	runs, err := db.runsByID(ctx, ids[0])
	if err != nil {
		return Run{}, nil, err
	}
	var doc sql.NullString
	if err := db.r.QueryRowContext(ctx, `SELECT report FROM runs WHERE id = ?`, ids[0]).Scan(&doc); err != nil {
		return Run{}, nil, db.wrap(err)
	}
	var raw json.RawMessage
	if doc.Valid {
		raw = json.RawMessage(doc.String)
	}
	return runs, raw, nil
}

func (db *DB) runsByID(ctx context.Context, id string) (Run, error) {
	row := db.r.QueryRowContext(ctx, `SELECT id, file, pipeline, file_sha256, vars, started_ms, ended_ms, status, reason, exit_code, host, pid, flow_version FROM runs WHERE id = ?`, id)
	r, err := scanRun(row)
	if err != nil {
		return r, db.wrap(err)
	}
	rows, err := db.r.QueryContext(ctx, `SELECT name, kind, items_in, succeeded, failed, skipped, cancelled, filtered, timed_out, retries, items_out
		FROM run_stages WHERE run_id = ? ORDER BY position`, id)
	if err != nil {
		return r, db.wrap(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s StageCounts
		if err := rows.Scan(&s.Name, &s.Kind, &s.In, &s.Succeeded, &s.Failed, &s.Skipped, &s.Cancelled, &s.Filtered, &s.TimedOut, &s.Retries, &s.Out); err != nil {
			return r, db.wrap(err)
		}
		r.Stages = append(r.Stages, s)
	}
	return r, db.wrap(rows.Err())
}
