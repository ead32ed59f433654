package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/store/cachekey"
)

func TestMain(m *testing.M) {
	// A child process of TestTwoProcessesWrite.
	if path := os.Getenv("FLOW_STORE_TEST_WRITER"); path != "" {
		os.Exit(writerChild(path))
	}
	os.Exit(m.Run())
}

func open(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func appliedVersions(t *testing.T, path string) []int {
	t.Helper()
	raw, err := sql.Open("sqlite", path+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rows, err := raw.Query("SELECT version FROM schema_versions ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		rows.Scan(&v)
		vs = append(vs, v)
	}
	return vs
}

func TestMigrateFresh(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", ".flow", FileName)
	db := open(t, path)
	var mode string
	if err := db.r.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	db.Close()
	if got := appliedVersions(t, path); len(got) != SchemaVersion() || got[0] != 1 || got[len(got)-1] != SchemaVersion() {
		t.Errorf("applied versions %v, want 1..%d", got, SchemaVersion())
	}
	// Opening again applies nothing more.
	db = open(t, path)
	db.Close()
	if got := appliedVersions(t, path); len(got) != SchemaVersion() {
		t.Errorf("applied versions after reopening %v", got)
	}
}

func TestMigrateUpgradeFromV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	old, err := openTo(path, Options{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := old.StartRun(ctx, Run{ID: "r1", File: "/p.yaml", Vars: map[string]any{"n": 1}}); err != nil {
		t.Fatal(err)
	}
	old.Close()
	if got := appliedVersions(t, path); len(got) != 1 {
		t.Fatalf("v1 database has versions %v", got)
	}

	db := open(t, path)
	runs, err := db.Runs(ctx, RunFilter{})
	if err != nil || len(runs) != 1 || runs[0].ID != "r1" {
		t.Fatalf("runs after upgrade: %+v, %v", runs, err)
	}
	// The tables of version 2 work.
	k, err := cachekey.Build(cachekey.Input{Kind: "compute", Item: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Put(ctx, Scope{Pipeline: "/p.yaml", Stage: "s"}, k, json.RawMessage(`2`), 0); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := db.Get(ctx, k.Digest); !ok || err != nil {
		t.Fatalf("get after upgrade: %v %v", ok, err)
	}
	db.Close()
	if got := appliedVersions(t, path); len(got) != SchemaVersion() {
		t.Errorf("versions after upgrade %v, want %d of them", got, SchemaVersion())
	}
}

// A database written by a newer flow is refused, and left byte for byte as
// it was: not even switched to WAL mode.
func TestRefuseNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{versionsTable, "INSERT INTO schema_versions VALUES (1, 0), (99, 0)", "CREATE TABLE future (x)"} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()
	before, _ := os.ReadFile(path)

	_, err = Open(path, Options{})
	var ne *NewerError
	if !errors.As(err, &ne) || ne.Version != 99 || ne.Know != SchemaVersion() {
		t.Fatalf("Open = %v, want a NewerError for version 99", err)
	}
	for _, want := range []string{path, "newer flow", "schema version 99", "upgrade flow", "--state"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("the newer database was modified")
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		t.Error("a WAL file was created beside the newer database")
	}
}

func TestNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	os.WriteFile(path, bytes.Repeat([]byte("not sqlite "), 100), 0o644)
	_, err := Open(path, Options{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("not a flow state database")) {
		t.Fatalf("Open = %v", err)
	}
}

func TestMustExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".flow", FileName)
	if _, err := Open(path, Options{MustExist: true}); !errors.Is(err, ErrNotExist) {
		t.Fatalf("Open = %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(filepath.Dir(path)); err == nil {
		t.Error("MustExist created the state directory")
	}
}

const childWrites = 300

// writerChild opens the database at path (perhaps creating it at the same
// time as its sibling) and writes runs and cache entries one by one, each
// its own transaction, to contend for the write lock as much as possible.
func writerChild(path string) int {
	db, err := Open(path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	pid := strconv.Itoa(os.Getpid())
	for i := range childWrites {
		id := NewRunID(time.Now()) + "-" + pid
		if err := db.StartRun(ctx, Run{ID: id, File: "/p.yaml"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		k, _ := cachekey.Build(cachekey.Input{Kind: "compute", Item: pid + "-" + strconv.Itoa(i)}, nil)
		if err := db.Put(ctx, Scope{Pipeline: "/p.yaml", Stage: "s"}, k, json.RawMessage(`true`), 0); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := db.FinishRun(ctx, id, 0, "succeeded", "", &report.Report{Stages: []*report.Stage{{Name: "s", In: 1, Succeeded: 1}}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if _, err := db.Runs(ctx, RunFilter{Limit: 5}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if err := db.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// Two processes create and write one database at once: no SQLITE_BUSY, no
// lost write.
func TestTwoProcessesWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".flow", FileName)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	outs := make([]bytes.Buffer, 2)
	for i := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "FLOW_STORE_TEST_WRITER="+path)
		cmd.Stderr = &outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = cmd.Wait()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v\n%s", i, err, outs[i].String())
		}
	}
	db := open(t, path)
	ctx := context.Background()
	runs, err := db.Runs(ctx, RunFilter{})
	if err != nil || len(runs) != 2*childWrites {
		t.Fatalf("%d runs (%v), want %d", len(runs), err, 2*childWrites)
	}
	for _, r := range runs {
		if r.Status != "succeeded" || len(r.Stages) != 1 {
			t.Fatalf("run %+v not finished", r)
		}
	}
	entries, err := db.List(ctx, CacheFilter{})
	if err != nil || len(entries) != 2*childWrites {
		t.Fatalf("%d cache entries (%v), want %d", len(entries), err, 2*childWrites)
	}
	if got := appliedVersions(t, path); len(got) != SchemaVersion() {
		t.Errorf("applied versions %v: a migration ran twice or not at all", got)
	}
}

// Two *DB on one file, many goroutines each: every write lands.
func TestConcurrentWritersOneProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	dbs := []*DB{open(t, path), open(t, path)}
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for d, db := range dbs {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 100 {
					k, _ := cachekey.Build(cachekey.Input{Kind: "k", Item: []int{d, g, i}}, nil)
					if err := db.Put(ctx, Scope{Pipeline: "/p", Stage: "s"}, k, json.RawMessage(`1`), 0); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			}()
		}
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d writes failed, first: %v", len(errs), errs[0])
	}
	n, err := dbs[0].List(ctx, CacheFilter{})
	if err != nil || len(n) != 800 {
		t.Fatalf("%d entries, %v; want 800", len(n), err)
	}
}

// One failing write in a batch does not undo the others.
func TestBatchIsolation(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), FileName))
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 25 {
				errs[i] = db.FinishRun(ctx, "no-such-run", 0, "succeeded", "", nil)
				return
			}
			errs[i] = db.StartRun(ctx, Run{ID: fmt.Sprintf("r%02d", i), File: "/p"})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 25) {
			t.Errorf("write %d: %v", i, err)
		}
	}
	runs, _ := db.Runs(ctx, RunFilter{})
	if len(runs) != 49 {
		t.Errorf("%d runs, want 49", len(runs))
	}
}

