package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/steps"
)

var graphFormats = []string{"mermaid", "dot"}

func (a *app) graphCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "graph FILE",
		Short: "Draw a pipeline as a Mermaid or DOT graph",
		Long: `Graph validates the pipeline file and prints it as a graph: one node per stage
with its kind, mode, workers, rate, limits and policies (order, completion,
errors, timeouts, retries, filters), and an edge for each stream between
stages.

Mermaid renders in GitHub and GitLab Markdown (inside a mermaid code block);
DOT renders with Graphviz.`,
		Example: `  flow graph pipeline.yaml
  flow graph pipeline.yaml --format dot | dot -Tsvg > pipeline.svg`,
		Args:              oneFile,
		ValidArgsFunction: yamlFiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !contains(graphFormats, format) {
				return &exitError{code: ExitInvalid, msg: fmt.Sprintf("--format %q: use mermaid or dot", format)}
			}
			p, err := a.load(args[0], nil)
			if err != nil {
				printDiags(a.stderr, args[0], err, secretsOf(p))
				return exitCode(ExitInvalid)
			}
			if format == "dot" {
				writeDOT(a.stdout, p)
			} else {
				writeMermaid(a.stdout, p)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "mermaid", "graph language: mermaid or dot")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions(graphFormats, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// nodeLines describes a stage, one fact per line: what it is, how it runs,
// and every policy that is not the default.
func nodeLines(p *spec.Pipeline, s *spec.Stage) []string {
	lines := []string{s.Name, fmt.Sprintf("%s: %s", s.Role, s.Kind)}
	if s.Role == steps.RoleStep {
		// Unset is auto too; the count it resolves to depends on the
		// machine that runs the pipeline, not the one that draws it.
		workers := "auto"
		if s.Workers.N > 0 && !s.Workers.Auto {
			workers = fmt.Sprint(s.Workers.N)
		}
		lines = append(lines, fmt.Sprintf("%s x %s", s.Mode, workers))
	}
	if s.Rate != nil {
		r := "rate " + s.Rate.String()
		if s.Burst > 0 {
			r += fmt.Sprintf(" burst %d", s.Burst)
		}
		lines = append(lines, r)
	}
	for _, name := range s.Limit {
		l := "limit " + name
		if lim := p.Limits[name]; lim != nil {
			var parts []string
			if lim.Rate != nil {
				parts = append(parts, lim.Rate.String())
			}
			if lim.Concurrency > 0 {
				parts = append(parts, fmt.Sprintf("%d at once", lim.Concurrency))
			}
			if lim.Key != nil {
				parts = append(parts, "per "+lim.Key.Source())
			}
			if len(parts) > 0 {
				l += " (" + strings.Join(parts, ", ") + ")"
			}
		}
		lines = append(lines, l)
	}
	if s.Role != steps.RoleStep {
		if s.When != nil {
			lines = append(lines, "when "+s.When.Source())
		}
		return lines
	}
	order := "order " + string(s.Order)
	if s.Order == "key" && s.Key != nil {
		order += " by " + s.Key.Source()
	}
	lines = append(lines, order)
	switch {
	case s.Complete.First == 1:
		lines = append(lines, "complete first")
	case s.Complete.First > 1:
		lines = append(lines, fmt.Sprintf("complete first %d", s.Complete.First))
	}
	onErr := "on_error " + string(s.OnError)
	if s.MaxErrors > 0 {
		onErr += fmt.Sprintf(" (max %d)", s.MaxErrors)
	}
	lines = append(lines, onErr)
	if s.Timeout > 0 {
		lines = append(lines, "timeout "+fmtDuration(s.Timeout))
	}
	if s.Deadline > 0 {
		lines = append(lines, "deadline "+fmtDuration(s.Deadline))
	}
	if r := s.Retry; r != nil {
		lines = append(lines, fmt.Sprintf("retry %d attempts, backoff %s", r.Attempts, fmtDuration(r.Backoff)))
	}
	if s.When != nil {
		lines = append(lines, "when "+s.When.Source())
	}
	if s.MaxTasksPerChild > 0 {
		lines = append(lines, fmt.Sprintf("max_tasks_per_child %d", s.MaxTasksPerChild))
	}
	if s.Memory > 0 {
		lines = append(lines, fmt.Sprintf("memory %d bytes", int64(s.Memory)))
	}
	return lines
}

// fmtDuration drops the zero units Go prints ("1m0s" -> "1m").
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func writeMermaid(w io.Writer, p *spec.Pipeline) {
	fmt.Fprintln(w, "flowchart LR")
	if p.Name != "" {
		fmt.Fprintf(w, "  %%%% pipeline %s\n", p.Name)
	}
	for i, s := range p.Stages {
		lines := nodeLines(p, s)
		for j, l := range lines {
			lines[j] = mermaidEscape(l)
		}
		lines[0] = "<b>" + lines[0] + "</b>"
		open, close := "[", "]"
		switch s.Role {
		case steps.RoleSource:
			open, close = "([", "])"
		case steps.RoleSink:
			open, close = "[(", ")]"
		}
		fmt.Fprintf(w, "  s%d%s\"%s\"%s\n", i, open, strings.Join(lines, "<br/>"), close)
	}
	for i := 1; i < len(p.Stages); i++ {
		fmt.Fprintf(w, "  s%d --> s%d\n", i-1, i)
	}
}

// mermaidEscape keeps quotes and markup of expressions from ending the label.
func mermaidEscape(s string) string {
	r := strings.NewReplacer(`"`, "#quot;", "<", "#lt;", ">", "#gt;")
	return r.Replace(s)
}

func writeDOT(w io.Writer, p *spec.Pipeline) {
	name := p.Name
	if name == "" {
		name = "pipeline"
	}
	fmt.Fprintf(w, "digraph %s {\n", dotQuote(name))
	fmt.Fprintln(w, "  rankdir=LR;")
	fmt.Fprintln(w, "  node [shape=box, fontname=\"Helvetica\"];")
	for i, s := range p.Stages {
		lines := nodeLines(p, s)
		for j, l := range lines {
			lines[j] = dotEscape(l)
		}
		shape := "box"
		switch s.Role {
		case steps.RoleSource:
			shape = "invhouse"
		case steps.RoleSink:
			shape = "cylinder"
		}
		fmt.Fprintf(w, "  s%d [shape=%s, label=\"%s\\l\"];\n", i, shape, strings.Join(lines, "\\l"))
	}
	for i := 1; i < len(p.Stages); i++ {
		fmt.Fprintf(w, "  s%d -> s%d;\n", i-1, i)
	}
	fmt.Fprintln(w, "}")
}

func dotEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func dotQuote(s string) string { return `"` + dotEscape(s) + `"` }
