// Package protocol defines the messages a flow parent exchanges with the
// workers that run a `mode: process` stage, and how they are encoded. It
// knows nothing of processes, pipes or queues: procpool carries the messages
// over pipes to local worker processes, and another transport can carry the
// very same frame bodies over a network queue. See docs/protocol.md for the
// full description with examples.
//
// # Frames
//
// On a byte stream each message is one frame:
//
//	length  uint32, big endian: the size of the body that follows
//	body    type byte, then a JSON payload (or, for the compact forms of
//	        items and results, varints and JSON values: see compact.go)
//
// AppendBody and ParseBody make and read bodies alone, for transports that
// delimit messages themselves; Writer and Reader add and strip the length.
//
// # Values
//
// Items and results are JSON-shaped values (nil, bool, int64, float64,
// string, []any, map[string]any). They are written as JSON, with one rule
// beyond it: a float64 holding a whole number is written with a fraction
// ("3.0"), and a number without fraction or exponent is read back as int64,
// so int64 and float64 survive the round trip.
//
// # Conversation
//
//	parent                          worker
//	Hello     ------------------->            build the stage's step
//	          <-------------------  Ready     (or Ready with error, exit)
//	Items     ------------------->            run them one at a time, in order
//	          <-------------------  Results   (batched), Heartbeat now and then
//	Cancel    ------------------->            skip or cancel listed items
//	Shutdown  ------------------->            finish held items, exit 0
//
// A worker runs the items it holds strictly one after another, in the order
// received, and answers every item exactly once (a cancelled item gets a
// "cancelled" error). So when a worker dies, the oldest unanswered item is
// the one that was running, and the rest never started: the parent fails
// the first and sends the others elsewhere.
package protocol
