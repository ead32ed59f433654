package spec

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
)

// UnmarshalNode reads "10/s", "600/m", "1/h" (also "0.5/s", "10/2s").
func (r *Rate) UnmarshalNode(n *yaml.Node, _ *conf.Context) error {
	rate, err := ParseRate(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return conf.Errorf(conf.NodePos(n), "invalid rate %q: write it as N/s, N/m or N/h, e.g. \"10/s\" or \"600/m\"", n.Value)
	}
	*r = rate
	return nil
}

// ParseRate parses "N/unit" where unit is s, m, h or a Go duration.
func ParseRate(s string) (Rate, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok {
		return Rate{}, fmt.Errorf("missing \"/\"")
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n <= 0 {
		return Rate{}, fmt.Errorf("bad count")
	}
	var per time.Duration
	switch u := strings.TrimSpace(unit); u {
	case "s", "sec", "second":
		per = time.Second
	case "m", "min", "minute":
		per = time.Minute
	case "h", "hour":
		per = time.Hour
	default:
		per, err = time.ParseDuration(u)
		if err != nil || per <= 0 {
			return Rate{}, fmt.Errorf("bad unit")
		}
	}
	return Rate{N: n, Per: per, Src: s}, nil
}

func (r Rate) String() string { return r.Src }

// UnmarshalNode reads a positive number or "auto".
func (w *Workers) UnmarshalNode(n *yaml.Node, _ *conf.Context) error {
	if n.Kind == yaml.ScalarNode && n.Value == "auto" {
		*w = Workers{Auto: true, Set: true}
		return nil
	}
	i, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || err != nil || i < 1 {
		return conf.Errorf(conf.NodePos(n), "workers must be a positive whole number or \"auto\", got %q", n.Value)
	}
	*w = Workers{N: i, Set: true}
	return nil
}

// UnmarshalNode reads "all", "first" or {first: N}.
func (c *Complete) UnmarshalNode(n *yaml.Node, _ *conf.Context) error {
	switch {
	case n.Kind == yaml.ScalarNode && n.Value == "all":
		*c = Complete{}
		return nil
	case n.Kind == yaml.ScalarNode && n.Value == "first":
		*c = Complete{First: 1}
		return nil
	case n.Kind == yaml.MappingNode:
		var ds conf.Diags
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value != "first" {
				ds.Add(conf.NodePos(k), "unknown key %q in complete%s; write {first: N}", k.Value, conf.Suggest(k.Value, []string{"first"}))
				continue
			}
			x, err := strconv.Atoi(v.Value)
			if v.Tag != "!!int" || err != nil || x < 1 {
				ds.Add(conf.NodePos(v), "complete.first must be a positive whole number, got %q", v.Value)
				continue
			}
			c.First = x
		}
		if len(ds) == 0 && c.First == 0 {
			ds.Add(conf.NodePos(n), "complete needs first: N")
		}
		return ds.Err()
	}
	return conf.Errorf(conf.NodePos(n), "complete must be \"all\", \"first\" or {first: N}, got %q%s", n.Value, conf.Suggest(n.Value, []string{"all", "first"}))
}

// UnmarshalNode reads a one-key mapping {kind: options} or a bare kind name.
func (k *KindRef) UnmarshalNode(n *yaml.Node, _ *conf.Context) error {
	k.Node = n
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!str" && n.Value != "" {
			k.Kind = n.Value
			return nil
		}
	case yaml.MappingNode:
		if len(n.Content) == 2 {
			k.Kind = n.Content[0].Value
			k.Options = n.Content[1]
			return nil
		}
		if len(n.Content) > 2 {
			return conf.Errorf(conf.NodePos(n.Content[2]), "name exactly one kind here, e.g. {range: {from: 1, to: 10}}; found a second key %q", n.Content[2].Value)
		}
	}
	return conf.Errorf(conf.NodePos(n), "expected a kind name or a mapping {KIND: OPTIONS}, e.g. {items: [a, b]}")
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1000, "kb": 1000, "m": 1000 * 1000, "mb": 1000 * 1000, "g": 1000 * 1000 * 1000, "gb": 1000 * 1000 * 1000,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40, "tb": 1000 * 1000 * 1000 * 1000,
}

