package sink

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/steps/steptest"
)

func kind(t *testing.T, name string) *steps.Kind {
	t.Helper()
	return steptest.Kind(t, Register, name)
}

func build(t *testing.T, src string, env *steps.Env) (steps.Sink, error) {
	t.Helper()
	name, opts := steptest.Ref(t, src)
	v, err := kind(t, name).Build(opts, &conf.Context{Vars: env.Vars}, env)
	if err != nil {
		return nil, err
	}
	return v.Sink, nil
}

func check(t *testing.T, src string) conf.Diags {
	t.Helper()
	name, opts := steptest.Ref(t, src)
	return kind(t, name).Check(opts, &conf.Context{})
}

func errContains(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("expected an error containing %q, got none", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not contain %q", err, p)
		}
	}
}

var errBoom = errors.New("boom: HTTP 500")

// records are the results of a small pipeline: mappings with keys in no
// particular order, one kept error, one late key.
func records() []steps.Record {
	return []steps.Record{
		{Index: 0, Item: map[string]any{"file": "a.log", "lines": int64(120), "errors": int64(3)}},
		{Index: 1, Item: map[string]any{"file": "long-name.log", "lines": int64(7), "errors": int64(0), "note": "x<y\ttab"}},
		{Index: 2, Item: map[string]any{"error": "boom: HTTP 500", "class": "http_5xx", "input": map[string]any{"file": "c.log"}}, Err: errBoom},
		{Index: 3, Item: map[string]any{"file": "d.log", "lines": 2.5, "errors": nil}},
	}
}

func run(t *testing.T, src string, recs []steps.Record) (string, string) {
	t.Helper()
	var out, errw bytes.Buffer
	s, err := build(t, src, &steps.Env{Stdout: &out, Stderr: &errw, Vars: map[string]any{"unit": "USD"}})
	if err != nil {
		t.Fatalf("build %s: %v", src, err)
	}
	for _, r := range recs {
		if err := s.Write(context.Background(), r); err != nil {
			t.Fatalf("Write: %v", err)
		}
	}
	if err := s.Close(context.Background(), nil); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return out.String(), errw.String()
}

