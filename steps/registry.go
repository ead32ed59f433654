package steps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
)

// Kind describes one registered kind of source, step, barrier or sink.
//
// The lifecycle of a kind's value, the same for every role:
//
//  1. decode: the stage's options node is decoded strictly into a new *C
//     (unknown keys are errors, every problem carries its position), and
//     the `default:` tags fill what the file left out;
//  2. check: C's Validate method, if any, runs; `flow validate` stops here
//     (Kind.Check) and builds nothing;
//  3. build: the constructor given to RegisterSource, RegisterStep,
//     RegisterBarrier or RegisterSink makes the value from *C and the Env;
//  4. run: the engine (or a worker process) calls it, concurrently for
//     steps, from one goroutine for sources, barriers and sinks;
//  5. close: Built.Close, exactly once, whatever happened: after the run,
//     when a later stage failed to build, and when the constructor itself
//     failed but returned a value (a half-built value releases what it
//     took). A Sink's Close also learns whether the run failed, so that it
//     keeps the old output.
type Kind struct {
	Name    string
	Role    Role
	Summary string // one line, for `flow steps`
	Doc     string // longer Markdown, for docs and hover text
	Result  string // what one result looks like (steps), for docs
	// Example is a YAML snippet of the `with:` block (or of the source/sink value).
	Example string
	// Config is the options struct type; it drives decoding and the schema.
	Config reflect.Type
	// Barrier marks steps that see all their input before emitting (sort,
	// top); RegisterBarrier sets it, so it cannot disagree with what the
	// kind builds.
	Barrier bool

	build func(n *yaml.Node, c *conf.Context, env *Env) (Built, error)
}

// Built is a kind's value, with the one field of its role set: Source,
// Step (Barrier too for barrier kinds' stages, which the engine runs in
// one place), or Sink.
type Built struct {
	Source  Source
	Step    Step
	Barrier Barrier
	Sink    Sink
}

// Close releases what a built source, step or barrier holds (those that
// implement io.Closer). A sink is closed by the engine with the run's
// outcome instead (Sink.Close).
func (b Built) Close() error {
	var errs []error
	for _, v := range []any{b.Source, b.Step, b.Barrier} {
		if c, ok := v.(io.Closer); ok && v != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// Value is the built value as one interface, for tests and messages.
func (b Built) Value() any {
	switch {
	case b.Source != nil:
		return b.Source
	case b.Barrier != nil:
		return b.Barrier
	case b.Step != nil:
		return b.Step
	case b.Sink != nil:
		return b.Sink
	}
	return nil
}

// Check decodes and validates options without building anything.
func (k *Kind) Check(n *yaml.Node, c *conf.Context) conf.Diags {
	cfg := reflect.New(k.Config)
	return conf.Decode(n, cfg.Interface(), c)
}

// Build decodes options and constructs the kind's value (steps 1 to 3 of
// the lifecycle). On error nothing is left to close.
func (k *Kind) Build(n *yaml.Node, c *conf.Context, env *Env) (Built, error) {
	return k.build(n, c, env)
}

// Registry holds kinds by name. The zero value is not usable; use NewRegistry.
type Registry struct {
	mu    sync.RWMutex
	kinds map[string]*Kind
}

func NewRegistry() *Registry { return &Registry{kinds: map[string]*Kind{}} }

// RegisterSource adds a source kind whose options decode strictly into *C.
// Registering a name twice panics: it is a wiring bug, never user input.
func RegisterSource[C any, S Source](r *Registry, k Kind, newFn func(cfg *C, env *Env) (S, error)) {
	register(r, k, RoleSource, false, newFn, func(v S) Built { return Built{Source: v} })
}

// RegisterStep adds a step kind: one item in, one result or an error out.
func RegisterStep[C any, S Step](r *Registry, k Kind, newFn func(cfg *C, env *Env) (S, error)) {
	register(r, k, RoleStep, false, newFn, func(v S) Built { return Built{Step: v} })
}

// RegisterBarrier adds a step kind that sees all its input before it emits
// (sort, top).
func RegisterBarrier[C any, B Barrier](r *Registry, k Kind, newFn func(cfg *C, env *Env) (B, error)) {
	register(r, k, RoleStep, true, newFn, func(v B) Built { return Built{Barrier: v} })
}

// RegisterSink adds a sink kind.
func RegisterSink[C any, S Sink](r *Registry, k Kind, newFn func(cfg *C, env *Env) (S, error)) {
	register(r, k, RoleSink, false, newFn, func(v S) Built { return Built{Sink: v} })
}

func register[C, T any](r *Registry, k Kind, role Role, barrier bool, newFn func(*C, *Env) (T, error), wrap func(T) Built) {
	if k.Role != "" && k.Role != role {
		panic(fmt.Sprintf("steps: kind %q says role %s but is registered as a %s", k.Name, k.Role, role))
	}
	k.Role, k.Barrier = role, barrier
	k.Config = reflect.TypeFor[C]()
	k.build = func(n *yaml.Node, c *conf.Context, env *Env) (Built, error) {
		cfg := new(C)
		if ds := conf.Decode(n, cfg, c); len(ds) > 0 {
			return Built{}, ds
		}
		v, err := newFn(cfg, env)
		b := Built{}
		if !isNil(v) {
			b = wrap(v)
		}
		if err != nil {
			_ = b.Close()
			if b.Sink != nil {
				_ = b.Sink.Close(context.Background(), err) // a half-built sink writes nothing
			}
			return Built{}, err
		}
		if b.Value() == nil {
			return Built{}, fmt.Errorf("steps: kind %q built nothing", k.Name)
		}
		return b, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.kinds[k.Name]; dup {
		panic(fmt.Sprintf("steps: kind %q registered twice", k.Name))
	}
	r.kinds[k.Name] = &k
}

// isNil tells a typed nil (a constructor returning (*T)(nil), err) from a
// value, so that a failed constructor's nothing is not closed.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Interface, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

// Lookup returns the kind registered under name.
func (r *Registry) Lookup(name string) (*Kind, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.kinds[name]
	return k, ok
}

// Kinds lists every kind, sources first, then steps, then sinks, each by name.
func (r *Registry) Kinds() []*Kind {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Kind, 0, len(r.kinds))
	for _, k := range r.kinds {
		out = append(out, k)
	}
	order := map[Role]int{RoleSource: 0, RoleStep: 1, RoleSink: 2}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Role != out[j].Role {
			return order[out[i].Role] < order[out[j].Role]
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Names lists the names of the kinds with the given role.
func (r *Registry) Names(role Role) []string {
	var out []string
	for _, k := range r.Kinds() {
		if k.Role == role {
			out = append(out, k.Name)
		}
	}
	return out
}

// CheckKind validates the options of a kind; it makes *Registry a spec.Catalog.
func (r *Registry) CheckKind(role Role, name string, options *yaml.Node, c *conf.Context) (conf.Diags, bool) {
	k, ok := r.Lookup(name)
	if !ok || k.Role != role {
		return nil, false
	}
	return k.Check(options, c), true
}

// KindNames lists the names of the kinds of a role.
func (r *Registry) KindNames(role Role) []string { return r.Names(role) }