// UnmarshalNode reads "512MiB", "1GB", "64KiB" or a plain byte count.
func (b *ByteSize) UnmarshalNode(n *yaml.Node, _ *conf.Context) error {
	v, err := ParseByteSize(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return conf.Errorf(conf.NodePos(n), "invalid size %q: write it like \"512MiB\", \"1GB\" or \"65536\"", n.Value)
	}
	*b = ByteSize(v)
	return nil
}

// ParseByteSize parses sizes like "512MiB", "1.5GB", "1024".
func ParseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := len(s)
	for i > 0 && (s[i-1] < '0' || s[i-1] > '9') {
		i--
	}
	num, unit := strings.TrimSpace(s[:i]), strings.ToLower(strings.TrimSpace(s[i:]))
	mult, ok := sizeUnits[unit]
	f, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || f < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(f * float64(mult)), nil
}

// UnmarshalNode reads the vars mapping. A value that is a mapping whose keys
// are all among default/secret/description is the long form.
func (v *Vars) UnmarshalNode(n *yaml.Node, _ *conf.Context) error {
	if n.Kind != yaml.MappingNode {
		return conf.Errorf(conf.NodePos(n), "vars must be a mapping of NAME: default value")
	}
	var ds conf.Diags
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if !validName(k.Value) {
			ds.Add(conf.NodePos(k), "variable name %q must start with a letter and hold only letters, digits and _", k.Value)
			continue
		}
		if seen[k.Value] {
			ds.Add(conf.NodePos(k), "variable %q is declared twice", k.Value)
			continue
		}
		seen[k.Value] = true
		x := &Var{Name: k.Value, Node: val}
		if isLongVar(val) {
			var def *yaml.Node
			for j := 0; j+1 < len(val.Content); j += 2 {
				vk, vv := val.Content[j], val.Content[j+1]
				switch vk.Value {
				case "default":
					def = vv
				case "secret":
					if vv.Tag != "!!bool" {
						ds.Add(conf.NodePos(vv), "secret must be true or false")
					}
					x.Secret = vv.Value == "true"
				case "description":
					x.Description = vv.Value
				}
			}
			switch {
			case x.Secret:
				s, err := secretText(x.Name, def)
				if err != nil {
					ds.AddErr(conf.NodePos(def), err)
				}
				x.Value = s
			case def != nil:
				var d any
				if err := def.Decode(&d); err != nil {
					ds.Add(conf.NodePos(def), "%v", err)
				}
				x.Value = conf.Normalize(d)
			}
		} else {
			var d any
			if err := val.Decode(&d); err != nil {
				ds.Add(conf.NodePos(val), "%v", err)
			}
			x.Value = conf.Normalize(d)
		}
		v.List = append(v.List, x)
	}
	return ds.Err()
}

// secretText is the value of a secret variable: the text of its default
// exactly as written. A secret is only ever hidden by its text, so reading
// 00123456 as the number 42798, or 0x1f as 31, would both change the
// credential sent and leave the text that was written unredacted. A list or
// mapping is refused: its parts could not all be hidden wherever they go.
// An absent or null default is the empty string (the value then comes from
// FLOW_VAR_NAME or --set).
func secretText(name string, def *yaml.Node) (string, error) {
	if def == nil {
		return "", nil
	}
	n := def
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("secret variable %q must hold one string, not a %s: declare one secret variable per value (e.g. %s_user and %s_key)",
			name, kindName(n), name, name)
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return n.Value, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "non-scalar value"
}

func isLongVar(n *yaml.Node) bool {
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		return false
	}
	for i := 0; i < len(n.Content); i += 2 {
		switch n.Content[i].Value {
		case "default", "secret", "description":
		default:
			return false
		}
	}
	return true
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		letter := r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !letter && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// Lookup returns the variable called name.
func (v Vars) Lookup(name string) *Var {
	for _, x := range v.List {
		if x.Name == name {
			return x
		}
	}
	return nil
}
