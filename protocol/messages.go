package protocol

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/flowrun/flow/internal/decimal"
)

// Version is the protocol version carried by Hello and Ready. A worker that
// speaks another version refuses the Hello. Version 2 added the compact
// forms of items and results (AppendCompact); a reader of version 2 reads
// both forms.
const Version = 2

// Type is the first byte of a frame body and says which message follows.
type Type byte

const (
	THello     Type = 'H' // parent -> worker, first frame: what to build
	TReady     Type = 'R' // worker -> parent, answer to Hello
	TItems     Type = 'I' // parent -> worker: a batch of items to run
	TResults   Type = 'O' // worker -> parent: a batch of results
	TCancel    Type = 'C' // parent -> worker: items no longer wanted
	THeartbeat Type = 'B' // worker -> parent, periodic: still alive
	TShutdown  Type = 'Q' // parent -> worker: finish held items, then exit
)

func (t Type) String() string {
	switch t {
	case THello:
		return "hello"
	case TReady:
		return "ready"
	case TItems, TItemsCompact:
		return "items"
	case TResults, TResultsCompact:
		return "results"
	case TCancel:
		return "cancel"
	case THeartbeat:
		return "heartbeat"
	case TShutdown:
		return "shutdown"
	}
	return fmt.Sprintf("type(%#x)", byte(t))
}

// Message is one of *Hello, *Ready, *Items, *Results, *Cancel, *Heartbeat,
// *Shutdown.
type Message interface {
	Type() Type
}

// Hello tells a worker what to build: the pipeline exactly as the parent
// parsed it, the effective variables and the stage to serve.
type Hello struct {
	Version int `json:"version"`
	// File and Dir locate the pipeline; relative paths in options resolve
	// against Dir. Source is the text of the file.
	File   string `json:"file"`
	Dir    string `json:"dir"`
	Source string `json:"source"`
	// Vars are the effective variable values (defaults with overrides
	// applied); they replace the defaults read from Source.
	Vars map[string]any `json:"-"`
	// Stage is the name of the stage whose step the worker runs.
	Stage string `json:"stage"`
	// Workers is the stage's worker count, Worker this worker's slot (0..).
	Workers int `json:"workers"`
	Worker  int `json:"worker"`
	// Heartbeat is how often the worker must send a Heartbeat (0: never).
	Heartbeat time.Duration `json:"heartbeat_ns"`
	// Memory is the limit in bytes the parent enforces on the worker (0:
	// none); the worker keeps its own heap under it.
	Memory int64 `json:"memory,omitempty"`
}

// Ready answers a Hello: the worker built the step (Err nil) or could not.
type Ready struct {
	Version int        `json:"version"`
	PID     int        `json:"pid"`
	Err     *ErrorInfo `json:"error,omitempty"`
}

// Item is one attempt of one item. ID is chosen by the parent and unique
// within a connection; Index is the item's position in the source stream.
type Item struct {
	ID    uint64
	Index int64
	Value any
	// Raw, when set, is Value already encoded with AppendValue; senders use
	// it to find values that cannot be encoded before building a batch.
	Raw []byte
}

// Items is a batch of items. A worker runs the items it holds one at a
// time, in the order received, and answers each exactly once.
type Items []Item

// Result answers one Item: a value, or an error when Err is set.
type Result struct {
	ID    uint64
	Value any
	Raw   []byte // as for Item.Raw
	Err   *ErrorInfo
}

// Results is a batch of results, in the order the items ran.
type Results struct {
	// Busy is the time spent running these items; the parent uses it to
	// size batches.
	Busy    time.Duration
	Results []Result
}

// ErrorInfo is an item error as it crosses the wire. It carries what the
// engine's retry policy needs (see steps.Error).
type ErrorInfo struct {
	Message    string        `json:"message"`
	Class      string        `json:"class,omitempty"`
	Permanent  bool          `json:"permanent,omitempty"`
	RetryAfter time.Duration `json:"retry_after_ns,omitempty"`
}

// Cancel lists items the parent no longer wants (their timeout passed or the
// run is stopping). A worker skips a listed item it has not started, cancels
// the context of one it is running, and answers each with a "cancelled"
// error.
type Cancel []uint64

// Heartbeat tells the parent the worker is alive: Done items so far, and the
// ID of the item running now (0 if none).
type Heartbeat struct {
	Done    int64  `json:"done"`
	Running uint64 `json:"running,omitempty"`
}

// Shutdown asks the worker to finish the items it holds, send their results
// and exit with status 0. Closing the worker's input has the same effect.
type Shutdown struct{}

func (*Hello) Type() Type     { return THello }
func (*Ready) Type() Type     { return TReady }
func (*Items) Type() Type     { return TItems }
func (*Results) Type() Type   { return TResults }
func (*Cancel) Type() Type    { return TCancel }
func (*Heartbeat) Type() Type { return THeartbeat }
func (*Shutdown) Type() Type  { return TShutdown }

