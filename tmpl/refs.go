package tmpl

import (
	"sort"

	"github.com/expr-lang/expr/ast"
)

// Refs reports what the template's expressions read: the names of the
// variables (vars.NAME), sorted and without repeats, and whether any reads
// item or index. A template that reads neither item nor index has one value
// for the whole run, which validation can compute before anything runs.
func (t *T) Refs() (vars []string, perItem bool) {
	seen := map[string]bool{}
	t.walk(func(s *T) {
		for _, lp := range s.progs {
			for _, r := range varRefs(lp.prog) {
				if !seen[r.name] {
					seen[r.name] = true
					vars = append(vars, r.name)
				}
			}
			if root := lp.prog.Node(); root != nil {
				v := &identVisitor{names: map[string]bool{"item": true, "index": true}}
				ast.Walk(&root, v)
				perItem = perItem || len(v.refs) > 0
			}
		}
	})
	sort.Strings(vars)
	return vars, perItem
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
