package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/store"
	"github.com/flowrun/flow/store/cachekey"
)

// resumeKinds are the kinds whose results are stored by default and
// reused by `flow run --resume`: running an item again gives the same
// result and does nothing else that matters (resize writes its output
// file again, the same bytes), and an item costs more than storing its
// result (about 45 µs of CPU). exec and fetch with a method other than GET or
// HEAD have effects: they are cached only when the stage says so. compute
// is pure but mostly cheaper to run again than to store and look up: it is
// cached when the stage says so (cache: resume for an expensive one).
var resumeKinds = map[string]bool{"analyze-logs": true, "resize": true, "fetch": true}

// Policy says whether a stage writes and reads the cache.
type Policy struct {
	Store bool // successes are stored
	Read  bool // stored successes answer in place of running
	TTL   time.Duration
	Why   string // for people: how the policy was decided
}

// PolicyOf decides a stage's policy. `cache: off` neither reads nor
// writes; `cache: on` (or a mapping) reads and writes on every run;
// `cache: resume` writes on every run and reads with --resume only, so
// that a plain `flow run` computes afresh and an interrupted run can be
// taken up where it stopped. Without `cache:`, the kind's default.
func PolicyOf(s *spec.Stage, k *Keyer, resume bool) Policy {
	if c := s.Cache; c != nil {
		switch {
		case !c.On:
			return Policy{Why: "cache: off"}
		case c.ResumeOnly:
			return Policy{Store: true, Read: resume, TTL: c.TTL, Why: "cache: resume"}
		}
		return Policy{Store: true, Read: true, TTL: c.TTL, Why: "cache: on"}
	}
	if !resumeKinds[s.Kind] {
		if s.Kind == "compute" {
			return Policy{Why: "compute is cheaper to run again than to store: cached with cache: resume or on"}
		}
		return Policy{Why: fmt.Sprintf("%s has effects: cached only with cache: on or resume", s.Kind)}
	}
	if s.Kind == "fetch" {
		m, _ := k.options["method"].(string)
		if m = strings.ToUpper(m); m != "" && m != "GET" && m != "HEAD" {
			return Policy{Why: fmt.Sprintf("fetch %s has effects: cached only with cache: on or resume", m)}
		}
	}
	if !k.pure {
		return Policy{Why: "an expression calls now(): cached only with cache: on or resume"}
	}
	return Policy{Store: true, Read: resume, Why: "default of " + s.Kind + ": stored, reused with --resume"}
}

// MaxResult is the largest result stored, as JSON: a crawl of large
// pages must not turn the state database into a copy of the web. A larger
// result runs again on resume.
const MaxResult = 1 << 20

// Options configure Wrap.
type Options struct {
	DB       *store.DB
	Pipeline string // absolute path of the pipeline file, the entries' scope
	Resume   bool
	Secrets  []string
	Stderr   io.Writer
	// Run is the id of the run in the state database, read when a stage
	// starts: entries record the run and item index that last used them
	// (flow cache explain --index). Nil or "" records none.
	Run func() string
	// Shared, when set, is a cache several machines share (KV): read after
	// the local store, written beside it, and claimed so that two runs
	// never compute one item at once.
	Shared Shared
}

// Wrap returns a factory whose runners consult and fill the cache around
// the runners inner builds. A stage whose policy is off gets inner's
// runner unchanged.
func Wrap(inner engine.RunnerFactory, o Options) engine.RunnerFactory {
	return func(sr engine.StageRun) (engine.Runner, error) {
		r, err := inner(sr)
		if err != nil || o.DB == nil {
			return r, err
		}
		k, err := NewKeyer(sr.Stage, sr.Registry, sr.Env, o.Secrets, o.DB)
		if err != nil {
			// The kind decoded these options already; a stage the cache
			// cannot describe runs uncached, which only the user who asked
			// for a cache needs to hear.
			if c := sr.Stage.Cache; c != nil && c.On && o.Stderr != nil {
				fmt.Fprintf(o.Stderr, "flow: warning: stage %s: cache: its options cannot be part of a key (%v); its items run uncached\n", sr.Stage.Name, err)
			}
			return r, nil
		}
		pol := PolicyOf(sr.Stage, k, o.Resume)
		if !pol.Store && !pol.Read {
			return r, nil
		}
		stderr := o.Stderr
		if stderr == nil {
			stderr = sr.Stderr
		}
		scope := store.Scope{Pipeline: o.Pipeline, Stage: sr.Stage.Name}
		if o.Run != nil {
			scope.Run = o.Run()
		}
		return &runner{inner: r, keyer: k, pol: pol, db: o.DB, shared: o.Shared, scope: scope, stderr: stderr, secrets: jsonSpellings(o.Secrets)}, nil
	}
}

type runner struct {
	inner  engine.Runner
	keyer  *Keyer
	pol    Policy
	db     *store.DB
	shared Shared
	scope  store.Scope
	stderr io.Writer
	warn   sync.Once
	swarn  sync.Once
	bwarn  sync.Once // badShared
	// sharedOff: the shared cache failed once; the stage goes on with the
	// local one rather than wait on a server that is gone for every item.
	sharedOff atomic.Bool
	// secrets' JSON spellings, as they would appear in a stored result
	secrets []string
}

