package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/cache"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/store"
)

func (a *app) cacheCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Explain, list and remove the results stored for flow run --resume",
		Long: `The result cache of the state database holds the results of items that
succeeded, under a key made of the stage's kind and options, the item, the
content of the files it reads, the declared environment variables and the
stage's cache.salt (docs/state.md). flow run --resume reuses them.

FILE, when given, is the pipeline file: its database (.flow/state.db beside
it, or --state DIR / FLOW_STATE) is the one read, and ls and rm keep to its
entries.`,
	}
	cmd.AddCommand(a.cacheExplainCmd(), a.cacheLsCmd(), a.cacheRmCmd(), a.cacheGCCmd())
	return cmd
}

type cacheExplainFlags struct {
	state   stateFlags
	item    string
	index   int64 // --item-index: the index of --item
	ofRun   int64 // --index: item N of the last run
	byIndex bool
	sets    []string
	json    bool
	nats    natsFlags // --nats: also look in the shared cache
}

func (a *app) cacheExplainCmd() *cobra.Command {
	var f cacheExplainFlags
	cmd := &cobra.Command{
		Use:   "explain STAGE [FILE] --item JSON | --index N",
		Short: "Tell whether an item of a stage would be answered by the cache, and if not, why",
		Long: `Explain computes the key of one item in one stage of the pipeline FILE, as
flow run would now (same options, variables with --set, environment, file
contents), and prints "hit", or "miss" and what changed against the closest
stored entry (the same item in the same stage, else the same stage, else the
same kind): options key by key, file digests, the format version, the salt,
environment variables.

The item is the stage's input, as JSON: what the stage before it gives.
Or --index N: item N (its index in the source, from 0) of the last recorded
run of the pipeline, as that run gave it to the stage; the store keeps the
input of each item a cached stage stored or reused (up to 4 KiB), with the
run and index that last used it.
Without FILE, the pipeline of the latest run recorded in ./.flow (or
--state DIR / FLOW_STATE).`,
		Example: `  flow cache explain square pipeline.yaml --item 7
  flow cache explain fetch pipeline.yaml --index 41999
  flow cache explain scan logs.yaml --item '{"path": "logs/a.log"}'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return fmt.Errorf("%s needs STAGE and optionally FILE, e.g. %s square pipeline.yaml --item 7", cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f.state.changed = cmd.Flags().Changed
			f.byIndex = cmd.Flags().Changed("index")
			switch item := cmd.Flags().Changed("item"); {
			case !item && !f.byIndex:
				return &exitError{code: ExitInvalid, msg: "name the item: --item JSON (the stage's input, e.g. --item 7 or --item '{\"path\": \"a.log\"}') or --index N (item N of the last run)"}
			case item && f.byIndex:
				return &exitError{code: ExitInvalid, msg: "--item and --index both name the item: give one (--item-index sets the index of an --item)"}
			case f.byIndex && cmd.Flags().Changed("item-index"):
				return &exitError{code: ExitInvalid, msg: "--item-index is the index of an --item; with --index N the index is N: drop --item-index"}
			case f.byIndex && f.ofRun < 0:
				return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--index %d: an index counts the source's items from 0", f.ofRun)}
			}
			file := optArg(args[1:])
			if file == "" {
				var err error
				if file, err = a.latestPipeline(f.state); err != nil {
					return err
				}
			}
			return a.explainCache(args[0], file, f)
		},
	}
	addStateFlags(cmd, &f.state, false)
	fl := cmd.Flags()
	fl.StringVar(&f.item, "item", "", "the item, as JSON")
	fl.Int64Var(&f.index, "item-index", 0, "the --item's index in the source (matters only to stages whose options read index)")
	fl.Int64Var(&f.ofRun, "index", 0, "explain item `N` (its index in the source, from 0) of the last recorded run of the pipeline, instead of --item")
	fl.StringArrayVar(&f.sets, "set", nil, "override variable NAME with VALUE, as for flow run (`NAME=VALUE`, repeatable)")
	fl.BoolVar(&f.json, "json", false, "print the explanation as JSON")
	fl.StringVar(&f.nats.conn.URL, "nats", "", "on a local miss, also look the key up in the shared cache (flow run --cache-store nats) on this NATS server, e.g. `nats://host:4222` (token or password from FLOW_NATS_TOKEN / FLOW_NATS_PASSWORD)")
	return cmd
}

// sharedHit looks key up in the shared cache's bucket on f.nats.
func (a *app) sharedHit(f cacheExplainFlags, key string) (bool, error) {
	f.nats.fill(a.environ)
	f.nats.conn.Name = "flow cache explain"
	nc, err := f.nats.conn.Dial()
	if err != nil {
		return false, err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := cache.OpenKV(ctx, nc, cache.KVOptions{Existing: true})
	if err != nil {
		return false, err
	}
	_, ok, err := kv.Lookup(ctx, key)
	return ok, err
}

// latestPipeline is the pipeline file of the latest recorded run.
func (a *app) latestPipeline(f stateFlags) (string, error) {
	db, path, err := a.openRuns("", f)
	if errors.Is(err, store.ErrNotExist) {
		return "", &exitError{code: ExitInvalid, msg: fmt.Sprintf("no FILE and no run recorded (there is no %s): name the pipeline file", path)}
	} else if err != nil {
		return "", err
	}
	defer db.Close()
	runs, err := db.Runs(context.Background(), store.RunFilter{Limit: 1})
	if err != nil {
		return "", &exitError{code: ExitFailed, msg: err.Error()}
	}
	if len(runs) == 0 || runs[0].File == "" || runs[0].File == "<stdin>" {
		return "", &exitError{code: ExitInvalid, msg: fmt.Sprintf("no FILE, and %s records no run of a pipeline file: name the pipeline file", db.Path())}
	}
	return runs[0].File, nil
}

func (a *app) explainCache(stage, file string, f cacheExplainFlags) error {
	var item any
	if !f.byIndex {
		var err error
		if item, err = steps.DecodeJSON([]byte(f.item)); err != nil {
			return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--item %q is not JSON: %v; strings need quotes: --item '\"a\"'", f.item, err)}
		}
	}
	set, err := parseSets(f.sets)
	if err != nil {
		return err
	}
	p, err := a.load(file, set)
	if err != nil {
		printDiags(a.stderr, file, err, secretsOf(p))
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("%s is not valid: fix the problems above", file)}
	}
	var s *spec.Stage
	var names []string
	for _, st := range p.Stages {
		if a.cachedStage(st) {
			names = append(names, st.Name)
		}
		if st.Name == stage {
			s = st
		}
	}
	if s == nil || !a.cachedStage(s) {
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("%s has no step stage %q whose results are cached; its step stages: %s", file, stage, strings.Join(names, ", "))}
	}
	db, path, err := a.openRuns(file, f.state)
	if errors.Is(err, store.ErrNotExist) {
		if f.byIndex {
			return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--index %d: no run of %s is recorded (there is no %s yet): run it first, or give the item with --item JSON", f.ofRun, file, path)}
		}
		fmt.Fprintf(a.stdout, "miss: nothing is stored: there is no %s yet (flow run creates it)\n", path)
		return nil
	} else if err != nil {
		return err
	}
	defer db.Close()
	abs, _ := filepath.Abs(file)
	env := map[string]string{}
	for _, kv := range a.environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	senv := &steps.Env{Dir: p.Dir, Stage: s.Name, Vars: p.Vars.Map(), Env: env}
	k, err := cache.NewKeyer(s, a.reg, senv, p.Vars.Secrets(), db)
	if err != nil {
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("stage %s: %v", stage, err)}
	}
	pol := cache.PolicyOf(s, k, false)
	what := f.item
	var run string
	if f.byIndex {
		var recovered any
		run, recovered, err = a.itemOfLastRun(db, abs, s, k, pol, f.ofRun)
		if err != nil {
			return err
		}
		item, f.index = recovered, f.ofRun
		b, _ := json.Marshal(item)
		what = fmt.Sprintf("item %d (%s)", f.ofRun, b)
		if !f.json {
			fmt.Fprintf(a.stdout, "item %d of run %s in stage %s: %s\n", f.ofRun, run, s.Name, b)
		}
	}
	key, err := k.Key(context.Background(), steps.Input{Index: f.index, Item: item})
	if err != nil {
		return &exitError{code: ExitInvalid, msg: fmt.Sprintf("stage %s, item %s: no key: %v", stage, what, err)}
	}
	x, err := db.Explain(context.Background(), store.Scope{Pipeline: abs, Stage: s.Name}, key)
	if err != nil {
		return &exitError{code: ExitFailed, msg: err.Error()}
	}
	var shared *bool
	if !x.Hit && f.nats.conn.URL != "" {
		hit, err := a.sharedHit(f, key.Digest)
		if err != nil {
			return &exitError{code: ExitFailed, msg: fmt.Sprintf("--nats %s: the shared cache: %v", f.nats.conn.URL, err)}
		}
		shared = &hit
	}
	if f.json {
		out := struct {
			store.Explanation
			SharedHit *bool  `json:"shared_hit,omitempty"` // with --nats, on a local miss
			Policy    string `json:"policy"`
			Run       string `json:"run,omitempty"`   // with --index: the run the item is from
			Index     *int64 `json:"index,omitempty"` // with --index
			Item      any    `json:"item,omitempty"`  // with --index: the item recovered
		}{Explanation: x, SharedHit: shared, Policy: pol.Why}
		if f.byIndex {
			out.Run, out.Index, out.Item = run, &f.ofRun, item
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s\n", b)
		return nil
	}
	fmt.Fprint(a.stdout, x.String())
	switch {
	case shared != nil && *shared:
		fmt.Fprintf(a.stdout, "shared: hit: %s is in the shared cache on %s (a run with --cache-store nats takes it from there; this machine's store has no copy yet)\n", short(key.Digest), f.nats.conn.URL)
	case shared != nil:
		fmt.Fprintf(a.stdout, "shared: miss: %s is not in the shared cache on %s either\n", short(key.Digest), f.nats.conn.URL)
	}
	fmt.Fprintf(a.stdout, "stage %s: %s\n", s.Name, policyWords(pol))
	return nil
}

