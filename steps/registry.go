package steps

import (
	"fmt"
	"reflect"
	"sort"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
)

// Kind describes one registered kind of source, step or sink.
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
	// top): progress follows the stage before them, where the work is done.
	Barrier bool

	build func(n *yaml.Node, c *conf.Context, env *Env) (any, error)
}

// Check decodes and validates options without building anything.
func (k *Kind) Check(n *yaml.Node, c *conf.Context) conf.Diags {
	cfg := reflect.New(k.Config)
	return conf.Decode(n, cfg.Interface(), c)
}

// Build decodes options and constructs the kind's value: a Source, a Step
// (possibly also a Barrier) or a Sink, according to Role.
func (k *Kind) Build(n *yaml.Node, c *conf.Context, env *Env) (any, error) {
	return k.build(n, c, env)
}

// Registry holds kinds by name. The zero value is not usable; use NewRegistry.
type Registry struct {
	mu    sync.RWMutex
	kinds map[string]*Kind
}

func NewRegistry() *Registry { return &Registry{kinds: map[string]*Kind{}} }

// Register adds a kind whose options decode strictly into *C; C's Validate
// method, if any, runs after decoding. newFn builds the Source, Step or Sink.
// Registering a name twice panics: it is a wiring bug, never user input.
func Register[C any](r *Registry, k Kind, newFn func(cfg *C, env *Env) (any, error)) {
	k.Config = reflect.TypeFor[C]()
	k.build = func(n *yaml.Node, c *conf.Context, env *Env) (any, error) {
		cfg := new(C)
		if ds := conf.Decode(n, cfg, c); len(ds) > 0 {
			return nil, ds
		}
		v, err := newFn(cfg, env)
		if err != nil {
			return nil, err
		}
		if err := checkRole(k, v); err != nil {
			return nil, err
		}
		return v, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.kinds[k.Name]; dup {
		panic(fmt.Sprintf("steps: kind %q registered twice", k.Name))
	}
	r.kinds[k.Name] = &k
}

func checkRole(k Kind, v any) error {
	ok := false
	switch k.Role {
	case RoleSource:
		_, ok = v.(Source)
	case RoleStep:
		_, ok = v.(Step)
		if !ok {
			_, ok = v.(Barrier)
		}
	case RoleSink:
		_, ok = v.(Sink)
	}
	if !ok {
		return fmt.Errorf("steps: kind %q built %T, which is not a %s", k.Name, v, k.Role)
	}
	return nil
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
func (r *Registry) CheckKind(role, name string, options *yaml.Node, c *conf.Context) (conf.Diags, bool) {
	k, ok := r.Lookup(name)
	if !ok || string(k.Role) != role {
		return nil, false
	}
	return k.Check(options, c), true
}

// KindNames lists the names of the kinds of a role.
func (r *Registry) KindNames(role string) []string { return r.Names(Role(role)) }
