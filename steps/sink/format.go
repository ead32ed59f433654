package sink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/flowrun/flow/internal/decimal"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// encoder turns records into one output format. write is called per record;
// finish once at the end, also after a failed run, so that what was written
// stays well-formed (a closed JSON array, a complete table).
type encoder interface {
	write(ctx context.Context, r steps.Record) error
	finish() error
}

// inferLimit is how many records csv looks at to choose its columns before
// it writes the header and starts streaming.
const inferLimit = 1000

// value is what a record shows: its item, or for a kept error whose item is
// not already the {error, class, input} mapping, that mapping.
func value(r steps.Record) any {
	if r.Err == nil {
		return r.Item
	}
	if m, ok := r.Item.(map[string]any); ok {
		if _, has := m["error"]; has {
			return m
		}
	}
	return map[string]any{"error": r.Err.Error(), "class": steps.ClassOf(r.Err), "input": r.Item}
}

// kept reports whether a record is an error kept under 'on_error: keep':
// either the sink got it straight from the failing stage (Err set), or it
// crossed a barrier such as sort, which passes items on without their
// errors, and is recognised by the documented {error, class, input} shape.
func kept(r steps.Record) bool {
	if r.Err != nil {
		return true
	}
	m, ok := r.Item.(map[string]any)
	if !ok || len(m) != 3 {
		return false
	}
	_, hasErr := m["error"].(string)
	_, hasClass := m["class"].(string)
	_, hasInput := m["input"]
	return hasErr && hasClass && hasInput
}

// cell finds column col of a record. A scalar item is the column 'value'.
// For a kept error, columns missing from the error mapping are looked up in
// the failed input, so the row still says which item failed.
func cell(r steps.Record, col string) (any, bool) {
	v := value(r)
	m, ok := v.(map[string]any)
	if !ok {
		if col == "value" {
			return v, true
		}
		return nil, false
	}
	if x, ok := m[col]; ok {
		return x, true
	}
	if kept(r) {
		if in, ok := m["input"].(map[string]any); ok {
			x, ok := in[col]
			return x, ok
		}
	}
	return nil, false
}

