package cli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/cache"
	"github.com/flowrun/flow/cluster"
	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/store"
)

// resumeFlags: --resume reuses stored successes; --cache-store nats shares
// them across machines (docs/state.md).
type resumeFlags struct {
	resume, resumeFailed bool
	cacheStore           string
	claimTTL             time.Duration
}

func addResumeFlags(cmd *cobra.Command, f *resumeFlags) {
	fl := cmd.Flags()
	fl.BoolVar(&f.resume, "resume", false, "reuse the results of items that succeeded in earlier runs (stages with a cache: see docs/state.md); what failed or never ran runs")
	fl.BoolVar(&f.resumeFailed, "resume-failed", false, "the same as --resume: failures are never stored, so a resumed run always runs again what failed")
	fl.StringVar(&f.cacheStore, "cache-store", "local", "where cached results live: local (the state database) or nats (also a JetStream key-value bucket on the --nats server, shared by every run that names it; an item is computed by one run at a time)")
	fl.DurationVar(&f.claimTTL, "cache-claim-ttl", cache.DefaultClaimTTL, "with --cache-store nats: how long another run waits for an item whose claimer stopped renewing its claim (died) before computing it itself")
}

// check refuses a --cache-store that cannot work before anything is
// opened or run.
func (f resumeFlags) check(nf natsFlags) error {
	switch f.cacheStore {
	case "local", "":
	case "nats":
		if nf.conn.URL == "" {
			return &exitError{code: ExitInvalid, msg: "--cache-store nats needs --nats URL: the shared cache lives on a NATS server that outlives runs (an embedded server's store goes with its run); nothing was run"}
		}
	default:
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--cache-store %q: use local or nats; nothing was run", f.cacheStore)}
	}
	return nil
}

var errResumeNeedsState = &exitError{code: ExitInvalid, msg: "--resume needs the state database, where earlier results are kept: drop --no-state, or name one with --state DIR; nothing was run"}

// clusterRun names this run in the cluster after its record in the state
// database and, with --resume, lists the earlier runs of the same pipeline
// whose workers' answers are still in FLOW_RESULTS: those that did not
// succeed (a parent killed stays "running"), newest first, back to the
// last that succeeded, within the day the stream keeps answers.
func (a *app) clusterRun(h *history, file string, f resumeFlags) cluster.RunOptions {
	var o cluster.RunOptions
	if h == nil || h.id == "" {
		return o
	}
	o.ID = cluster.RunIDFor(h.id)
	if !f.resume && !f.resumeFailed {
		return o
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return o
	}
	runs, err := h.db.Runs(context.Background(), store.RunFilter{File: abs, Limit: 20})
	if err != nil {
		return o
	}
	for _, r := range runs {
		if r.ID == h.id {
			continue
		}
		if r.Status == string(report.StatusSucceeded) || time.Since(r.Start) > 24*time.Hour {
			break
		}
		o.Resume = append(o.Resume, cluster.RunIDFor(r.ID))
	}
	return o
}

// cachedRunners wraps every mode's runner factory with the result cache
// of the state database (and the shared one of --cache-store nats).
// Without a database nothing is cached, and --resume is refused before
// anything runs: it would silently start from zero. The returned func
// closes the shared cache's connection.
func (a *app) cachedRunners(rs engine.Runners, h *history, file string, p *spec.Pipeline, f resumeFlags, nf natsFlags, stderr io.Writer) (engine.Runners, func(), error) {
	resume := f.resume || f.resumeFailed
	noop := func() {}
	if f.cacheStore == "nats" && h == nil {
		return nil, nil, &exitError{code: ExitInvalid, msg: "--cache-store nats needs the state database too (explain, ls and the local copy read it): drop --no-state, or name one with --state DIR; nothing was run"}
	}
	if h == nil {
		if resume {
			return nil, nil, errResumeNeedsState
		}
		return rs, noop, nil
	}
	scope := file
	if file == "-" {
		scope = "<stdin>"
	} else if abs, err := filepath.Abs(file); err == nil {
		scope = abs
	}
	out := engine.Runners{}
	for m, fac := range rs {
		out[m] = fac
	}
	if out[spec.ModeThread] == nil {
		out[spec.ModeThread] = engine.ThreadRunner
	}
	o := cache.Options{DB: h.db, Pipeline: scope, Resume: resume, Secrets: p.Vars.Secrets(), Stderr: stderr,
		Run: func() string { return h.id }}
	closeShared := noop
	if f.cacheStore == "nats" {
		shared, closeFn, err := a.openSharedCache(nf, f.claimTTL, stderr)
		if err != nil {
			return nil, nil, err
		}
		o.Shared, closeShared = shared, closeFn
	}
	for m, fac := range out {
		out[m] = cache.Wrap(fac, o)
	}
	return out, closeShared, nil
}

// openSharedCache connects to NATS for the shared cache's bucket.
func (a *app) openSharedCache(nf natsFlags, claimTTL time.Duration, stderr io.Writer) (*cache.KV, func(), error) {
	nf.fill(a.environ)
	nf.conn.Name = "flow run (shared cache)"
	nc, err := nf.conn.Dial()
	if err != nil {
		return nil, nil, &exitError{code: ExitFailed, msg: fmt.Sprintf("--cache-store nats: %v; nothing was run", err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := cache.OpenKV(ctx, nc, cache.KVOptions{ClaimTTL: claimTTL, Warn: func(msg string) {
		fmt.Fprintf(stderr, "flow: warning: shared cache: %s\n", msg)
	}})
	if err != nil {
		nc.Close()
		return nil, nil, &exitError{code: ExitFailed, msg: fmt.Sprintf("--cache-store nats: %v; nothing was run", err)}
	}
	// Every result is acknowledged by the server before its item ends:
	// nothing is left to flush.
	return kv, nc.Close, nil
}

// forCluster is cf as the cluster's runners should see it: --nats given
// for the shared cache alone is not a --nats that "changes nothing".
func (f resumeFlags) forCluster(cf clusterFlags, p *spec.Pipeline) clusterFlags {
	if f.cacheStore != "nats" {
		return cf
	}
	for _, s := range p.Stages {
		if s.Mode == spec.ModeCluster {
			return cf
		}
	}
	cf.nats.conn.URL = ""
	return cf
}
