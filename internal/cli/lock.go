package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/lock"
	"github.com/flowrun/flow/spec"
)

// ExitLocked is the exit code of a run skipped because another run holds
// its --lock file (--lock-mode skip): EX_TEMPFAIL from sysexits.h, "try
// again later", which is exactly the situation, and distinct from a
// failure so that cron wrappers and monitors can tell the two apart.
const ExitLocked = 75

// lockFlags are the cron-safety flags of flow run.
type lockFlags struct {
	file    string
	mode    string
	timeout time.Duration
	// root is set when the lock comes from the pipeline file: the lock is
	// then confined to the pipeline's folder, rel is its path there and
	// pos where the file names it (FILE:LINE:COL).
	root, rel, pos string
	// changed tells which flags the command line set; nil means none.
	changed func(name string) bool
}

func addLockFlags(cmd *cobra.Command, f *lockFlags) {
	fl := cmd.Flags()
	fl.StringVar(&f.file, "lock", "", "hold an exclusive lock on `FILE` for the whole run, so that overlapping runs (from cron, say) do not run at once")
	fl.StringVar(&f.mode, "lock-mode", "fail", "when the --lock file is held by another run: wait (up to --lock-timeout), skip (exit 75 without running) or fail (exit 1)")
	fl.DurationVar(&f.timeout, "lock-timeout", 0, "with --lock-mode wait: give up (exit 1) after this long; 0 waits as long as it takes")
	_ = cmd.RegisterFlagCompletionFunc("lock-mode", cobra.FixedCompletions([]string{"wait", "skip", "fail"}, cobra.ShellCompDirectiveNoFileComp))
}

// checkLockFlags refuses inconsistent lock flags before anything runs.
func checkLockFlags(f lockFlags) error {
	if _, err := lock.ParseMode(f.mode); err != nil {
		return &exitError{code: ExitInvalid, msg: "--lock-mode: " + err.Error()}
	}
	if f.timeout < 0 {
		return &exitError{code: ExitInvalid, msg: "--lock-timeout must not be negative"}
	}
	return nil
}

// effectiveLock merges the pipeline's lock: with the flags, each flag the
// command line set winning over the file. A relative path in the file is
// relative to the file, as every path in it is, and must stay in its folder
// (validation refuses ".." and absolute paths; the lock package refuses
// links that lead out); one given as a flag is relative to the working
// directory, as every flag is, and may be anywhere: it is the operator's
// choice, not the pipeline's.
func effectiveLock(f lockFlags, p *spec.Pipeline) (lockFlags, error) {
	set := func(name string) bool { return f.changed != nil && f.changed(name) }
	if l := p.Lock; l != nil {
		if !set("lock") && l.AllowOutside {
			// Trusted to go anywhere: a path like --lock's, but relative
			// to the pipeline's folder.
			f.file = l.File
			if !filepath.IsAbs(f.file) {
				f.file = filepath.Join(p.Dir, l.File)
			}
			pos := conf.ValuePos(conf.Lookup(p.Node, "lock"), "file")
			f.pos = fmt.Sprintf("%s:%d:%d", p.File, pos.Line, pos.Col)
		} else if !set("lock") {
			f.root, f.rel = p.Dir, l.File
			if f.root == "" {
				f.root = "."
			}
			f.file = filepath.Join(f.root, l.File)
			// The short form (lock: FILE) has no node of its own.
			pos := conf.ValuePos(conf.Lookup(p.Node, "lock"), "file")
			f.pos = fmt.Sprintf("%s:%d:%d", p.File, pos.Line, pos.Col)
		}
		if !set("lock-mode") && l.Mode != "" {
			f.mode = l.Mode
		}
		if !set("lock-timeout") {
			f.timeout = l.Timeout
		}
	}
	if f.file == "" && (set("lock-mode") || set("lock-timeout")) {
		return f, &exitError{code: ExitInvalid, msg: "--lock-mode and --lock-timeout need a lock file: --lock FILE, or lock: in the pipeline file"}
	}
	if f.timeout > 0 && f.mode != "wait" {
		return f, &exitError{code: ExitInvalid, msg: fmt.Sprintf("a lock timeout only applies in mode wait, and the lock mode is %s; add --lock-mode wait", f.mode)}
	}
	return f, nil
}

// takeLock acquires the --lock file, if any. On failure it calls stop (the
// run never starts), records why for the report, and returns the error that
// sets the exit code. The returned release is never nil.
func (a *app) takeLock(ctx context.Context, file string, f runFlags, stop func() os.Signal, o *outcome) (release func(), err error) {
	if f.lock.file == "" {
		return func() {}, nil
	}
	mode, _ := lock.ParseMode(f.lock.mode)
	path := f.lock.file
	if f.lock.root != "" {
		path = f.lock.rel
	}
	l, err := lock.Acquire(ctx, path, lock.Options{
		Mode:    mode,
		Timeout: f.lock.timeout,
		Command: "flow run " + file,
		Root:    f.lock.root,
	})
	if err == nil {
		if l.Stale.PID != 0 {
			fmt.Fprintf(a.stderr, "flow: took over the lock %s left by %s, which ended without releasing it\n", f.lock.file, l.Stale)
		}
		return func() { _ = l.Release() }, nil
	}
	sig := stop()
	code, status := ExitFailed, "failed"
	var held *lock.HeldError
	var refused *lock.RefusedError
	switch {
	case sig != nil:
		code, status = signalCode(sig), "interrupted"
		err = fmt.Errorf("stopped by %s while waiting for the lock %s", signalName(sig), f.lock.file)
	case errors.As(err, &refused):
		// A wrong path, not a busy lock: nothing ran, as for an invalid
		// file, and nothing was written.
		code, status = ExitInvalid, "invalid"
		where := "--lock: "
		if f.lock.pos != "" {
			where = f.lock.pos + ": lock: "
		}
		err = fmt.Errorf("%slock file %v; not running", where, err)
	case errors.As(err, &held) && held.Mode == lock.Skip:
		code, status = ExitLocked, "skipped"
		err = fmt.Errorf("skipped: %v: another run is in progress (exit %d; lock mode wait waits for it)", err, ExitLocked)
	case errors.As(err, &held) && held.Mode == lock.Fail:
		err = fmt.Errorf("%v: another run is in progress; not running (lock mode skip exits %d instead, wait waits)", err, ExitLocked)
	case errors.As(err, &held):
		err = fmt.Errorf("%v; not running", err)
	default:
		err = fmt.Errorf("lock file %s: %v", f.lock.file, err)
	}
	fmt.Fprintf(a.stderr, "flow: %v\n", err)
	o.status, o.reason = status, strings.TrimPrefix(err.Error(), "skipped: ")
	return nil, exitCode(code)
}