// AppendBody appends a message's frame body (type byte, then payload) to
// buf. Transports that frame messages themselves (a queue message per body)
// use it directly; Writer adds a length prefix.
func AppendBody(buf []byte, m Message) ([]byte, error) {
	buf = append(buf, byte(m.Type()))
	switch m := m.(type) {
	case *Hello:
		return appendHello(buf, m)
	case *Items:
		return appendItems(buf, *m)
	case *Results:
		return appendResults(buf, m)
	case *Cancel:
		buf = append(buf, '[')
		for i, id := range *m {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendUint(buf, id)
		}
		return append(buf, ']'), nil
	case *Shutdown:
		return append(buf, "{}"...), nil
	default: // Ready, Heartbeat: plain structs
		b, err := json.Marshal(m)
		if err != nil {
			return buf, err
		}
		return append(buf, b...), nil
	}
}

func appendHello(buf []byte, h *Hello) ([]byte, error) {
	b, err := json.Marshal(h)
	if err != nil {
		return buf, err
	}
	// Splice "vars" into the object by hand: AppendValue keeps int64 and
	// float64 apart where encoding/json would not.
	buf = append(buf, b[:len(b)-1]...)
	buf = append(buf, `,"vars":`...)
	if h.Vars == nil {
		buf = append(buf, "{}"...)
	} else if buf, err = AppendValue(buf, h.Vars); err != nil {
		return buf, fmt.Errorf("vars.%w", err)
	}
	return append(buf, '}'), nil
}

func appendItems(buf []byte, items Items) ([]byte, error) {
	buf = append(buf, '[')
	for i, it := range items {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '[')
		buf = appendUint(buf, it.ID)
		buf = append(buf, ',')
		buf = appendInt(buf, it.Index)
		buf = append(buf, ',')
		var err error
		if buf, err = appendRawOr(buf, it.Raw, it.Value); err != nil {
			return buf, fmt.Errorf("item %d: %w", it.Index, err)
		}
		buf = append(buf, ']')
	}
	return append(buf, ']'), nil
}

func appendResults(buf []byte, r *Results) ([]byte, error) {
	buf = append(buf, `{"busy_ns":`...)
	buf = appendInt(buf, int64(r.Busy))
	buf = append(buf, `,"results":[`...)
	for i, res := range r.Results {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '[')
		buf = appendUint(buf, res.ID)
		buf = append(buf, ',')
		if res.Err != nil {
			b, err := json.Marshal(res.Err)
			if err != nil {
				return buf, err
			}
			buf = append(buf, "null,"...)
			buf = append(buf, b...)
		} else {
			var err error
			if buf, err = appendRawOr(buf, res.Raw, res.Value); err != nil {
				return buf, fmt.Errorf("result %d: %w", res.ID, err)
			}
		}
		buf = append(buf, ']')
	}
	return append(buf, "]}"...), nil
}

func appendRawOr(buf, raw []byte, v any) ([]byte, error) {
	if raw != nil {
		return append(buf, raw...), nil
	}
	return AppendValue(buf, v)
}

func appendInt(buf []byte, n int64) []byte { return decimal.AppendInt(buf, n) }

// ParseBody decodes a frame body made by AppendBody.
func ParseBody(body []byte) (Message, error) { return parseBody(body, nil) }

// scratch holds the slices of the last Items and Results a Reader
// returned, for the next to reuse.
type scratch struct {
	items   Items
	results Results
}

func parseBody(body []byte, sc *scratch) (Message, error) {
	if len(body) == 0 {
		return nil, fmt.Errorf("protocol: empty frame")
	}
	t, payload := Type(body[0]), body[1:]
	var (
		m   Message
		err error
	)
	switch t {
	case THello:
		m, err = parseHello(payload)
	case TReady:
		var r Ready
		err, m = json.Unmarshal(payload, &r), &r
	case TItems:
		m, err = parseItems(payload, sc)
	case TResults:
		m, err = parseResults(payload, sc)
	case TItemsCompact:
		m, err = parseItemsCompact(payload, sc)
	case TResultsCompact:
		m, err = parseResultsCompact(payload, sc)
	case TCancel:
		m, err = parseCancel(payload)
	case THeartbeat:
		var h Heartbeat
		err, m = json.Unmarshal(payload, &h), &h
	case TShutdown:
		m = &Shutdown{}
	default:
		return nil, fmt.Errorf("protocol: unknown message type %s", t)
	}
	if err != nil {
		return nil, fmt.Errorf("protocol: bad %s message: %w", t, err)
	}
	return m, nil
}