// itemOfLastRun recovers the input of item index of stage s in the last
// recorded run of the pipeline file abs, from the cache entry that run
// stored or reused for it (store.ItemOfRun).
func (a *app) itemOfLastRun(db *store.DB, abs string, s *spec.Stage, k *cache.Keyer, pol cache.Policy, index int64) (string, any, error) {
	ctx := context.Background()
	runs, err := db.Runs(ctx, store.RunFilter{File: abs, Limit: 1})
	if err != nil {
		return "", nil, &exitError{code: ExitFailed, msg: err.Error()}
	}
	if len(runs) == 0 {
		return "", nil, &exitError{code: ExitInvalid, msg: fmt.Sprintf("--index %d: no run of %s is recorded in %s: run it first, or give the item with --item JSON", index, abs, db.Path())}
	}
	run := runs[0]
	if len(run.Stages) > 0 && run.Stages[0].Out >= 0 && index >= run.Stages[0].Out {
		n := run.Stages[0].Out
		return "", nil, &exitError{code: ExitInvalid, msg: fmt.Sprintf("--index %d is out of range: the last run (%s) had %d items from its source %s (indexes 0 to %d)", index, run.ID, n, run.Stages[0].Name, n-1)}
	}
	if !pol.Store {
		return "", nil, &exitError{code: ExitInvalid, msg: fmt.Sprintf("--index %d: stage %s is not cached (%s), so no run keeps its items: give the item with --item JSON", index, s.Name, pol.Why)}
	}
	e, ok, err := db.ItemOfRun(ctx, run.ID, s.Name, index)
	if err != nil {
		return "", nil, &exitError{code: ExitFailed, msg: err.Error()}
	}
	if !ok {
		return "", nil, &exitError{code: ExitInvalid, msg: fmt.Sprintf("--index %d: the last run (%s, %s) stored no success of item %d in stage %s: it failed, was filtered, did not reach the stage, or was still in flight when the run was killed (only successes are kept, with their input); give the item with --item JSON", index, run.ID, run.Status, index, s.Name)}
	}
	if len(e.Parts.Item) == 0 {
		return "", nil, &exitError{code: ExitInvalid, msg: fmt.Sprintf("--index %d: item %d of stage %s is over 4 KiB and is kept as its digest only (entry %s): give it with --item JSON", index, index, s.Name, short(e.Key))}
	}
	item, err := steps.DecodeJSON(e.Parts.Item)
	if err != nil {
		return "", nil, &exitError{code: ExitFailed, msg: fmt.Sprintf("entry %s: its item does not decode: %v", short(e.Key), err)}
	}
	if k.ReadsIndex() {
		// The key of a stage reading index covers {item, index}.
		if m, ok := item.(map[string]any); ok {
			item = m["item"]
		}
	}
	return run.ID, item, nil
}

