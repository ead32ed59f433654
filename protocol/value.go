package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/flowrun/flow/internal/box"
	"github.com/flowrun/flow/internal/decimal"
)

// AppendValue appends the JSON encoding of a JSON-shaped value to buf.
//
// Unlike encoding/json it keeps the distinction the steps contract makes
// between int64 and float64: a float64 with an integral value is written with
// a trailing ".0" (3.0, not 3), so that ParseValue gives back a float64, and
// integers come back as int64. Map keys are written sorted, so equal values
// encode to equal bytes. Values of other types (structs, typed slices and
// maps) go through encoding/json and come back in their generic form.
// NaN and infinities have no JSON form and are an error.
func AppendValue(buf []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(buf, "null"...), nil
	case bool:
		if x {
			return append(buf, "true"...), nil
		}
		return append(buf, "false"...), nil
	case string:
		return appendString(buf, x), nil
	case int64:
		return decimal.AppendInt(buf, x), nil
	case int:
		return decimal.AppendInt(buf, int64(x)), nil
	case int32:
		return strconv.AppendInt(buf, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(buf, int64(x), 10), nil
	case int8:
		return strconv.AppendInt(buf, int64(x), 10), nil
	case uint8:
		return strconv.AppendUint(buf, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(buf, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(buf, uint64(x), 10), nil
	case uint:
		return appendUint(buf, uint64(x)), nil
	case uint64:
		return appendUint(buf, x), nil
	case float64:
		return appendFloat(buf, x)
	case float32:
		return appendFloat(buf, float64(x))
	case json.Number:
		// Written as it is, whatever its size: a json.Number is a number
		// no int64 or float64 holds exactly (see steps.JSONNumbers).
		if !validNumber(x) {
			return buf, fmt.Errorf("invalid number %q", string(x))
		}
		return append(buf, x...), nil
	case []any:
		buf = append(buf, '[')
		for i, e := range x {
			if i > 0 {
				buf = append(buf, ',')
			}
			var err error
			if buf, err = AppendValue(buf, e); err != nil {
				return buf, err
			}
		}
		return append(buf, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		buf = append(buf, '{')
		for i, k := range keys {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, k)
			buf = append(buf, ':')
			var err error
			if buf, err = AppendValue(buf, x[k]); err != nil {
				return buf, fmt.Errorf("%s: %w", k, err)
			}
		}
		return append(buf, '}'), nil
	case []string:
		buf = append(buf, '[')
		for i, s := range x {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendString(buf, s)
		}
		return append(buf, ']'), nil
	case map[string]string:
		m := make(map[string]any, len(x))
		for k, s := range x {
			m[k] = s
		}
		return AppendValue(buf, m)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return buf, fmt.Errorf("value of type %T cannot be sent to or from a worker process: %w", v, err)
	}
	return append(buf, b...), nil
}

// uint64 above MaxInt64 has no int64 form: send it as a float, as
// conf.Normalize does.
func appendUint(buf []byte, x uint64) []byte {
	if x > math.MaxInt64 {
		b, _ := appendFloat(buf, float64(x))
		return b
	}
	return strconv.AppendUint(buf, x, 10)
}

func appendFloat(buf []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return buf, fmt.Errorf("the number %v has no JSON form", f)
	}
	start := len(buf)
	buf = strconv.AppendFloat(buf, f, 'g', -1, 64)
	for _, c := range buf[start:] {
		if c == '.' || c == 'e' || c == 'E' {
			return buf, nil
		}
	}
	return append(buf, '.', '0'), nil
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// with encoding/json; unlike it, <, > and & are left alone.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript readers of
		// logged frames; escaping them costs nothing.
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// ParseValue parses one JSON value (surrounding white space allowed) into
// its JSON-shaped Go form: nil, bool, int64 (numbers without fraction or
// exponent that fit), float64, string, []any, map[string]any.
func ParseValue(data []byte) (any, error) {
	p := parser{data: data}
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.pos != len(p.data) {
		return nil, p.errorf("unexpected %q after the value", p.data[p.pos])
	}
	return v, nil
}

// maxDepth bounds nesting so that a hostile frame cannot exhaust the stack.
const maxDepth = 10000

type parser struct {
	data []byte
	pos  int
	ints []int64 // the chunk whole numbers are boxed from (box)
}

// intChunk is how many whole numbers share one allocation (box): enough
// that a frame of cheap items allocates a few times, not once per number,
// few enough that a value kept long keeps little else alive (512 bytes).
const intChunk = 64

// box returns n as an interface value. Go allocates 8 bytes for each int64
// it boxes beyond the first 256, and a frame of cheap items is mostly such
// numbers: that allocation was the larger part of reading one. box puts
// them in a chunk of intChunk instead, each interface pointing at its own
// element, written once before it is boxed and never again, as Go's own
// boxed values are.
func (p *parser) box(n int64) any {
	if uint64(n) < 256 {
		return n // Go boxes these without allocating
	}
	if len(p.ints) == cap(p.ints) {
		p.ints = make([]int64, 0, intChunk)
	}
	p.ints = append(p.ints, n)
	return box.Int64At(&p.ints[len(p.ints)-1])
}

var errEOF = errors.New("unexpected end of JSON")

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", p.pos, fmt.Sprintf(format, args...))
}

func (p *parser) ws() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// expect skips white space and consumes c.
func (p *parser) expect(c byte) error {
	p.ws()
	if p.pos >= len(p.data) {
		return errEOF
	}
	if p.data[p.pos] != c {
		return p.errorf("want %q, got %q", c, p.data[p.pos])
	}
	p.pos++
	return nil
}

// more is used inside arrays and objects: after an element it consumes ','
// and reports true, or consumes the closing byte and reports false.
func (p *parser) more(closing byte) (bool, error) {
	p.ws()
	if p.pos >= len(p.data) {
		return false, errEOF
	}
	switch p.data[p.pos] {
	case ',':
		p.pos++
		return true, nil
	case closing:
		p.pos++
		return false, nil
	}
	return false, p.errorf("want ',' or %q, got %q", closing, p.data[p.pos])
}

// empty consumes closing if it comes next (an empty array or object).
func (p *parser) empty(closing byte) bool {
	p.ws()
	if p.pos < len(p.data) && p.data[p.pos] == closing {
		p.pos++
		return true
	}
	return false
}

func (p *parser) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, p.errorf("nested deeper than %d", maxDepth)
	}
	p.ws()
	if p.pos >= len(p.data) {
		return nil, errEOF
	}
	switch c := p.data[p.pos]; {
	case c == '"':
		return p.string()
	case c == '{':
		p.pos++
		m := map[string]any{}
		if p.empty('}') {
			return m, nil
		}
		for {
			p.ws()
			if p.pos >= len(p.data) {
				return nil, errEOF
			}
			if p.data[p.pos] != '"' {
				return nil, p.errorf("want a string key, got %q", p.data[p.pos])
			}
			k, err := p.string()
			if err != nil {
				return nil, err
			}
			if err := p.expect(':'); err != nil {
				return nil, err
			}
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			m[k] = v
			more, err := p.more('}')
			if err != nil {
				return nil, err
			}
			if !more {
				return m, nil
			}
		}
	case c == '[':
		p.pos++
		a := []any{}
		if p.empty(']') {
			return a, nil
		}
		for {
			v, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
			more, err := p.more(']')
			if err != nil {
				return nil, err
			}
			if !more {
				return a, nil
			}
		}
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		return nil, p.errorf("unexpected %q", c)
	}
}