func golden(t *testing.T, name, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func TestPrintFormats(t *testing.T) {
	recs := records()
	cases := []struct{ src, want string }{
		{`print: jsonl`, `{"errors":3,"file":"a.log","lines":120}
{"errors":0,"file":"long-name.log","lines":7,"note":"x<y\ttab"}
{"class":"http_5xx","error":"boom: HTTP 500","input":{"file":"c.log"}}
{"errors":null,"file":"d.log","lines":2.5}
`},
		{`print`, `{"errors":3,"file":"a.log","lines":120}
{"errors":0,"file":"long-name.log","lines":7,"note":"x<y\ttab"}
{"class":"http_5xx","error":"boom: HTTP 500","input":{"file":"c.log"}}
{"errors":null,"file":"d.log","lines":2.5}
`},
		{`print: {format: jsonl, columns: [lines, file]}`, `{"lines":120,"file":"a.log"}
{"lines":7,"file":"long-name.log"}
{"file":"c.log","error":"boom: HTTP 500"}
{"lines":2.5,"file":"d.log"}
`},
		{`print: json`, `[
  {"errors":3,"file":"a.log","lines":120},
  {"errors":0,"file":"long-name.log","lines":7,"note":"x<y\ttab"},
  {"class":"http_5xx","error":"boom: HTTP 500","input":{"file":"c.log"}},
  {"errors":null,"file":"d.log","lines":2.5}
]
`},
		{`print: csv`, `errors,file,lines,note,error
3,a.log,120,,
0,long-name.log,7,x<y	tab,
,c.log,,,boom: HTTP 500
,d.log,2.5,,
`},
		{`print: {format: csv, columns: [file, errors]}`, `file,errors,error
a.log,3,
long-name.log,0,
c.log,,boom: HTTP 500
d.log,,
`},
		{`print: table`, `errors  file           lines  note      error
------  -------------  -----  --------  --------------
     3  a.log            120
     0  long-name.log      7  x<y\ttab
        c.log                           boom: HTTP 500
        d.log            2.5
`},
		{`print: {format: table, columns: [file, lines]}`, `file           lines  error
-------------  -----  --------------
a.log            120
long-name.log      7
c.log                 boom: HTTP 500
d.log            2.5
`},
		{`print: {template: "${ item.file }: ${ item.lines } lines (${ vars.unit }) #${ index }"}`, `a.log: 120 lines (USD) #0
long-name.log: 7 lines (USD) #1
:  lines (USD) #2
d.log: 2.5 lines (USD) #3
`},
	}
	for _, c := range cases {
		got, _ := run(t, c.src, recs)
		golden(t, c.src, got, c.want)
	}
}

func TestPrintScalarsAndEmpty(t *testing.T) {
	recs := []steps.Record{{Item: "a"}, {Item: int64(2)}, {Item: []any{int64(1), "x"}}, {Item: nil}}
	got, _ := run(t, `print: table`, recs)
	golden(t, "table of scalars", got, "value\n-------\na\n2\n[1,\"x\"]\n\n")
	got, _ = run(t, `print: csv`, recs)
	golden(t, "csv of scalars", got, "value\na\n2\n\"[1,\"\"x\"\"]\"\n\"\"\n")
	got, _ = run(t, `print: jsonl`, recs)
	golden(t, "jsonl of scalars", got, "\"a\"\n2\n[1,\"x\"]\nnull\n")

	for src, want := range map[string]string{
		`print: json`:  "[]\n",
		`print: jsonl`: "",
		`print: table`: "",
		`print: csv`:   "",
		`print: {format: table, columns: [a, b]}`: "a  b\n-  -\n",
		`print: {format: csv, columns: [a, b]}`:   "a,b\n",
	} {
		got, _ := run(t, src, nil)
		golden(t, src+" with no items", got, want)
	}
}

// A key first seen after the rows that chose the csv header is reported,
// not dropped silently.
func TestPrintCSVLateKey(t *testing.T) {
	var recs []steps.Record
	for i := 0; i < inferLimit+1; i++ {
		recs = append(recs, steps.Record{Index: int64(i), Item: map[string]any{"a": int64(i)}})
	}
	recs = append(recs, steps.Record{Index: 1001, Item: map[string]any{"a": int64(0), "late": true}})
	recs = append(recs, steps.Record{Index: 1002, Item: map[string]any{"late": true}})
	out, warn := run(t, `print: csv`, recs)
	if !strings.HasPrefix(out, "a\n0\n1\n") || strings.Count(out, "\n") != len(recs)+1 {
		t.Errorf("csv output starts %q and has %d lines, want header plus %d rows", out[:10], strings.Count(out, "\n"), len(recs))
	}
	if strings.Count(warn, "warning") != 1 || !strings.Contains(warn, `item 1001 has a key "late"`) {
		t.Errorf("warnings: %q", warn)
	}
	// Within the first rows, a key seen late still gets its column.
	out, _ = run(t, `print: csv`, []steps.Record{{Item: map[string]any{"a": int64(1)}}, {Item: map[string]any{"b": int64(2)}}})
	golden(t, "csv union", out, "a,b\n1,\n,2\n")
}

// A kept error that reaches the sink bare (its item not yet the error
// mapping) is still written with its message.
func TestPrintBareError(t *testing.T) {
	recs := []steps.Record{{Index: 4, Item: "x.log", Err: &steps.Error{Err: errors.New("cannot open"), Class: "error"}}}
	got, _ := run(t, `print: jsonl`, recs)
	golden(t, "bare error", got, `{"class":"error","error":"cannot open","input":"x.log"}`+"\n")
}

func TestPrintOptionsChecked(t *testing.T) {
	errContains(t, check(t, `print: yaml`), "must be one of jsonl, json, csv, table")
	errContains(t, check(t, `print: {template: "x", format: json}`), "either 'template' or 'format'")
	errContains(t, check(t, `print: {format: csv, columns: [a, a]}`), `"a" is listed twice`)
	errContains(t, check(t, `print: {colums: [a]}`), `did you mean "columns"`)
	if ds := check(t, `print: {format: table, columns: [a, b]}`); len(ds) > 0 {
		t.Errorf("valid options refused: %v", ds)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write(p []byte) (int, error) { return 0, w.err }

func TestPrintWriteFailure(t *testing.T) {
	s, err := build(t, `print: jsonl`, &steps.Env{Stdout: failWriter{errors.New("broken pipe")}})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 70<<10) // more than the buffer: written at once
	err = s.Write(context.Background(), steps.Record{Item: big})
	if err == nil {
		err = s.Close(context.Background(), nil)
	}
	errContains(t, err, "standard output", "broken pipe")
}

// Results are flushed without waiting for Close, so a slow pipeline's output
// appears as it is produced.
func TestPrintFlushesPeriodically(t *testing.T) {
	out := &syncBuffer{ch: make(chan struct{}, 1)}
	s, err := build(t, `print: jsonl`, &steps.Env{Stdout: out})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), steps.Record{Item: int64(1)}); err != nil {
		t.Fatal(err)
	}
	<-out.ch // blocks until the timer flushes; the test times out if it never does
	if got := out.String(); got != "1\n" {
		t.Errorf("flushed %q", got)
	}
	s.Close(context.Background(), nil)
}