func short(key string) string {
	if len(key) > 12 {
		return key[:12]
	}
	return key
}

// cachedStage: a step stage that runs items one at a time (barriers see
// all their items at once and are not cached).
func (a *app) cachedStage(s *spec.Stage) bool {
	if s.Role != steps.RoleStep {
		return false
	}
	k, ok := a.reg.Lookup(s.Kind)
	return ok && !k.Barrier
}

func policyWords(p cache.Policy) string {
	switch {
	case !p.Store:
		return "not cached (" + p.Why + ")"
	case p.Read:
		return "results stored and reused on every run (" + p.Why + ")"
	default:
		return "results stored, reused by flow run --resume"
	}
}

type cacheListFlags struct {
	state stateFlags
	stage string
	key   string
	limit int
	json  bool
	all   bool
}

func (a *app) cacheLsCmd() *cobra.Command {
	var f cacheListFlags
	cmd := &cobra.Command{
		Use:   "ls [FILE]",
		Short: "List stored results, the most recent first",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.state.changed = cmd.Flags().Changed
			return a.listCache(optArg(args), f)
		},
	}
	addStateFlags(cmd, &f.state, false)
	cmd.Flags().StringVar(&f.stage, "stage", "", "only the entries of `STAGE`")
	cmd.Flags().IntVar(&f.limit, "limit", 50, "list at most `N` entries; 0 lists them all")
	cmd.Flags().BoolVar(&f.json, "json", false, "print the entries as a JSON array (with their key parts)")
	return cmd
}

