package flowtest

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
)

// UnmarshalNode reads `snapshot: true`, `false` or a path.
func (s *Snapshot) UnmarshalNode(n *yaml.Node, _ *conf.Context) error {
	s.Node = n
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("snapshot must be true or a file path, got %s", n.ShortTag())
	}
	if n.Tag == "!!bool" {
		return n.Decode(&s.On)
	}
	if n.Tag != "!!str" || n.Value == "" {
		return fmt.Errorf("snapshot must be true or a file path, got %q", n.Value)
	}
	s.Path = n.Value
	return nil
}

// JSONSchema is what editors check `snapshot:` against.
func (*Snapshot) JSONSchema() map[string]any {
	return map[string]any{"type": []any{"boolean", "string"}}
}
