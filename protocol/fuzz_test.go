package protocol

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/flowrun/flow/internal/fuzzguard"
)

// frameSeeds are valid frames of every message type, so the fuzzer starts
// from streams the parser accepts and mutates them into ones it must refuse.
func frameSeeds(t testing.TB) [][]byte {
	msgs := []Message{
		&Hello{Version: Version, File: "p.yaml", Dir: "/tmp/x", Source: "version: 1\n", Stage: "work",
			Vars: map[string]any{"n": int64(3), "ratio": 2.5, "names": []any{"a"}}, Workers: 4, Worker: 2, Heartbeat: time.Second},
		&Ready{Version: Version, PID: 42},
		&Ready{Version: Version, PID: 43, Err: &ErrorInfo{Message: "unknown stage", Class: "error", Permanent: true}},
		&Items{{ID: 1, Index: 0, Value: "a"}, {ID: 2, Index: 7, Value: map[string]any{"k": []any{1.5, int64(-9007199254740993)}}}, {ID: 3, Index: 8, Value: nil}},
		&Results{Busy: 1500 * time.Microsecond, Results: []Result{
			{ID: 1, Value: int64(1)},
			{ID: 2, Err: &ErrorInfo{Message: "HTTP 429", Class: "http_429", RetryAfter: 2 * time.Second}},
		}},
		&Cancel{1, 2, 3},
		&Heartbeat{},
		&Shutdown{},
	}
	var out [][]byte
	var all bytes.Buffer
	for _, compact := range []bool{false, true} {
		for _, m := range msgs {
			if _, ok := m.(*Items); compact && !ok {
				if _, ok := m.(*Results); !ok {
					continue
				}
			}
			var b bytes.Buffer
			w := NewWriter(&b)
			if compact {
				w.Compact()
			}
			if err := w.Write(m); err != nil {
				t.Fatalf("seed %s: %v", m.Type(), err)
			}
			out = append(out, b.Bytes())
			all.Write(b.Bytes())
		}
	}
	return append(out, all.Bytes())
}

// FuzzFrames feeds arbitrary bytes to the frame reader, as a worker's pipe
// would if a step wrote garbage on the protocol descriptor: every frame
// either decodes into a message that re-encodes stably, or the reader
// stops with an error; it never panics, loops or allocates far beyond the
// input.
func FuzzFrames(f *testing.F) {
	for _, s := range frameSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 1, 'Z'})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzguard.Run(t, func(fatalf func(format string, args ...any)) {
			r := NewReader(bytes.NewReader(data))
			// A reader reusing its memory reads the very same messages.
			reusing := NewReader(bytes.NewReader(data))
			reusing.Reuse()
			for i := 0; ; i++ {
				if i > len(data) {
					fatalf("%d messages out of %d bytes: the reader loops", i, len(data))
				}
				m, err := r.Read()
				m2, err2 := reusing.Read()
				if (err == nil) != (err2 == nil) {
					fatalf("reader: %v; reusing reader: %v", err, err2)
				}
				if err == nil {
					b1, _ := AppendBody(nil, m)
					b2, _ := AppendBody(nil, m2)
					if !bytes.Equal(b1, b2) {
						fatalf("reusing reader read %q, reader %q", b2, b1)
					}
				}
				if err != nil {
					if err == io.EOF && i == 0 && len(data) > 0 {
						fatalf("clean EOF on %d bytes of input without a message", len(data))
					}
					if err.Error() == "" {
						fatalf("empty error")
					}
					return
				}
				if m == nil {
					fatalf("nil message without an error")
				}
				reencode(fatalf, m)
			}
		})
	})
}

// FuzzBody decodes arbitrary frame bodies (the part after the length).
func FuzzBody(f *testing.F) {
	seeds := frameSeeds(f)
	for _, s := range seeds[:len(seeds)-1] {
		f.Add(s[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzguard.Run(t, func(fatalf func(format string, args ...any)) {
			m, err := ParseBody(body)
			if err != nil {
				if m != nil {
					fatalf("both a message and an error: %v", err)
				}
				return
			}
			reencode(fatalf, m)
		})
	})
}

// reencode checks that a decoded message encodes, decodes again, and then
// encodes to the same bytes (the first round may normalise: 1.0 and 1 are
// both numbers, key order, escapes).
func reencode(fatalf func(string, ...any), m Message) {
	reencodeWith(fatalf, m, AppendBody)
	reencodeWith(fatalf, m, AppendCompact)
}

func reencodeWith(fatalf func(string, ...any), m Message, AppendBody func([]byte, Message) ([]byte, error)) {
	b1, err := AppendBody(nil, m)
	if err != nil {
		// Values from the wire are always encodable, except numbers JSON
		// cannot carry, which the parser must have refused already.
		fatalf("re-encoding a decoded %s: %v", m.Type(), err)
	}
	m2, err := ParseBody(b1)
	if err != nil {
		fatalf("re-parsing %q: %v", b1, err)
	}
	b2, err := AppendBody(nil, m2)
	if err != nil {
		fatalf("third encoding: %v", err)
	}
	if !bytes.Equal(b1, b2) {
		fatalf("encoding is not stable:\n%q\n%q", b1, b2)
	}
}
