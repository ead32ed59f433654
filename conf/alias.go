package conf

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// MaxExpandedNodes bounds what aliases add to a YAML document: the values
// they repeat, beyond those written in the file. Decoding, template
// compilation and validation all walk aliases as if the anchored value were
// written out again, so a few lines of nested aliases ("billion laughs")
// would otherwise cost exponential time. A document without aliases is not
// bounded here, whatever its size: its cost is that of reading the file.
const MaxExpandedNodes = 100_000

// CheckAliases refuses documents that every walker of the node tree would
// choke on: an alias that refers to a value containing itself (endless
// recursion) and aliases that add more than MaxExpandedNodes nodes to the
// document as written. Run it on every document read from a user before
// decoding it.
func CheckAliases(n *yaml.Node) error {
	c := aliasCheck{size: map[*yaml.Node]int{}, open: map[*yaml.Node]bool{}}
	c.limit = written(n, map[*yaml.Node]bool{}) + MaxExpandedNodes
	if _, err := c.walk(n); err != nil {
		return err
	}
	return nil
}

// written counts the nodes of a document as written, an alias counting as
// one.
func written(n *yaml.Node, seen map[*yaml.Node]bool) int {
	if n == nil || seen[n] {
		return 0
	}
	seen[n] = true
	total := 1
	for _, k := range n.Content {
		total += written(k, seen)
	}
	return total
}

type aliasCheck struct {
	size  map[*yaml.Node]int // expanded size of nodes already walked
	open  map[*yaml.Node]bool
	limit int // the written size plus MaxExpandedNodes
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
		if total > c.limit {
			return 0, Errorf(NodePos(n), "%s", fmt.Sprintf("aliases add more than %d values to this document (each alias repeats its anchored value); write it with fewer nested aliases", MaxExpandedNodes))
		}
	}
	c.size[n] = total
	return total, nil
}
