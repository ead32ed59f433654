package conf

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// MaxExpandedNodes bounds the size of a YAML document once its aliases are
// expanded. Decoding, template compilation and validation all walk aliases
// as if the anchored value were written out again, so a few lines of nested
// aliases ("billion laughs") would otherwise cost exponential time.
const MaxExpandedNodes = 100_000

// CheckAliases refuses documents that every walker of the node tree would
// choke on: an alias that refers to a value containing itself (endless
// recursion) and aliases that expand to more than MaxExpandedNodes nodes.
// Run it on every document read from a user before decoding it.
func CheckAliases(n *yaml.Node) error {
	c := aliasCheck{size: map[*yaml.Node]int{}, open: map[*yaml.Node]bool{}}
	if _, err := c.walk(n); err != nil {
		return err
	}
	return nil
}

type aliasCheck struct {
	size map[*yaml.Node]int // expanded size of nodes already walked
	open map[*yaml.Node]bool
}

func (c *aliasCheck) walk(n *yaml.Node) (int, error) {
	if n == nil {
		return 0, nil
	}
	if s, ok := c.size[n]; ok {
		return s, nil
	}
	if c.open[n] {
		return 0, Errorf(NodePos(n), "this value contains an alias to itself (an anchor '&%s' used inside its own value), which would never end; write the value out instead", n.Anchor)
	}
	c.open[n] = true
	defer delete(c.open, n)
	total := 1
	kids := n.Content
	if n.Kind == yaml.AliasNode {
		kids = []*yaml.Node{n.Alias}
	}
	for _, k := range kids {
		s, err := c.walk(k)
		if err != nil {
			return 0, err
		}
		total += s
		if total > MaxExpandedNodes {
			return 0, Errorf(NodePos(n), "%s", fmt.Sprintf("aliases expand this document to more than %d values; write it with fewer nested aliases", MaxExpandedNodes))
		}
	}
	c.size[n] = total
	return total, nil
}
