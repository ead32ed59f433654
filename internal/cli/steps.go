package cli

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/internal/docgen"
	"github.com/flowrun/flow/steps"
)

func (a *app) stepsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "steps [KIND]",
		Short: "List the source, step and sink kinds with their options",
		Long: `Steps lists every kind a pipeline can use: sources (the first stage), steps
(the middle stages, options under with:) and sinks (the last stage), each with
its summary and options: key, type, default and description. This is the same
registry that drives validation and schema.json.

With a KIND, steps shows its full documentation, what one result looks like,
and an example.`,
		Example: `  flow steps
  flow steps fetch
  flow steps range`,
		Args: cobra.MaximumNArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []string
			for _, k := range a.reg.Kinds() {
				names = append(names, k.Name+"\t"+string(k.Role)+": "+k.Summary)
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				k, ok := a.reg.Lookup(args[0])
				if !ok {
					var names []string
					for _, k := range a.reg.Kinds() {
						names = append(names, k.Name)
					}
					return &exitError{code: ExitInvalid, msg: fmt.Sprintf("no kind %q%s; 'flow steps' lists them all", args[0], conf.Suggest(args[0], names))}
				}
				describeKind(a.stdout, k)
				return nil
			}
			listKinds(a.stdout, a.reg.Kinds())
			return nil
		},
	}
}

var roleTitles = map[steps.Role]string{
	steps.RoleSource: "Sources: the first stage, written  source: {KIND: OPTIONS}",
	steps.RoleStep:   "Steps: the middle stages, written  step: KIND  with: OPTIONS",
	steps.RoleSink:   "Sinks: the last stage, written  sink: {KIND: OPTIONS}",
}

func listKinds(w io.Writer, kinds []*steps.Kind) {
	if len(kinds) == 0 {
		fmt.Fprintln(w, "No kinds are registered in this build.")
		return
	}
	var role steps.Role
	for _, k := range kinds {
		if k.Role != role {
			if role != "" {
				fmt.Fprintln(w)
			}
			role = k.Role
			fmt.Fprintf(w, "%s\n\n", roleTitles[role])
		}
		fmt.Fprintf(w, "%s - %s\n", k.Name, k.Summary)
		writeOptions(w, k)
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "Run 'flow steps KIND' for a kind's full documentation, result and example.")
}

func describeKind(w io.Writer, k *steps.Kind) {
	fmt.Fprintf(w, "%s (%s) - %s\n", k.Name, k.Role, k.Summary)
	if doc := strings.TrimSpace(k.Doc); doc != "" {
		fmt.Fprintf(w, "\n%s\n", doc)
	}
	fmt.Fprintln(w, "\nOptions:")
	writeOptions(w, k)
	if res := strings.TrimSpace(k.Result); res != "" {
		fmt.Fprintf(w, "\nResult:\n%s\n", indent(res, "  "))
	}
	if ex := strings.TrimSpace(k.Example); ex != "" {
		fmt.Fprintf(w, "\nExample:\n%s\n", indent(ex, "  "))
	}
}

// option is one row of the options table; nested structs are flattened into
// dotted keys so every key a file may hold is listed.
type option struct {
	key, typ, def, desc string
}

func writeOptions(w io.Writer, k *steps.Kind) {
	opts := options(k.Config, "")
	if len(opts) == 0 {
		opts = valueForms(k.Config)
	}
	if len(opts) == 0 {
		fmt.Fprintln(w, "  (no options)")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for _, o := range opts {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", o.key, o.typ, o.def, o.desc)
	}
	tw.Flush()
}

func options(t reflect.Type, prefix string) []option {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct || conf.DecodesItself(t) {
		return nil
	}
	var out []option
	for _, f := range conf.Fields(t) {
		o := option{key: prefix + f.Key, typ: docgen.TypeName(f.Type), def: "-", desc: f.Desc}
		if len(f.Enum) > 0 {
			o.typ = strings.Join(f.Enum, "|")
		}
		switch {
		case f.Required:
			o.def = "required"
		case f.Default != "":
			o.def = "default " + f.Default
		}
		out = append(out, o)
		inner := f.Type
		suffix := "."
		for inner.Kind() == reflect.Pointer || inner.Kind() == reflect.Slice {
			if inner.Kind() == reflect.Slice {
				suffix = "[]."
			}
			inner = inner.Elem()
		}
		out = append(out, options(inner, prefix+f.Key+suffix)...)
	}
	return out
}

// valueForms describes the options of a kind written as one value (items:
// [a, b]), from the JSON Schema its type gives of itself.
func valueForms(t reflect.Type) []option {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || !reflect.PointerTo(t).Implements(schemaerType) {
		return nil
	}
	sch := reflect.New(t).Interface().(conf.Schemaer).JSONSchema()
	forms := []map[string]any{sch}
	if alts, ok := sch["oneOf"].([]any); ok {
		forms = nil
		for _, a := range alts {
			if m, ok := a.(map[string]any); ok {
				forms = append(forms, m)
			}
		}
	}
	var out []option
	for _, f := range forms {
		typ, _ := f["type"].(string)
		desc, _ := f["description"].(string)
		if typ == "" {
			typ = "any"
		}
		out = append(out, option{key: "(value)", typ: typ, def: "-", desc: desc})
	}
	return out
}

var (
	schemaerType = reflect.TypeFor[conf.Schemaer]()
)

func indent(s, prefix string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}