func (a *app) cacheRmCmd() *cobra.Command {
	var f cacheListFlags
	cmd := &cobra.Command{
		Use:   "rm [FILE]",
		Short: "Remove stored results: of FILE's pipeline, a stage, a key, or --all",
		Example: `  flow cache rm pipeline.yaml --stage fetch
  flow cache rm --key 6f1c0e2a
  flow cache rm --all`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.state.changed = cmd.Flags().Changed
			return a.removeCache(optArg(args), f)
		},
	}
	addStateFlags(cmd, &f.state, false)
	cmd.Flags().StringVar(&f.stage, "stage", "", "only the entries of `STAGE`")
	cmd.Flags().StringVar(&f.key, "key", "", "only the entry whose key starts with `KEY`")
	cmd.Flags().BoolVar(&f.all, "all", false, "every entry of the database, of every pipeline")
	return cmd
}

func optArg(args []string) string {
	if len(args) == 1 {
		return args[0]
	}
	return ""
}

func (a *app) cacheFilter(file string, f cacheListFlags) (store.CacheFilter, error) {
	cf := store.CacheFilter{Stage: f.stage, Key: f.key, Limit: f.limit}
	if file != "" {
		abs, err := filepath.Abs(file)
		if err != nil {
			return cf, err
		}
		cf.Pipeline = abs
	}
	return cf, nil
}

