package spec_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/spec/spectest"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

const withVars = `version: 1
vars:
  count: 5
  name: abc
  token: {default: s3cret, secret: true}
  plain: {default: visible}
  Region: eu
stages:
  - name: ids
    source: {range: {from: 1, to: "${ vars.count }"}}
`

func mustParse(t *testing.T, src string, opts spec.Options) *spec.Pipeline {
	t.Helper()
	p, err := spec.Parse("p.yaml", []byte(src), opts, spectest.Registry())
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestVarsDefaultsAndOverrides(t *testing.T) {
	cases := []struct {
		name string
		opts spec.Options
		want map[string]any
	}{
		{"defaults", spec.Options{},
			map[string]any{"count": int64(5), "name": "abc", "token": "s3cret", "plain": "visible", "Region": "eu"}},
		{"set reads YAML scalars", spec.Options{Set: map[string]string{"count": "7", "name": "true", "plain": "1.5"}},
			map[string]any{"count": int64(7), "name": true, "token": "s3cret", "plain": 1.5, "Region": "eu"}},
		{"environment by exact and upper-cased name", spec.Options{Environ: []string{"FLOW_VAR_count=9", "FLOW_VAR_REGION=us", "FLOW_VAR_unknown=1", "PATH=/bin"}},
			map[string]any{"count": int64(9), "name": "abc", "token": "s3cret", "plain": "visible", "Region": "us"}},
		{"flow lists and mappings are read as such, other text stays a string",
			spec.Options{Set: map[string]string{"count": "[1, 2]", "name": "a: b", "plain": "{k: v}"}, Environ: []string{"FLOW_VAR_Region=[x, y]"}},
			map[string]any{"count": []any{int64(1), int64(2)}, "name": "a: b", "token": "s3cret", "plain": map[string]any{"k": "v"}, "Region": []any{"x", "y"}}},
		{"--set wins over the environment", spec.Options{Environ: []string{"FLOW_VAR_count=9"}, Set: map[string]string{"count": "11"}},
			map[string]any{"count": int64(11), "name": "abc", "token": "s3cret", "plain": "visible", "Region": "eu"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := mustParse(t, withVars, c.opts)
			if got := p.Vars.Map(); !reflect.DeepEqual(got, c.want) {
				t.Errorf("vars = %#v\nwant   %#v", got, c.want)
			}
		})
	}
}

func TestSetUnknownVariable(t *testing.T) {
	_, err := spec.Parse("p.yaml", []byte(withVars), spec.Options{Set: map[string]string{"cont": "1"}}, spectest.Registry())
	want := `p.yaml: --set cont: the pipeline declares no variable "cont" (did you mean "count"?); declare it under vars:`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestSecrets(t *testing.T) {
	p := mustParse(t, withVars, spec.Options{})
	if got := p.Vars.Secrets(); !reflect.DeepEqual(got, []string{"s3cret"}) {
		t.Errorf("Secrets() = %q, want [s3cret]", got)
	}
	// An override of a secret is what must be hidden, not the default.
	p = mustParse(t, withVars, spec.Options{Set: map[string]string{"token": "other"}})
	if got := p.Vars.Secrets(); !reflect.DeepEqual(got, []string{"other"}) {
		t.Errorf("Secrets() after --set = %q, want [other]", got)
	}
	if v := p.Vars.Lookup("plain"); v == nil || v.Secret {
		t.Errorf("plain: %+v, want a non-secret variable", v)
	}
}

func TestOverridesReachExpressionChecks(t *testing.T) {
	// vars.count is declared, so the expression compiles whatever its value.
	p := mustParse(t, withVars, spec.Options{Set: map[string]string{"count": "3"}})
	if p.Stages[0].Kind != "range" || p.Stages[0].Role != steps.RoleSource {
		t.Fatalf("stage 0 = %s %s", p.Stages[0].Role, p.Stages[0].Kind)
	}
}

func TestStageFieldsAndDefaults(t *testing.T) {
	p := mustParse(t, `version: 1
stages:
  - name: src
    source: stdin
  - name: work
    step: compute
    with: {value: "${ item }"}
    workers: auto
    rate: 600/m
    timeout: 1m30s
    retry: {attempts: 5}
    complete: {first: 2}
    memory: 1KiB
    mode: process
  - name: out
    sink: {print: table}
`, spec.Options{})
	w := p.Stages[1]
	if w.Role != steps.RoleStep || w.Kind != "compute" || w.Options == nil {
		t.Errorf("role/kind/options = %s/%s/%v", w.Role, w.Kind, w.Options)
	}
	if !w.Workers.Auto || w.Rate.PerSecond() != 10 || w.Timeout != 90*time.Second || w.Complete.First != 2 || w.Memory != 1024 {
		t.Errorf("policies decoded wrong: %+v", w)
	}
	if w.Retry.Attempts != 5 || w.Retry.Backoff != 100*time.Millisecond || *w.Retry.Jitter != 0.2 {
		t.Errorf("retry defaults: %+v", w.Retry)
	}
	if w.Order != "input" || w.OnError != "fail" {
		t.Errorf("defaults: order %q on_error %q", w.Order, w.OnError)
	}
	if src := p.Stages[0]; src.Kind != "stdin" || src.Options != nil {
		t.Errorf("bare source: kind %q options %v", src.Kind, src.Options)
	}
	if out := p.Stages[2]; out.Role != steps.RoleSink || out.Kind != "print" || out.Options.Value != "table" {
		t.Errorf("sink: %+v", out)
	}
}

func TestSingleExpressionKeepsItsType(t *testing.T) {
	p := mustParse(t, `version: 1
stages:
  - name: src
    source: stdin
  - name: work
    step: compute
    with: {value: 1}
    when: "${ index > 2 }"
    key: "${ index * 2 }"
    order: key
`, spec.Options{})
	s := p.Stages[1]
	if got := s.When.Type(); got != reflect.TypeFor[bool]() {
		t.Errorf("when type = %v, want bool", got)
	}
	v, err := s.Key.Eval(&tmpl.Scope{Index: 4})
	if err != nil || v != 8 {
		t.Errorf("key = %#v (%T), %v; want the number 8", v, v, err)
	}
	ok, err := s.When.EvalBool(&tmpl.Scope{Index: 3})
	if err != nil || !ok {
		t.Errorf("when(3) = %v, %v", ok, err)
	}
}

func TestWithoutCatalogStillChecksStructure(t *testing.T) {
	_, err := spec.Parse("p.yaml", []byte("version: 1\nstages:\n  - name: a\n    step: anything\n    wokers: 2\n"), spec.Options{}, nil)
	var ds conf.Diags
	if !errors.As(err, &ds) || len(ds) != 2 {
		t.Fatalf("want 2 diagnostics (unknown key, first stage not a source), got %v", err)
	}
	if !strings.Contains(ds[0].Msg, "first stage must be a source") || !strings.Contains(ds[1].Msg, `"wokers"`) {
		t.Errorf("got %v", ds)
	}
}

// A pipeline's lock stays in its folder, as write: does: the operator may
// put it elsewhere with --lock, the file may not.
func TestLockStaysInTheFolder(t *testing.T) {
	for _, tc := range []struct{ src, pos, want string }{
		{"lock: /var/lock/x", "p.yaml:2:7", `lock file "/var/lock/x" is absolute`},
		{"lock: {file: ../x.lock}", "p.yaml:2:14", `lock file "../x.lock" leaves the pipeline's folder`},
		{"lock: a/../../x.lock", "p.yaml:2:7", "--lock ../x.lock"},
	} {
		_, err := spec.Parse("p.yaml", []byte("version: 1\n"+tc.src+"\nstages:\n  - {name: s, source: {items: [1]}}\n"), spec.Options{}, spectest.Registry())
		var ds conf.Diags
		if !errors.As(err, &ds) || len(ds) != 1 {
			t.Errorf("%s: want one problem, got %v", tc.src, err)
			continue
		}
		if got := ds.WithFile("p.yaml")[0].String(); !strings.HasPrefix(got, tc.pos+": ") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %q, want %s: ...%s...", tc.src, got, tc.pos, tc.want)
		}
	}
}

// allow_outside is the opt-in for a lock anywhere.
func TestLockAllowOutside(t *testing.T) {
	for _, src := range []string{"lock: {file: /var/lock/x, allow_outside: true}", "lock: {file: ../x.lock, allow_outside: true, mode: skip}"} {
		p, err := spec.Parse("p.yaml", []byte("version: 1\n"+src+"\nstages:\n  - {name: s, source: {items: [1]}}\n"), spec.Options{}, spectest.Registry())
		if err != nil || !p.Lock.AllowOutside {
			t.Errorf("%s: %v", src, err)
		}
	}
}

func TestLockForms(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want spec.Lock
	}{
		{"lock: run.lock", spec.Lock{File: "run.lock", Mode: "fail"}}, // the default of mode:
		{"lock: {file: locks/x, mode: skip}", spec.Lock{File: "locks/x", Mode: "skip"}},
		{"lock: {file: x, mode: wait, timeout: 90s}", spec.Lock{File: "x", Mode: "wait", Timeout: 90 * time.Second}},
	} {
		p, err := spec.Parse("p.yaml", []byte("version: 1\n"+tc.src+"\nstages:\n  - {name: s, source: {items: [1]}}\n"), spec.Options{}, spectest.Registry())
		if err != nil {
			t.Errorf("%s: %v", tc.src, err)
			continue
		}
		if p.Lock == nil || p.Lock.File != tc.want.File || p.Lock.Mode != tc.want.Mode || p.Lock.Timeout != tc.want.Timeout {
			t.Errorf("%s: got %+v, want %+v", tc.src, p.Lock, tc.want)
		}
	}
}

