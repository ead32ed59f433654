package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/store"
)

// stateEnv moves the state directory, as --state does.
const stateEnv = "FLOW_STATE"

// stateFlags say where the state database (run history, cache) lives.
type stateFlags struct {
	dir  string
	none bool
	// changed tells which flags the command line set; nil means none.
	changed func(name string) bool
}

func addStateFlags(cmd *cobra.Command, f *stateFlags, withNone bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "state", "", "keep the state database (run history) in `DIR`/state.db instead of .flow/ beside the pipeline file (also: FLOW_STATE)")
	if withNone {
		fl.BoolVar(&f.none, "no-state", false, "do not record this run in the state database")
	}
}

// stateLocation is where a command's state database is, and whether the
// user named it (--state or FLOW_STATE) or it is the default beside the
// pipeline file. dir is the pipeline's directory ("" when there is no
// file: a pipeline read from stdin has no default).
type stateLocation struct {
	path     string // the database file; "" for none
	explicit bool
	source   string // how it was chosen, for messages
}

func (a *app) stateLocation(f stateFlags, dir string) (stateLocation, error) {
	set := func(name string) bool { return f.changed != nil && f.changed(name) }
	if f.none {
		if set("state") {
			return stateLocation{}, &exitError{code: ExitInvalid, msg: "--state and --no-state contradict each other: give one"}
		}
		return stateLocation{}, nil
	}
	if set("state") {
		if f.dir == "" {
			return stateLocation{}, &exitError{code: ExitInvalid, msg: "--state needs a directory, e.g. --state /var/lib/flow"}
		}
		return stateLocation{path: filepath.Join(f.dir, store.FileName), explicit: true, source: "--state"}, nil
	}
	if d := a.getenv(stateEnv); d != "" {
		return stateLocation{path: filepath.Join(d, store.FileName), explicit: true, source: stateEnv}, nil
	}
	if dir == "" {
		return stateLocation{}, nil
	}
	return stateLocation{path: filepath.Join(dir, store.DirName, store.FileName), source: "default"}, nil
}

func (a *app) getenv(name string) string {
	for _, kv := range a.environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// history records one run in the state database. A nil *history records
// nothing; every method is safe on it.
type history struct {
	db     *store.DB
	id     string
	stderr io.Writer
}

// openHistory opens the state database for flow run. A database the user
// named (--state, FLOW_STATE) that cannot be used stops the run before it
// starts: they asked for a record and would not get one. The default one
// beside the pipeline file is a convenience: failing to open it (a
// read-only directory, a database of a newer flow) is a warning and the run
// goes on unrecorded.
func (a *app) openHistory(file string, p *spec.Pipeline, f stateFlags) (*history, error) {
	dir := p.Dir
	if file == "-" {
		dir = ""
	}
	loc, err := a.stateLocation(f, dir)
	if err != nil || loc.path == "" {
		return nil, err
	}
	if !loc.explicit {
		ensureGitignore(filepath.Dir(loc.path))
	}
	db, err := store.Open(loc.path, store.Options{})
	if err != nil {
		if loc.explicit {
			return nil, &exitError{code: ExitFailed, msg: fmt.Sprintf("state (%s): %v; nothing was run", loc.source, err)}
		}
		fmt.Fprintf(a.stderr, "flow: warning: this run is not recorded: %v\n", err)
		return nil, nil
	}
	return &history{db: db, stderr: a.stderr}, nil
}

// ensureGitignore makes a new default state directory ignore itself, so that
// a pipeline kept in git does not show .flow/ as a change.
func ensureGitignore(dir string) {
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return // Open reports it
	}
	_ = os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("# flow's state: run history and cache (docs/state.md)\n*\n"), 0o644)
}

// writeTo sends the history's warnings to w (the progress display's
// stderr, so that bars do not overwrite them).
func (h *history) writeTo(w io.Writer) {
	if h != nil {
		h.stderr = w
	}
}

// start records the run as running.
func (h *history) start(file string, p *spec.Pipeline) {
	if h == nil {
		return
	}
	r := store.Run{
		ID:          store.NewRunID(h.db.Now()),
		File:        file,
		Pipeline:    p.Name,
		Vars:        redactedVars(p.Vars),
		FlowVersion: flowVersion(),
	}
	if file == "-" {
		r.File = "<stdin>"
	} else {
		if abs, err := filepath.Abs(file); err == nil {
			r.File = abs
		}
		// The text that was validated and runs, as the report hashes it: the
		// file read again could have changed since, and costs a read.
		s := sha256.Sum256(p.Source)
		r.FileSHA256 = hex.EncodeToString(s[:])
	}
	if err := h.db.StartRun(context.Background(), r); err != nil {
		fmt.Fprintf(h.stderr, "flow: warning: this run is not recorded: %v\n", err)
		return
	}
	h.id = r.ID
}

// finish records how the run ended.
func (h *history) finish(rep *report.Report, code int, runErr error) {
	if h == nil || h.id == "" {
		return
	}
	status, reason := "failed", ""
	if rep != nil {
		status, reason = string(rep.Status), rep.Reason
	} else if runErr != nil {
		reason = runErr.Error()
	}
	if status == "" {
		status = "finished"
	}
	if err := h.db.FinishRun(context.Background(), h.id, code, status, reason, rep); err != nil {
		fmt.Fprintf(h.stderr, "flow: warning: the end of run %s is not recorded: %v\n", h.id, err)
	}
}

func (h *history) close() {
	if h == nil {
		return
	}
	if err := h.db.Close(); err != nil {
		fmt.Fprintf(h.stderr, "flow: warning: state database: %v\n", err)
	}
}

// redactedMark replaces secrets, as in the engine's output.
const redactedMark = "***"

// redactedVars are the effective variables, with the value of each secret
// one hidden, and hidden too wherever another variable's value contains it.
func redactedVars(v spec.Vars) map[string]any {
	secrets := v.Secrets()
	hide := func(s string) string {
		for _, x := range secrets {
			s = strings.ReplaceAll(s, x, redactedMark)
		}
		return s
	}
	m := make(map[string]any, len(v.List))
	for _, x := range v.List {
		switch val := x.Value.(type) {
		case string:
			if x.Secret {
				m[x.Name] = redactedMark
			} else {
				m[x.Name] = hide(val)
			}
		default:
			if x.Secret {
				m[x.Name] = redactedMark
			} else {
				m[x.Name] = val
			}
		}
	}
	return m
}

// flowVersion is the first line of flow version, without "flow ".
func flowVersion() string {
	bi, ok := debug.ReadBuildInfo()
	line, _, _ := strings.Cut(versionText(bi, ok, Revision), "\n")
	return strings.TrimPrefix(line, "flow ")
}