func parseHello(payload []byte) (*Hello, error) {
	var w struct {
		Hello
		Vars json.RawMessage `json:"vars"`
	}
	if err := json.Unmarshal(payload, &w); err != nil {
		return nil, err
	}
	h := w.Hello
	h.Vars = map[string]any{}
	if len(w.Vars) > 0 {
		v, err := ParseValue(w.Vars)
		if err != nil {
			return nil, fmt.Errorf("vars: %w", err)
		}
		m, ok := v.(map[string]any)
		if !ok && v != nil {
			return nil, fmt.Errorf("vars: want an object")
		}
		if m != nil {
			h.Vars = m
		}
	}
	return &h, nil
}

func parseItems(payload []byte, sc *scratch) (*Items, error) {
	p := parser{data: payload}
	items, ret := Items{}, new(Items)
	if sc != nil {
		clear(sc.items)
		items, ret = sc.items[:0], &sc.items
	}
	defer func() { *ret = items }()
	if err := p.expect('['); err != nil {
		return nil, err
	}
	if p.empty(']') {
		return ret, p.end()
	}
	for {
		var it Item
		if err := p.expect('['); err != nil {
			return nil, err
		}
		id, err := p.id()
		if err != nil {
			return nil, err
		}
		if err := p.expect(','); err != nil {
			return nil, err
		}
		if it.Index, err = p.int(); err != nil {
			return nil, err
		}
		if err := p.expect(','); err != nil {
			return nil, err
		}
		if it.Value, err = p.value(0); err != nil {
			return nil, err
		}
		if err := p.expect(']'); err != nil {
			return nil, err
		}
		it.ID = id
		items = append(items, it)
		more, err := p.more(']')
		if err != nil {
			return nil, err
		}
		if !more {
			return ret, p.end()
		}
	}
}

func parseResults(payload []byte, sc *scratch) (*Results, error) {
	p := parser{data: payload}
	r := &Results{}
	var reuse []Result
	if sc != nil {
		clear(sc.results.Results)
		reuse = sc.results.Results[:0]
		r = &sc.results
		*r = Results{}
		defer func() {
			if r.Results == nil {
				r.Results = reuse
			}
		}()
	}
	if err := p.expect('{'); err != nil {
		return nil, err
	}
	if p.empty('}') {
		return r, p.end()
	}
	for {
		p.ws()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.errorf("want a key")
		}
		key, err := p.string()
		if err != nil {
			return nil, err
		}
		if err := p.expect(':'); err != nil {
			return nil, err
		}
		switch key {
		case "busy_ns":
			n, err := p.int()
			if err != nil {
				return nil, err
			}
			r.Busy = time.Duration(n)
		case "results":
			if r.Results, err = p.resultList(reuse); err != nil {
				return nil, err
			}
		default: // newer senders may add fields
			if _, err := p.value(0); err != nil {
				return nil, err
			}
		}
		more, err := p.more('}')
		if err != nil {
			return nil, err
		}
		if !more {
			return r, p.end()
		}
	}
}

func (p *parser) resultList(out []Result) ([]Result, error) {
	if err := p.expect('['); err != nil {
		return nil, err
	}
	if p.empty(']') {
		return out, nil
	}
	for {
		var res Result
		if err := p.expect('['); err != nil {
			return nil, err
		}
		id, err := p.id()
		if err != nil {
			return nil, err
		}
		res.ID = id
		if err := p.expect(','); err != nil {
			return nil, err
		}
		if res.Value, err = p.value(0); err != nil {
			return nil, err
		}
		more, err := p.more(']')
		if err != nil {
			return nil, err
		}
		if more {
			raw, err := p.raw()
			if err != nil {
				return nil, err
			}
			res.Err = &ErrorInfo{}
			if err := json.Unmarshal(raw, res.Err); err != nil {
				return nil, fmt.Errorf("result %d: error: %w", res.ID, err)
			}
			res.Value = nil
			if err := p.expect(']'); err != nil {
				return nil, err
			}
		}
		out = append(out, res)
		if more, err = p.more(']'); err != nil {
			return nil, err
		} else if !more {
			return out, nil
		}
	}
}

func parseCancel(payload []byte) (*Cancel, error) {
	p := parser{data: payload}
	c := Cancel{}
	if err := p.expect('['); err != nil {
		return nil, err
	}
	if p.empty(']') {
		return &c, p.end()
	}
	for {
		id, err := p.id()
		if err != nil {
			return nil, err
		}
		c = append(c, id)
		more, err := p.more(']')
		if err != nil {
			return nil, err
		}
		if !more {
			return &c, p.end()
		}
	}
}

// id parses an item ID: a whole number that is not negative (a negative one
// would wrap around in a uint64 and name another item).
func (p *parser) id() (uint64, error) {
	n, err := p.int()
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, p.errorf("want an item id (a whole number >= 0), got %d", n)
	}
	return uint64(n), nil
}

func (p *parser) end() error {
	p.ws()
	if p.pos != len(p.data) {
		return p.errorf("unexpected data after the message")
	}
	return nil
}