// A secret is its text exactly as written: YAML would read these as an
// octal, a hex, a rounded float or a bool, which would both change the
// credential sent and leave the written text unredacted.
func TestSecretsKeepTheirText(t *testing.T) {
	src := `version: 1
vars:
  octal: {default: 00123456, secret: true}
  hex: {default: 0x1f2e3d4c5b6a, secret: true}
  long: {default: 123456789012345678901234567890, secret: true}
  float: {default: 1e400, secret: true}
  yes: {secret: true, default: yes}
  quoted: {default: "007", secret: true}
  empty: {secret: true}
  null_default: {default: ~, secret: true}
  plain_octal: 00123456
stages:
  - name: ids
    source: {items: [1]}
`
	p := mustParse(t, src, spec.Options{})
	want := map[string]any{"octal": "00123456", "hex": "0x1f2e3d4c5b6a", "long": "123456789012345678901234567890",
		"float": "1e400", "yes": "yes", "quoted": "007", "empty": "", "null_default": "", "plain_octal": int64(42798)}
	if got := p.Vars.Map(); !reflect.DeepEqual(got, want) {
		t.Errorf("vars = %#v\nwant   %#v", got, want)
	}
	p = mustParse(t, src, spec.Options{Set: map[string]string{"octal": "0777", "hex": "[1, 2]"}, Environ: []string{"FLOW_VAR_long=1e5", "FLOW_VAR_EMPTY={a: b}"}})
	for name, v := range map[string]string{"octal": "0777", "hex": "[1, 2]", "long": "1e5", "empty": "{a: b}"} {
		if got := p.Vars.Lookup(name).Value; got != v {
			t.Errorf("%s overridden = %#v, want the text %q", name, got, v)
		}
	}
	if got := p.Vars.Secrets(); !slices.Contains(got, "0777") || !slices.Contains(got, "1e5") {
		t.Errorf("Secrets() = %q, want the overrides' text", got)
	}
}

