package all_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/flowrun/flow/internal/fuzzguard"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/all"
)

// FuzzOptions decodes fuzzed YAML as the options of every kind in turn (the
// `with:` block of a step, the value of a source or sink): Check and Build
// must return diagnostics or a value, never panic or hang. The first input
// byte picks the kind, so the fuzzer can aim mutations at one kind's fields.
func FuzzOptions(f *testing.F) {
	reg := all.Registry()
	kinds := reg.Kinds()
	for i, k := range kinds {
		if k.Example != "" {
			f.Add(uint8(i), k.Example)
		}
		// Options cut out of the example pipelines.
		for _, opt := range exampleOptions(f, k) {
			f.Add(uint8(i), opt)
		}
	}
	// Hostile options, aimed at every kind.
	for i := range kinds {
		for _, s := range []string{
			"{from: 1, to: 9223372036854775807, step: -9223372036854775808}",
			"&a [*a]",
			"!!binary AAAA",
			"{url: \"${ item\", headers: {Authorization: 3}}",
			"{argv: [\"sh\", \"-c\", \"; rm -rf ~\"], shell: yes}",
			"{path: ../../etc/passwd, format: csv}",
			"{width: -1, height: 99999999999, out_dir: /, name: \"../{stem}.{ext}\"}",
		} {
			f.Add(uint8(i), s)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, src string) {
		fuzzguard.Run(t, func(fatalf func(format string, args ...any)) {
			k := kinds[int(which)%len(kinds)]
			var doc yaml.Node
			if yaml.Unmarshal([]byte(src), &doc) != nil || len(doc.Content) == 0 {
				return
			}
			n := doc.Content[0]
			// spec.Parse refuses these before any kind sees them.
			if conf.CheckAliases(n) != nil {
				return
			}
			c := &conf.Context{Vars: map[string]any{"n": int64(3), "base_url": "http://127.0.0.1:1"}, NoItem: k.Role == steps.RoleSource}
			ds := k.Check(n, c)
			for _, d := range ds {
				if strings.TrimSpace(d.Msg) == "" {
					fatalf("%s: empty diagnostic for %q", k.Name, src)
				}
			}
			if len(ds) > 0 || !buildable(k, src) {
				return
			}
			dir := t.TempDir()
			env := &steps.Env{
				Dir: dir, Stage: "fuzz", Vars: c.Vars, Env: map[string]string{"HOME": dir},
				Workers: 2, Stdin: strings.NewReader("a\nb\n"), Stdout: io.Discard, Stderr: io.Discard,
			}
			v, err := k.Build(n, c, env)
			if err != nil {
				if strings.TrimSpace(err.Error()) == "" {
					fatalf("%s: empty build error for %q", k.Name, src)
				}
				return
			}
			if v.Value() == nil {
				fatalf("%s: Build gave nil without an error for %q", k.Name, src)
			}
			v.Close()
		})
	})
}

// buildable leaves out inputs whose Build would legitimately take long or
// reach outside the temporary directory: source options are evaluated at
// build time, and sleep() or count_primes() there do what they are told;
// allow_outside and absolute paths are an explicit opt-in to write anywhere.
func buildable(k *steps.Kind, src string) bool {
	for _, w := range []string{"sleep", "count_primes", "allow_outside", "/dev/", "/proc/", "/sys/"} {
		if strings.Contains(src, w) {
			return false
		}
	}
	return true
}

// exampleOptions returns the option blocks of kind k found in the example
// pipelines, rendered back to YAML.
func exampleOptions(f *testing.F, k *steps.Kind) []string {
	files, _ := filepath.Glob("../../examples/*.yaml")
	sort.Strings(files)
	var out []string
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		var doc yaml.Node
		if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
			continue
		}
		stages := conf.Lookup(doc.Content[0], "stages")
		if stages == nil {
			continue
		}
		for _, st := range stages.Content {
			var opt *yaml.Node
			switch k.Role {
			case steps.RoleStep:
				if s := conf.Lookup(st, "step"); s != nil && s.Value == k.Name {
					opt = conf.Lookup(st, "with")
				}
			default:
				if ref := conf.Lookup(st, string(k.Role)); ref != nil && ref.Kind == yaml.MappingNode {
					opt = conf.Lookup(ref, k.Name)
				}
			}
			if opt == nil {
				continue
			}
			var b bytes.Buffer
			enc := yaml.NewEncoder(&b)
			if enc.Encode(opt) == nil {
				out = append(out, b.String())
			}
		}
	}
	return out
}