func TestRunHistory(t *testing.T) {
	now := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	db, err := Open(filepath.Join(t.TempDir(), FileName), Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	ids := []string{NewRunID(now), NewRunID(now.Add(time.Second))}
	if ids[0] >= ids[1] {
		t.Fatalf("ids do not sort by time: %v", ids)
	}
	for i, id := range ids {
		if err := db.StartRun(ctx, Run{ID: id, File: fmt.Sprintf("/p%d.yaml", i), Pipeline: "p", FileSHA256: "ab", Vars: map[string]any{"token": "[redacted]"}, Start: now.Add(time.Duration(i) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	rep := &report.Report{Status: "failed", ExitCode: 1, Stages: []*report.Stage{{Name: "a", Kind: "range", In: 3, Succeeded: 3}, {Name: "b", Kind: "compute", In: 3, Succeeded: 2, Failed: 1}}}
	if err := db.FinishRun(ctx, ids[0], 1, "failed", "1 item failed", rep); err != nil {
		t.Fatal(err)
	}
	runs, err := db.Runs(ctx, RunFilter{})
	if err != nil || len(runs) != 2 {
		t.Fatal(runs, err)
	}
	if runs[0].ID != ids[1] || runs[0].Status != StatusRunning || runs[0].End != nil {
		t.Errorf("latest run %+v", runs[0])
	}
	r := runs[1]
	if r.Status != "failed" || *r.ExitCode != 1 || len(r.Stages) != 2 || r.Stages[1].Failed != 1 || r.Vars["token"] != "[redacted]" {
		t.Errorf("finished run %+v", r)
	}
	if got, _ := db.Runs(ctx, RunFilter{File: "/p0.yaml"}); len(got) != 1 || got[0].ID != ids[0] {
		t.Errorf("filter by file: %+v", got)
	}
	if got, _ := db.Runs(ctx, RunFilter{Limit: 1}); len(got) != 1 || got[0].ID != ids[1] {
		t.Errorf("limit 1: %+v", got)
	}
	found, doc, err := db.FindRun(ctx, ids[0][:17])
	if err != nil || found.ID != ids[0] || !bytes.Contains(doc, []byte(`"status":"failed"`)) {
		t.Errorf("FindRun by prefix: %+v %s %v", found, doc, err)
	}
	if found, _, err := db.FindRun(ctx, "latest"); err != nil || found.ID != ids[1] {
		t.Errorf("FindRun latest: %+v %v", found, err)
	}
	if _, _, err := db.FindRun(ctx, "2026"); err == nil {
		t.Error("an ambiguous prefix was accepted")
	}
	if _, _, err := db.FindRun(ctx, "nope"); !errors.Is(err, ErrNoRun) {
		t.Errorf("FindRun unknown: %v", err)
	}
}

// A run left "running" by a process that is gone shows as died.
func TestRunOfDeadProcess(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), FileName))
	ctx := context.Background()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := db.StartRun(ctx, Run{ID: "dead", File: "/p", PID: cmd.Process.Pid}); err != nil {
		t.Fatal(err)
	}
	if err := db.StartRun(ctx, Run{ID: "alive", File: "/p"}); err != nil {
		t.Fatal(err)
	}
	runs, _ := db.Runs(ctx, RunFilter{})
	status := map[string]string{}
	for _, r := range runs {
		status[r.ID] = r.Status
	}
	if status["dead"] != StatusDied || status["alive"] != StatusRunning {
		t.Errorf("statuses %v", status)
	}
}