func TestSecretMustBeOneString(t *testing.T) {
	for _, def := range []string{"{user: u, key: k}", "[a, b]"} {
		_, err := spec.Parse("p.yaml", []byte("version: 1\nvars:\n  creds: {secret: true, default: "+def+"}\nstages:\n  - name: ids\n    source: {items: [1]}\n"), spec.Options{}, spectest.Registry())
		if err == nil || !strings.Contains(err.Error(), "p.yaml:3:34: secret variable \"creds\" must hold one string") {
			t.Errorf("default %s: err = %v, want a positioned refusal", def, err)
		}
	}
}

// workers: is bounded per mode.
func TestWorkersBounded(t *testing.T) {
	for src, want := range map[string]string{
		"{name: w, step: compute, mode: process, workers: 300, with: {value: 1}}":    "workers: 300 is more than mode: process allows (256)",
		"{name: w, step: compute, workers: 100000000, with: {value: 1}}":             "workers: 100000000 is more than mode: thread allows (10000)",
		"{name: w, step: compute, mode: cluster, workers: 200000, with: {value: 1}}": "mode: cluster allows (100000)",
	} {
		_, err := spec.Parse("p.yaml", []byte("version: 1\nstages:\n  - {name: s, source: {items: [1]}}\n  - "+src+"\n"), spec.Options{}, spectest.Registry())
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "p.yaml:4:") {
			t.Errorf("%s: got %v, want %q at line 4", src, err, want)
		}
	}
	if _, err := spec.Parse("p.yaml", []byte("version: 1\nstages:\n  - {name: s, source: {items: [1]}}\n  - {name: w, step: compute, mode: process, workers: 256, with: {value: 1}}\n"), spec.Options{}, spectest.Registry()); err != nil {
		t.Errorf("256 processes refused: %v", err)
	}
}
