// Package fuzzguard bounds one fuzz input in time: Go's fuzzer notices
// panics but not hangs, and "no input may hang" is half of what the fuzz
// targets check.
package fuzzguard

import (
	"fmt"
	"testing"
	"time"
)

// Hang is far beyond what any input needs, even on a loaded machine.
const Hang = 30 * time.Second

// Run runs body with a bound: an input still running after Hang fails (and is
// saved as a crasher). Inside body, fatalf panics, which the fuzzer also
// records with the input.
func Run(t testing.TB, body func(fatalf func(format string, args ...any))) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		body(func(format string, args ...any) { panic(fmt.Sprintf(format, args...)) })
	}()
	select {
	case <-done:
	case <-time.After(Hang):
		t.Fatalf("no result after %v: the input hangs", Hang)
	}
}