func (p *parser) literal(word string) error {
	if len(p.data)-p.pos < len(word) || string(p.data[p.pos:p.pos+len(word)]) != word {
		return p.errorf("want %s", word)
	}
	p.pos += len(word)
	return nil
}

// number parses a JSON number: int64 when it has neither fraction nor
// exponent and fits, float64 when it has and fits. Beyond them (an integer
// past 64 bits, 1e400) it stays a json.Number with its digits, as
// steps.JSONNumbers leaves it: a value crossing to a worker and back keeps
// every digit.
func (p *parser) number() (any, error) {
	if n, ok, err := p.smallInt(); ok || err != nil {
		if err != nil {
			return nil, err
		}
		return p.box(n), nil
	}
	return p.anyNumber()
}

// smallInt parses a number that is a whole number of fewer than 19 digits
// (no int64 overflow possible) without boxing it: ok is false, with p
// unmoved, for any other number.
func (p *parser) smallInt() (n int64, ok bool, err error) {
	i := p.pos
	neg := i < len(p.data) && p.data[i] == '-'
	if neg {
		i++
	}
	digits := i
	for i < len(p.data) && i-digits < 19 && p.data[i] >= '0' && p.data[i] <= '9' {
		n = n*10 + int64(p.data[i]-'0')
		i++
	}
	if i == digits || i-digits == 19 {
		return 0, false, nil
	}
	if i < len(p.data) {
		if c := p.data[i]; c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' {
			return 0, false, nil
		}
	}
	if p.data[digits] == '0' && i > digits+1 {
		return 0, false, p.errorf("invalid number %q", p.data[p.pos:i])
	}
	if neg {
		n = -n
	}
	p.pos = i
	return n, true, nil
}