func (a *app) listCache(file string, f cacheListFlags) error {
	db, path, err := a.openRuns(file, f.state)
	if errors.Is(err, store.ErrNotExist) {
		if f.json {
			fmt.Fprintln(a.stdout, "[]")
		} else {
			fmt.Fprintf(a.stderr, "flow: nothing cached: there is no %s yet\n", path)
		}
		return nil
	} else if err != nil {
		return err
	}
	defer db.Close()
	cf, err := a.cacheFilter(file, f)
	if err != nil {
		return err
	}
	l, err := db.List(context.Background(), cf)
	if err != nil {
		return &exitError{code: ExitFailed, msg: err.Error()}
	}
	if f.json {
		if l == nil {
			l = []store.Entry{}
		}
		b, err := json.MarshalIndent(l, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "%s\n", b)
		return nil
	}
	if len(l) == 0 {
		fmt.Fprintf(a.stderr, "flow: nothing cached in %s\n", db.Path())
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTAGE\tKIND\tSTORED\tEXPIRES\tHITS\tBYTES\tITEM")
	for _, e := range l {
		exp := "-"
		if e.Expires != nil {
			exp = e.Expires.Local().Format("2006-01-02 15:04")
		}
		item := string(e.Parts.Item)
		if item == "" {
			item = "(large)"
		} else if len(item) > 40 {
			item = item[:37] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", e.Key[:12], e.Stage, e.Kind, e.Created.Local().Format("2006-01-02 15:04:05"), exp, e.Hits, e.Size, item)
	}
	return tw.Flush()
}

func (a *app) removeCache(file string, f cacheListFlags) error {
	if file == "" && f.stage == "" && f.key == "" && !f.all {
		return &exitError{code: ExitInvalid, msg: "flow cache rm removes nothing without a choice: name the pipeline FILE, --stage, --key, or --all for every entry"}
	}
	if f.all && (file != "" || f.stage != "" || f.key != "") {
		return &exitError{code: ExitInvalid, msg: "--all removes every entry: give it alone, or drop it to remove what FILE, --stage and --key select"}
	}
	db, path, err := a.openRuns(file, f.state)
	if errors.Is(err, store.ErrNotExist) {
		fmt.Fprintf(a.stderr, "flow: nothing cached: there is no %s\n", path)
		return nil
	} else if err != nil {
		return err
	}
	defer db.Close()
	f.limit = 0
	cf, err := a.cacheFilter(file, f)
	if err != nil {
		return err
	}
	n, err := db.Remove(context.Background(), cf)
	if err != nil {
		return &exitError{code: ExitFailed, msg: err.Error()}
	}
	fmt.Fprintf(a.stdout, "removed %d cached results\n", n)
	return nil
}

type cacheGCFlags struct {
	state     stateFlags
	olderThan string
}

func (a *app) cacheGCCmd() *cobra.Command {
	var f cacheGCFlags
	cmd := &cobra.Command{
		Use:   "gc [FILE]",
		Short: "Remove expired results, and those neither stored nor used for --older-than",
		Long: `Gc removes the results past their cache.ttl and, with --older-than, those
neither stored nor reused for that long, of every pipeline of the database;
it also forgets the digests of files not looked at for as long.`,
		Example: `  flow cache gc --older-than 30d`,
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f.state.changed = cmd.Flags().Changed
			return a.gcCache(optArg(args), f)
		},
	}
	addStateFlags(cmd, &f.state, false)
	cmd.Flags().StringVar(&f.olderThan, "older-than", "", "also remove what was neither stored nor used for `AGE` (30d, 12h, 90m)")
	return cmd
}

// parseAge reads a Go duration or a number of days (30d).
func parseAge(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(d, 64)
		if err == nil && n >= 0 {
			return time.Duration(n * float64(24*time.Hour)), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("--older-than %q: write an age such as 30d, 12h or 90m", s)
	}
	return d, nil
}

func (a *app) gcCache(file string, f cacheGCFlags) error {
	var age time.Duration
	if f.olderThan != "" {
		var err error
		if age, err = parseAge(f.olderThan); err != nil {
			return &exitError{code: ExitInvalid, msg: err.Error()}
		}
	}
	db, path, err := a.openRuns(file, f.state)
	if errors.Is(err, store.ErrNotExist) {
		fmt.Fprintf(a.stderr, "flow: nothing cached: there is no %s\n", path)
		return nil
	} else if err != nil {
		return err
	}
	defer db.Close()
	n, err := db.GC(context.Background(), age)
	if err != nil {
		return &exitError{code: ExitFailed, msg: err.Error()}
	}
	fmt.Fprintf(a.stdout, "removed %d cached results\n", n)
	return nil
}
