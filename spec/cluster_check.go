package spec

import (
	"regexp"

	"github.com/flowrun/flow/conf"
)

// labelSyntax is what a worker label may be: it becomes a token of NATS
// subjects and consumer names, where '.', '*', '>' and spaces mean
// something else.
var labelSyntax = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// ValidLabel reports whether l may name a worker label.
func ValidLabel(l string) bool { return labelSyntax.MatchString(l) }

// checkClusterFields checks what only a cluster stage may say.
func checkClusterFields(s *Stage) conf.Diags {
	var ds conf.Diags
	if s.Mode != ModeCluster {
		for _, k := range []string{"labels", "transfer"} {
			if conf.Lookup(s.Node, k) != nil {
				ds.Add(conf.KeyPos(s.Node, k), "%s: applies only with mode: cluster (workers on other machines); add mode: cluster to %s or remove %s:", k, stageLabel(s), k)
			}
		}
	}
	ln := conf.Lookup(s.Node, "labels")
	for i, l := range s.Labels {
		if ValidLabel(l) {
			continue
		}
		pos := conf.ValuePos(s.Node, "labels")
		if ln != nil && len(ln.Content) > i {
			pos = conf.NodePos(ln.Content[i])
		}
		ds.Add(pos, "label %q: a label is 1 to 64 letters, digits, '-' or '_', starting with a letter or digit (as given to flow worker --label)", l)
	}
	return ds
}
