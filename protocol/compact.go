package protocol

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// The compact forms of items and results (protocol version 2) carry IDs,
// indexes and counts as varints instead of decimal text: a batch of cheap
// items is mostly numbers, and parsing and printing them was a good part
// of what an item cost on both sides of a pipe. The values stay JSON
// (AppendValue), so a value means the same in either form.
//
// items (type 'i'):
//
//	uvarint  n
//	n times  varint: ID minus the previous ID (the first: minus 0)
//	n times  varint: index minus the previous index
//	n values, JSON, separated by ','
//
// results (type 'o'):
//
//	varint   busy_ns
//	uvarint  n
//	n times  varint: ID minus the previous ID
//	n bytes  0: the value is a result, 1: it is an error object
//	n values, JSON, separated by ','
//
// IDs and indexes of consecutive items differ by one, so each takes a
// byte. Varints are encoding/binary's (zig-zag for signed ones); the
// differences wrap around in 64 bits, so any ID and index round-trips.
const (
	TItemsCompact   Type = 'i' // parent -> worker: Items in the compact form
	TResultsCompact Type = 'o' // worker -> parent: Results in the compact form
)

// AppendCompact is AppendBody with *Items and *Results in their compact
// form, which a peer of protocol version 2 or later reads; other messages
// are as AppendBody writes them.
func AppendCompact(buf []byte, m Message) ([]byte, error) {
	switch m := m.(type) {
	case *Items:
		return appendItemsCompact(append(buf, byte(TItemsCompact)), *m)
	case *Results:
		return appendResultsCompact(append(buf, byte(TResultsCompact)), m)
	}
	return AppendBody(buf, m)
}

func appendItemsCompact(buf []byte, items Items) ([]byte, error) {
	buf = binary.AppendUvarint(buf, uint64(len(items)))
	var id uint64
	for _, it := range items {
		buf = binary.AppendVarint(buf, int64(it.ID-id))
		id = it.ID
	}
	var index int64
	for _, it := range items {
		buf = binary.AppendVarint(buf, int64(uint64(it.Index)-uint64(index)))
		index = it.Index
	}
	for i, it := range items {
		if i > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, err = appendRawOr(buf, it.Raw, it.Value); err != nil {
			return buf, fmt.Errorf("item %d: %w", it.Index, err)
		}
	}
	return buf, nil
}