func (p *parser) anyNumber() (any, error) {
	start := p.pos
	isFloat := false
	if p.data[p.pos] == '-' {
		p.pos++
	}
	digits := p.pos
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c >= '0' && c <= '9':
		case c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-':
			isFloat = true
		default:
			goto done
		}
		p.pos++
	}
done:
	s := p.data[start:p.pos]
	if p.pos == digits || (p.data[digits] == '0' && p.pos > digits+1 && p.data[digits+1] >= '0' && p.data[digits+1] <= '9') {
		return nil, p.errorf("invalid number %q", s)
	}
	if !isFloat {
		// Fast path for the common small integer.
		if len(s) < 19 {
			var n int64
			for _, c := range s[digits-start:] {
				n = n*10 + int64(c-'0')
			}
			if s[0] == '-' {
				n = -n
			}
			return n, nil
		}
		if n, err := strconv.ParseInt(string(s), 10, 64); err == nil {
			return n, nil
		}
		if validNumber(json.Number(s)) {
			return json.Number(s), nil
		}
	}
	f, err := strconv.ParseFloat(string(s), 64)
	if errors.Is(err, strconv.ErrRange) && !math.IsInf(f, 0) {
		err = nil // underflow to zero or a subnormal: keep it, as encoding/json does
	}
	if err != nil {
		if math.IsInf(f, 0) && validNumber(json.Number(s)) {
			return json.Number(s), nil
		}
		return nil, p.errorf("invalid number %q", s)
	}
	return f, nil
}

// validNumber reports whether n is a number in JSON's grammar: an optional
// minus, an integer without leading zeros, an optional fraction and
// exponent. (strconv accepts more: "Inf", "0x1p4", "1_000".)
func validNumber(n json.Number) bool {
	s, i := string(n), 0
	digits := func() int {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - start
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	if i < len(s) && s[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// int parses a JSON integer into an int64 (frame fields: ids, indexes).
func (p *parser) int() (int64, error) {
	p.ws()
	if p.pos >= len(p.data) {
		return 0, errEOF
	}
	if n, ok, err := p.smallInt(); ok || err != nil {
		return n, err
	}
	v, err := p.anyNumber()
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, p.errorf("want a whole number, got %v", v)
	}
	return n, nil
}

func (p *parser) string() (string, error) {
	p.pos++ // opening quote
	start := p.pos
	// Fast path: no escapes, valid UTF-8.
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		if c == '"' {
			s := p.data[start:p.pos]
			p.pos++
			if utf8.Valid(s) {
				return string(s), nil
			}
			return string([]rune(string(s))), nil // invalid bytes become U+FFFD
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return "", p.errorf("control character in string")
		}
		p.pos++
	}
	if p.pos >= len(p.data) {
		return "", errEOF
	}
	buf := append([]byte(nil), p.data[start:p.pos]...)
	for p.pos < len(p.data) {
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			if !utf8.Valid(buf) {
				return string([]rune(string(buf))), nil
			}
			return string(buf), nil
		case c < 0x20:
			return "", p.errorf("control character in string")
		case c != '\\':
			buf = append(buf, c)
			p.pos++
			continue
		}
		p.pos++
		if p.pos >= len(p.data) {
			return "", errEOF
		}
		e := p.data[p.pos]
		p.pos++
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, err := p.hex4()
			if err != nil {
				return "", err
			}
			if utf16.IsSurrogate(r) {
				r2 := utf8.RuneError
				if p.pos+1 < len(p.data) && p.data[p.pos] == '\\' && p.data[p.pos+1] == 'u' {
					save := p.pos
					p.pos += 2
					lo, err := p.hex4()
					if err != nil {
						return "", err
					}
					if d := utf16.DecodeRune(r, lo); d != utf8.RuneError {
						r2 = d
					} else {
						p.pos = save
					}
				}
				r = r2
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.errorf("invalid escape \\%c", e)
		}
	}
	return "", errEOF
}

func (p *parser) hex4() (rune, error) {
	if len(p.data)-p.pos < 4 {
		return 0, errEOF
	}
	var r rune
	for _, c := range p.data[p.pos : p.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, p.errorf("invalid \\u escape")
		}
	}
	p.pos += 4
	return r, nil
}

// raw returns the bytes of the next value without converting it.
func (p *parser) raw() ([]byte, error) {
	p.ws()
	start := p.pos
	if _, err := p.value(0); err != nil {
		return nil, err
	}
	return p.data[start:p.pos], nil
}