type syncBuffer struct {
	buf bytes.Buffer
	ch  chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	n, err := b.buf.Write(p)
	select {
	case b.ch <- struct{}{}:
	default:
	}
	return n, err
}

func (b *syncBuffer) String() string { return b.buf.String() }

// An error kept upstream that crossed a barrier arrives without Record.Err,
// as its {error, class, input} mapping; it is shown like one that did not.
func TestPrintKeptErrorAfterBarrier(t *testing.T) {
	errItem := map[string]any{"error": "bad y", "class": "error", "input": "y"}
	for _, r := range []steps.Record{{Index: 1, Item: errItem}, {Index: 1, Item: errItem, Err: errors.New("bad y")}} {
		recs := []steps.Record{{Index: 0, Item: "x"}, r}
		got, _ := run(t, `print: table`, recs)
		golden(t, "table", got, "value  error  input\n-----  -----  -----\nx\n       bad y  y\n")
		got, _ = run(t, `print: csv`, recs)
		golden(t, "csv", got, "value,error,input\nx,,\n,bad y,y\n")
	}
	// A result that merely has an 'error' key among others is a result.
	got, _ := run(t, `print: table`, []steps.Record{{Item: map[string]any{"error": "none", "n": int64(1)}}})
	golden(t, "result with an error key", got, "error  n\n-----  -\nnone   1\n")
}

// NaN and infinities have no JSON form; a sink writes them as strings
// rather than fail (docs/naming.md).
func TestPrintNonFiniteNumbers(t *testing.T) {
	recs := []steps.Record{{Index: 0, Item: map[string]any{"r": math.Inf(1), "l": []any{math.NaN(), 1.5, math.Inf(-1)}}}}
	want := `{"l":["NaN",1.5,"-Infinity"],"r":"Infinity"}` + "\n"
	for _, src := range []string{`print: jsonl`, `print: {format: jsonl, columns: [l, r]}`} {
		if got, _ := run(t, src, recs); got != want {
			t.Errorf("%s: got %q, want %q", src, got, want)
		}
	}
	if got, _ := run(t, `print: json`, recs); !strings.Contains(got, `"Infinity"`) {
		t.Errorf("print: json: got %q", got)
	}
}
