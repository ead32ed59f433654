package tmpl

import (
	"sort"

	"github.com/expr-lang/expr/ast"
)

// VarNames lists the variables the template's expressions read
// (vars.NAME), sorted and without repeats, so that a problem with a value
// computed from them can name the overrides it came from.
func (t *T) VarNames() []string {
	var vars []string
	seen := map[string]bool{}
	t.walk(func(s *T) {
		for _, lp := range s.progs {
			for _, r := range varRefs(lp.prog) {
				if !seen[r.name] {
					seen[r.name] = true
					vars = append(vars, r.name)
				}
			}
		}
	})
	sort.Strings(vars)
	return vars
}

// Calls reports whether the template calls the function called name.
func (t *T) Calls(name string) bool {
	found := false
	t.walk(func(s *T) {
		for _, lp := range s.progs {
			if root := lp.prog.Node(); root != nil {
				v := &callVisitor{name: name}
				ast.Walk(&root, v)
				found = found || v.found
			}
		}
	})
	return found
}

type callVisitor struct {
	name  string
	found bool
}

func (v *callVisitor) Visit(n *ast.Node) {
	if c, ok := (*n).(*ast.CallNode); ok {
		if id, ok := c.Callee.(*ast.IdentifierNode); ok && id.Value == v.name {
			v.found = true
		}
	}
}