// keys are the columns one record contributes: the keys of a mapping item in
// alphabetical order (Go maps keep no order), 'value' for anything else.
// A kept error contributes none: columns adds 'error' for it.
func keys(r steps.Record) []string {
	if kept(r) {
		return nil
	}
	m, ok := r.Item.(map[string]any)
	if !ok {
		return []string{"value"}
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// columns returns the explicit columns, or the union of the keys of recs in
// first-seen order; 'error' is added when a kept error is among recs, and
// without explicit columns 'input' too when a failed input is not a mapping
// (a mapping input fills the row's other columns instead), so that the row
// says which item failed.
func columns(explicit []string, recs []steps.Record) []string {
	cols := append([]string(nil), explicit...)
	seen := map[string]bool{}
	for _, c := range cols {
		seen[c] = true
	}
	hasErr, scalarInput := false, false
	for _, r := range recs {
		if kept(r) {
			hasErr = true
			_, isMap := value(r).(map[string]any)["input"].(map[string]any)
			scalarInput = scalarInput || !isMap
		}
		if explicit != nil {
			continue
		}
		for _, k := range keys(r) {
			if !seen[k] {
				seen[k] = true
				cols = append(cols, k)
			}
		}
	}
	if hasErr && !seen["error"] {
		cols = append(cols, "error")
	}
	if scalarInput && explicit == nil && !seen["input"] {
		cols = append(cols, "input")
	}
	return cols
}

// marshal writes v as compact JSON without HTML escaping ('<' stays '<').
// NaN and the infinities, which JSON cannot hold, are written as the
// strings "NaN", "Infinity" and "-Infinity" (docs/naming.md): a value an
// item can hold never stops a sink.
func marshal(buf *bytes.Buffer, v any) error {
	if marshalPlain(buf, v) {
		return nil
	}
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	start := buf.Len()
	err := enc.Encode(v)
	var uv *json.UnsupportedValueError
	if errors.As(err, &uv) {
		buf.Truncate(start)
		err = enc.Encode(steps.Finite(v))
	}
	if err != nil {
		return err
	}
	buf.Truncate(buf.Len() - 1) // Encode adds a newline
	return nil
}

// marshalPlain writes the values most items are (integers, booleans, null,
// short ASCII strings with nothing to escape) without encoding/json's
// encoder and reflection, which cost a sink more than the rest of its work
// on cheap items. It writes what json.Encoder would (TestMarshalPlain) and
// reports false, writing nothing, for every other value.
func marshalPlain(buf *bytes.Buffer, v any) bool {
	if b, ok := appendInt(buf.AvailableBuffer(), v); ok {
		buf.Write(b)
		return true
	}
	switch x := v.(type) {
	case bool:
		buf.WriteString(strconv.FormatBool(x))
	case nil:
		buf.WriteString("null")
	case string:
		if !plainString(x) {
			return false
		}
		buf.WriteByte('"')
		buf.WriteString(x)
		buf.WriteByte('"')
	case map[string]any:
		return marshalPlainMap(buf, x)
	default:
		return false
	}
	return true
}

func plainString(x string) bool {
	if len(x) > 256 {
		return false
	}
	for i := 0; i < len(x); i++ {
		if c := x[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// marshalPlainMap writes a small flat record of plain values, the result of
// most steps (analyze-logs: file, path, lines and a count per pattern), as
// encoding/json would: keys sorted. Through the encoder, reflection and its
// key sort, such a record cost a sink 1.5-1.8 us (0.25 us here), more than
// scanning a 4 KiB file.
func marshalPlainMap(buf *bytes.Buffer, m map[string]any) bool {
	type kv struct {
		k string
		v any
	}
	var arr [16]kv
	if len(m) > len(arr) {
		return false
	}
	kvs := arr[:0]
	for k, v := range m {
		if !plainString(k) {
			return false
		}
		// Insertion sort: a record has a handful of keys.
		i := len(kvs)
		kvs = append(kvs, kv{})
		for ; i > 0 && kvs[i-1].k > k; i-- {
			kvs[i] = kvs[i-1]
		}
		kvs[i] = kv{k, v}
	}
	start := buf.Len()
	buf.WriteByte('{')
	for i, e := range kvs {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteByte('"')
		buf.WriteString(e.k)
		buf.WriteString(`":`)
		if _, nested := e.v.(map[string]any); nested || !marshalPlain(buf, e.v) {
			buf.Truncate(start)
			return false
		}
	}
	buf.WriteByte('}')
	return true
}

// marshalRecord writes the record's value, or with explicit columns an
// object holding just those keys, in the order given.
func marshalRecord(buf *bytes.Buffer, r steps.Record, cols []string) error {
	if cols == nil {
		return marshal(buf, value(r))
	}
	buf.WriteByte('{')
	n := 0
	for _, c := range columns(cols, []steps.Record{r}) {
		x, ok := cell(r, c)
		if !ok {
			continue
		}
		if n > 0 {
			buf.WriteByte(',')
		}
		n++
		marshal(buf, c)
		buf.WriteByte(':')
		if err := marshal(buf, x); err != nil {
			return err
		}
	}
	buf.WriteByte('}')
	return nil
}

func itemError(r steps.Record, err error) error {
	return fmt.Errorf("item %d cannot be written as JSON: %v", r.Index, err)
}

// ---- jsonl

type jsonlEnc struct {
	w    io.Writer
	cols []string
	buf  bytes.Buffer
}

func (e *jsonlEnc) write(ctx context.Context, r steps.Record) error {
	if e.cols == nil && r.Err == nil {
		// An integer, the commonest item, goes straight into the
		// writer's buffer: no encoder, no intermediate copy.
		if bw, ok := e.w.(*bufio.Writer); ok {
			if b, ok := appendInt(bw.AvailableBuffer(), r.Item); ok {
				_, err := bw.Write(append(b, '\n'))
				return err
			}
		}
	}
	e.buf.Reset()
	if err := marshalRecord(&e.buf, r, e.cols); err != nil {
		return itemError(r, err)
	}
	e.buf.WriteByte('\n')
	_, err := e.w.Write(e.buf.Bytes())
	return err
}

func (e *jsonlEnc) finish() error { return nil }

// appendInt appends v as JSON if it is an integer.
func appendInt(b []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case int64:
		return decimal.AppendInt(b, x), true
	case int:
		return decimal.AppendInt(b, int64(x)), true
	}
	return b, false
}

// ---- json: one array, streamed element by element

type jsonEnc struct {
	w    io.Writer
	cols []string
	n    int
	buf  bytes.Buffer
}

func (e *jsonEnc) write(ctx context.Context, r steps.Record) error {
	e.buf.Reset()
	if e.n == 0 {
		e.buf.WriteString("[\n  ")
	} else {
		e.buf.WriteString(",\n  ")
	}
	if err := marshalRecord(&e.buf, r, e.cols); err != nil {
		return itemError(r, err)
	}
	e.n++
	_, err := e.w.Write(e.buf.Bytes())
	return err
}

func (e *jsonEnc) finish() error {
	end := "\n]\n"
	if e.n == 0 {
		end = "[]\n"
	}
	_, err := io.WriteString(e.w, end)
	return err
}

// ---- csv: columns chosen from the first records, then streamed

type csvEnc struct {
	w        *csv.Writer
	out      io.Writer // under w
	explicit []string
	cols     []string
	pending  []steps.Record
	warn     io.Writer
	warned   map[string]bool
	started  bool
}

func (e *csvEnc) write(ctx context.Context, r steps.Record) error {
	if !e.started {
		e.pending = append(e.pending, r)
		if len(e.pending) < inferLimit {
			return nil
		}
		return e.start()
	}
	return e.row(r)
}

func (e *csvEnc) start() error {
	e.started = true
	e.cols = columns(e.explicit, e.pending)
	if len(e.cols) == 0 {
		return nil // no items and no columns: an empty file, not an empty line
	}
	if err := e.w.Write(e.cols); err != nil {
		return err
	}
	for _, r := range e.pending {
		if err := e.row(r); err != nil {
			return err
		}
	}
	e.pending = nil
	return nil
}

func (e *csvEnc) row(r steps.Record) error {
	if len(e.cols) == 0 {
		return nil
	}
	rec := make([]string, len(e.cols))
	for i, c := range e.cols {
		x, _ := cell(r, c)
		rec[i] = text(x)
		if c == "error" && r.Err != nil && x == nil {
			rec[i] = r.Err.Error()
		}
	}
	e.checkDropped(r)
	if len(rec) == 1 && rec[0] == "" {
		// encoding/csv writes a lone empty field as an empty line, which
		// readers skip: the row would vanish.
		e.w.Flush()
		if _, err := io.WriteString(e.out, "\"\"\n"); err != nil {
			return err
		}
		return e.w.Error()
	}
	e.w.Write(rec)
	return e.w.Error()
}

// checkDropped warns, once per key, about keys of later records that the
// header, fixed after the first records, has no column for: the values are
// not silently lost from view.
func (e *csvEnc) checkDropped(r steps.Record) {
	if e.explicit != nil || e.warn == nil {
		return
	}
	ks := keys(r)
	if kept(r) {
		ks = append(ks, "error")
		if _, isMap := value(r).(map[string]any)["input"].(map[string]any); !isMap {
			ks = append(ks, "input")
		}
	}
	for _, k := range ks {
		if e.warned[k] || contains(e.cols, k) {
			continue
		}
		if e.warned == nil {
			e.warned = map[string]bool{}
		}
		e.warned[k] = true
		fmt.Fprintf(e.warn, "warning: csv: item %d has a key %q that the first %d items did not have, so the header has no column for it; list the columns in 'columns:' to include it\n", r.Index, k, inferLimit)
	}
}

func (e *csvEnc) finish() error {
	if !e.started {
		if err := e.start(); err != nil {
			return err
		}
	}
	e.w.Flush()
	return e.w.Error()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// text renders a cell: strings as they are, numbers without exponent or
// trailing zeros, null as nothing, lists and mappings as JSON.
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case map[string]any, []any:
		var buf bytes.Buffer
		if marshal(&buf, x) == nil {
			return buf.String()
		}
	}
	return tmpl.Stringify(v)
}

// ---- table: needs every row to size its columns, so it buffers them all

type tableEnc struct {
	w        io.Writer
	explicit []string
	recs     []steps.Record
}

func (e *tableEnc) write(ctx context.Context, r steps.Record) error {
	e.recs = append(e.recs, r)
	return nil
}

var tableEscaper = strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`)

func (e *tableEnc) finish() error {
	cols := columns(e.explicit, e.recs)
	if len(cols) == 0 {
		return nil
	}
	cells := make([][]string, len(e.recs))
	width := make([]int, len(cols))
	numeric := make([]bool, len(cols))
	for j, c := range cols {
		width[j] = utf8.RuneCountInString(c)
		numeric[j] = true
	}
	for i, r := range e.recs {
		cells[i] = make([]string, len(cols))
		for j, c := range cols {
			x, _ := cell(r, c)
			if c == "error" && r.Err != nil && x == nil {
				x = r.Err.Error()
			}
			switch x.(type) {
			case int64, float64, int, json.Number, nil:
			default:
				numeric[j] = false
			}
			s := tableEscaper.Replace(text(x))
			cells[i][j] = s
			width[j] = max(width[j], utf8.RuneCountInString(s))
		}
	}
	var b strings.Builder
	line := func(row []string, right func(j int) bool) {
		b.Reset()
		for j, s := range row {
			pad := strings.Repeat(" ", width[j]-utf8.RuneCountInString(s))
			if j > 0 {
				b.WriteString("  ")
			}
			if right(j) {
				b.WriteString(pad + s)
			} else {
				b.WriteString(s + pad)
			}
		}
		b.WriteString("\n")
	}
	out := func() error {
		_, err := io.WriteString(e.w, strings.TrimRight(b.String(), " \n")+"\n")
		return err
	}
	rule := make([]string, len(cols))
	for j := range cols {
		rule[j] = strings.Repeat("-", width[j])
	}
	// Numbers are right-aligned, headers over them too, so digits line up.
	right := func(j int) bool { return numeric[j] && len(e.recs) > 0 }
	for _, row := range append([][]string{cols, rule}, cells...) {
		line(row, right)
		if err := out(); err != nil {
			return err
		}
	}
	return nil
}

// ---- template: one line per item

type templateEnc struct {
	w   io.Writer
	t   *tmpl.T
	env *steps.Env
	buf bytes.Buffer
}

func (e *templateEnc) write(ctx context.Context, r steps.Record) error {
	s, err := e.t.EvalString(&tmpl.Scope{Item: value(r), Index: r.Index, Vars: e.env.Vars, Env: e.env.Env, Ctx: ctx})
	if err != nil {
		return fmt.Errorf("print template, item %d: %v", r.Index, err)
	}
	e.buf.Reset()
	e.buf.WriteString(s)
	if !strings.HasSuffix(s, "\n") {
		e.buf.WriteByte('\n')
	}
	_, err = e.w.Write(e.buf.Bytes())
	return err
}

func (e *templateEnc) finish() error { return nil }
