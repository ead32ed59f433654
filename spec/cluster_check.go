package spec

import (
	"github.com/flowrun/flow/conf"
)

// ValidLabel reports whether l may name a worker label: 1 to 64 ASCII
// letters, digits, '-' or '_', starting with a letter or digit. A label
// becomes a token of NATS subjects and consumer names, where '.', '*', '>'
// and spaces mean something else. Written out rather than as a regexp: the
// {0,63} of one costs every flow process 0.9 ms to compile at start-up.
func ValidLabel(l string) bool {
	if len(l) == 0 || len(l) > 64 {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

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
