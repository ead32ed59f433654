package conf

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func parseDoc(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0]
}

// Found by FuzzFromNode: a self-referential alias made every walker of the
// node tree (FromNode, Decode) recurse until the stack overflowed.
func TestCheckAliasesRefusesCycles(t *testing.T) {
	for _, src := range []string{
		"&a [*a]",
		"value: &a {x: *a}",
		"a: &a [1, [2, *a]]",
	} {
		err := CheckAliases(parseDoc(t, src))
		if err == nil || !strings.Contains(err.Error(), "alias to itself") {
			t.Errorf("%s: want an alias cycle error, got %v", src, err)
		}
		if pe, ok := err.(*PosError); !ok || pe.Line == 0 {
			t.Errorf("%s: error has no position: %#v", src, err)
		}
	}
}

func TestCheckAliasesRefusesExpansionBombs(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 9; i++ {
		prev := "*a" + string(rune('0'+i-1))
		b.WriteString("a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
		b.WriteString(strings.TrimSuffix(strings.Repeat(prev+", ", 10), ", "))
		b.WriteString("]\n")
	}
	err := CheckAliases(parseDoc(t, b.String()))
	if err == nil || !strings.Contains(err.Error(), "aliases add more than") {
		t.Fatalf("want an expansion error, got %v", err)
	}
	// A large document around the bomb does not make room for it.
	big := "pad: [" + strings.TrimSuffix(strings.Repeat("1, ", 150_000), ", ") + "]\n" + b.String()
	if err := CheckAliases(parseDoc(t, big)); err == nil {
		t.Fatalf("a bomb inside a large document was accepted")
	}
}

// The bound is on what aliases add: a document of plain values, however
// many, is not refused with a message about aliases it does not have.
func TestCheckAliasesAcceptsLargePlainDocuments(t *testing.T) {
	src := "values: [" + strings.TrimSuffix(strings.Repeat("1, ", 150_000), ", ") + "]\nmore: {a: &a [1, 2, 3], b: *a}\n"
	if err := CheckAliases(parseDoc(t, src)); err != nil {
		t.Fatalf("a document of 150,000 plain scalars was refused: %v", err)
	}
}

func TestCheckAliasesAcceptsOrdinaryReuse(t *testing.T) {
	src := "defaults: &d {retry: {attempts: 3}, timeout: 5s}\nstages:\n  - <<: *d\n    name: a\n  - <<: *d\n    name: b\n  - x: *d\n"
	if err := CheckAliases(parseDoc(t, src)); err != nil {
		t.Fatal(err)
	}
}