// warnf says once per stage that the cache is not doing its job; the run
// goes on uncached, its results unchanged.
func (r *runner) warnf(format string, args ...any) {
	r.warn.Do(func() {
		if r.stderr != nil {
			fmt.Fprintf(r.stderr, "flow: warning: stage %s: "+format+"; such items run uncached (the run goes on)\n", append([]any{r.scope.Stage}, args...)...)
		}
	})
}

// sharedWarnf says once per stage that the shared cache failed; the run
// goes on with the local one.
func (r *runner) sharedWarnf(format string, args ...any) {
	r.sharedOff.Store(true)
	r.swarn.Do(func() {
		if r.stderr != nil {
			fmt.Fprintf(r.stderr, "flow: warning: stage %s: shared cache: "+format+"; the stage goes on with the local cache only\n", append([]any{r.scope.Stage}, args...)...)
		}
	})
}

func (r *runner) Do(ctx context.Context, in steps.Input, at *engine.Attempt) (any, error) {
	key, err := r.keyer.Key(ctx, in)
	if err != nil {
		// No key (a missing input file, a path that is not a string): the
		// step itself says what is wrong, in its own words.
		return r.inner.Do(ctx, in, at)
	}
	scope := r.scope
	scope.Index = in.Index
	if r.pol.Read {
		res, ok, err := r.db.GetFor(ctx, key.Digest, scope)
		if err != nil {
			r.warnf("reading the cache: %v", err)
		} else if ok {
			if v, ok := r.answer(res, at); ok {
				return v, nil
			}
		}
	}
	var claim Held
	shared := r.shared != nil && !r.sharedOff.Load()
	if shared && r.pol.Read {
		sv, h, err := r.shared.Claim(ctx, key.Digest)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, err
		case err != nil:
			r.sharedWarnf("%v", err)
		case sv != nil:
			if err := sv.Check(key.Digest); err != nil {
				// Not kept: the item runs here, and its value replaces it.
				r.badShared(key.Digest, err)
				break
			}
			if v, ok := r.answer(sv.Result, at); ok {
				// Kept here too: explain and ls see it, and the next run
				// reads it without the network.
				r.storeLocal(ctx, scope, key, sv.Result)
				return v, nil
			}
		default:
			claim = h
		}
	}
	if claim != nil {
		// Released however the item ends without a stored value (an
		// error, a result not stored, a panic the engine recovers), so
		// that no other run waits on it until it expires.
		defer func() {
			if claim != nil {
				claim.Release()
			}
		}()
	}
	v, err := r.inner.Do(ctx, in, at)
	if err != nil || !r.pol.Store {
		return v, err
	}
	b, ok := r.storable(v)
	if !ok {
		return v, nil
	}
	r.storeLocal(ctx, scope, key, b)
	if claim != nil || (shared && !r.sharedOff.Load()) {
		sv := Value{Parts: key.Parts, Result: b}
		// The item is done: its value is stored even if the run is being
		// stopped, so that the runs waiting on it need not compute it.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		var serr error
		if claim != nil {
			serr, claim = claim.Fill(sctx, sv, r.pol.TTL), nil
		} else {
			serr = r.shared.Put(sctx, key.Digest, sv, r.pol.TTL)
		}
		cancel()
		if serr != nil {
			r.sharedWarnf("storing a result: %v", serr)
		}
	}
	return v, nil
}

// answer decodes a stored result as the item's.
func (r *runner) answer(res []byte, at *engine.Attempt) (any, bool) {
	v, err := steps.DecodeJSON(res)
	if err != nil {
		r.warnf("a stored result does not decode: %v", err)
		return nil, false
	}
	at.Cached = true
	at.Worker = "cache"
	return v, true
}

// storable is the result as JSON, unless it must not be stored: too large,
// or holding a secret.
func (r *runner) storable(v any) ([]byte, bool) {
	b, err := json.Marshal(v)
	if err != nil {
		r.warnf("a result does not encode: %v", err)
		return nil, false
	}
	if len(b) > MaxResult {
		return nil, false
	}
	// The state database never holds a secret in clear: a result that
	// carries one is not stored (its item runs again on resume).
	for _, sec := range r.secrets {
		if sec != "" && bytes.Contains(b, []byte(sec)) {
			return nil, false
		}
	}
	return b, true
}

func (r *runner) storeLocal(ctx context.Context, scope store.Scope, key cachekey.Key, b []byte) {
	if err := r.db.PutQueued(ctx, scope, key, b, r.pol.TTL); err != nil && ctx.Err() == nil {
		r.warnf("storing a result: %v", err)
	}
}

func (r *runner) Close() error { return r.inner.Close() }

// InFlight passes on the inner runner's (the process pool's batching).
func (r *runner) InFlight() int {
	if f, ok := r.inner.(engine.InFlighter); ok {
		return f.InFlight()
	}
	return 0
}

// jsonSpellings are the secrets as they appear inside a JSON string
// (escaped), the form a stored result would hold them in.
func jsonSpellings(secrets []string) []string {
	var out []string
	for _, s := range secrets {
		if s == "" {
			continue
		}
		b, _ := json.Marshal(s)
		out = append(out, string(b[1:len(b)-1]))
	}
	return out
}