func appendResultsCompact(buf []byte, r *Results) ([]byte, error) {
	buf = binary.AppendVarint(buf, int64(r.Busy))
	buf = binary.AppendUvarint(buf, uint64(len(r.Results)))
	var id uint64
	for _, res := range r.Results {
		buf = binary.AppendVarint(buf, int64(res.ID-id))
		id = res.ID
	}
	for _, res := range r.Results {
		if res.Err != nil {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
	}
	for i, res := range r.Results {
		if i > 0 {
			buf = append(buf, ',')
		}
		if res.Err != nil {
			b, err := json.Marshal(res.Err)
			if err != nil {
				return buf, err
			}
			buf = append(buf, b...)
			continue
		}
		var err error
		if buf, err = appendRawOr(buf, res.Raw, res.Value); err != nil {
			return buf, fmt.Errorf("result %d: %w", res.ID, err)
		}
	}
	return buf, nil
}

// compactCount reads the count of a compact batch: every element takes at
// least per bytes, so a count the rest of the frame cannot hold is refused
// before anything is allocated for it.
func compactCount(data []byte, pos *int, per int) (int, error) {
	n, k := binary.Uvarint(data[*pos:])
	if k <= 0 {
		return 0, fmt.Errorf("bad count at byte %d", *pos)
	}
	*pos += k
	if n > uint64(len(data)-*pos)/uint64(per) {
		return 0, fmt.Errorf("a count of %d is more than the %d bytes left hold", n, len(data)-*pos)
	}
	return int(n), nil
}

// compactIDs reads n ID differences into set(i, id). IDs above 2^63-1 are
// refused, as in the JSON form (docs/protocol.md: below 2^63).
func compactIDs(data []byte, pos *int, n int, set func(i int, id uint64)) error {
	var id uint64
	for i := range n {
		d, k := binary.Varint(data[*pos:])
		if k <= 0 {
			return fmt.Errorf("bad id at byte %d", *pos)
		}
		*pos += k
		id += uint64(d)
		if id > math.MaxInt64 {
			return fmt.Errorf("item id %d is not below 2^63", id)
		}
		set(i, id)
	}
	return nil
}

func parseItemsCompact(payload []byte, sc *scratch) (*Items, error) {
	pos := 0
	// An item takes at least 3 bytes: its id, its index and its value.
	n, err := compactCount(payload, &pos, 3)
	if err != nil {
		return nil, err
	}
	items, ret := Items(nil), new(Items)
	if sc != nil {
		clear(sc.items)
		items, ret = sc.items, &sc.items
	}
	if items == nil || cap(items) < n {
		items = make(Items, n)
	} else {
		items = items[:n]
		clear(items)
	}
	defer func() { *ret = items }()
	if err := compactIDs(payload, &pos, n, func(i int, id uint64) { items[i].ID = id }); err != nil {
		return nil, err
	}
	var index int64
	for i := range items {
		d, k := binary.Varint(payload[pos:])
		if k <= 0 {
			return nil, fmt.Errorf("bad index at byte %d", pos)
		}
		pos += k
		index = int64(uint64(index) + uint64(d))
		items[i].Index = index
	}
	p := parser{data: payload, pos: pos}
	for i := range items {
		if i > 0 {
			if err := p.expect(','); err != nil {
				return nil, err
			}
		}
		if items[i].Value, err = p.value(0); err != nil {
			return nil, err
		}
	}
	return ret, p.end()
}

func parseResultsCompact(payload []byte, sc *scratch) (*Results, error) {
	busy, pos := binary.Varint(payload)
	if pos <= 0 {
		return nil, fmt.Errorf("bad busy_ns")
	}
	// A result takes at least 3 bytes: its id, its flag and its value.
	n, err := compactCount(payload, &pos, 3)
	if err != nil {
		return nil, err
	}
	r, out := &Results{}, []Result(nil)
	if sc != nil {
		// The last frame's results go, values and all, whatever this
		// one's size.
		clear(sc.results.Results)
		r, out = &sc.results, sc.results.Results
	}
	switch {
	case n == 0 && sc == nil:
		// as the JSON form reads an empty list: no slice
	case cap(out) < n:
		out = make([]Result, n)
	default:
		out = out[:n]
		if len(out) > len(sc.results.Results) {
			clear(out[len(sc.results.Results):])
		}
	}
	*r = Results{Busy: time.Duration(busy), Results: out}
	if err := compactIDs(payload, &pos, n, func(i int, id uint64) { out[i].ID = id }); err != nil {
		return nil, err
	}
	if n > len(payload)-pos {
		return nil, fmt.Errorf("the frame ends within the flags of its results")
	}
	flags := payload[pos : pos+n]
	pos += n
	p := parser{data: payload, pos: pos}
	for i := range out {
		if i > 0 {
			if err := p.expect(','); err != nil {
				return nil, err
			}
		}
		switch flags[i] {
		case 0:
			// Cheap items' results are mostly small whole numbers: read
			// them without the general parser's dispatch.
			if p.pos < len(p.data) {
				if c := p.data[p.pos]; c >= '0' && c <= '9' || c == '-' {
					n, ok, err := p.smallInt()
					if err != nil {
						return nil, err
					}
					if ok {
						out[i].Value = p.box(n)
						continue
					}
				}
			}
			if out[i].Value, err = p.value(0); err != nil {
				return nil, err
			}
		case 1:
			raw, err := p.raw()
			if err != nil {
				return nil, err
			}
			e := &ErrorInfo{}
			if err := json.Unmarshal(raw, e); err != nil {
				return nil, fmt.Errorf("result %d: error: %w", out[i].ID, err)
			}
			out[i].Err = e
		default:
			return nil, fmt.Errorf("result %d: bad flag %d", out[i].ID, flags[i])
		}
	}
	return r, p.end()
}
