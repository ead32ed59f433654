package tmpl

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// held is an item the test can watch die: it has pointers, so the runtime
// never packs it with other small objects, and its finalizer runs once
// nothing reaches it.
type held struct {
	N   int64
	pad [4]*int
}

// A reused VM must not keep the previous item alive: not on its stack, not
// in a 'let' variable, not in the scope of a loop.
func TestReusedVMKeepsNoItem(t *testing.T) {
	for _, src := range []string{
		"${ item.N * 2 }",
		"${ [item, item][1].N }",
		"${ let x = item; x.N + 1 }",
		"${ map([item, item], #.N)[0] }",
		"${ all([item], #.N > 0) }",
		"a ${ let y = item; y.N } b ${ filter([item], #.N > 0)[0].N }",
	} {
		tp, err := Compile(src)
		if err != nil {
			t.Fatal(err)
		}
		st := new(evalState) // owned by the test, not the pool that GC empties
		var freed atomic.Bool
		func() {
			it := &held{N: 3}
			runtime.SetFinalizer(it, func(*held) { freed.Store(true) })
			if _, err := st.eval(tp, &Scope{Item: it}, nil); err != nil {
				t.Fatalf("%s: %v", src, err)
			}
		}()
		for i := 0; i < 100 && !freed.Load(); i++ {
			runtime.GC()
			time.Sleep(time.Millisecond)
		}
		if !freed.Load() {
			t.Errorf("%s: the item is still reachable after its evaluation: the reused VM keeps it", src)
		}
		runtime.KeepAlive(st)
	}
}

// One VM serves evaluation after evaluation of different templates, loops
// and 'let' variables included: each result is the one a fresh VM gives.
func TestReusedVMResults(t *testing.T) {
	srcs := []string{
		"${ item * 2 }",
		"${ let x = item + 1; x * x }",
		"${ map(1..item, # * 2) }",
		"${ reduce(1..item, #acc + #, 0) }",
		"n=${ item } sq=${ let s = item * item; s } l=${ len(filter(1..item, # % 2 == 0)) }",
		"${ item > 2 ? fail('big') : item }",
		"${ 10 / (item - 2) }",
	}
	var tps []*T
	for _, s := range srcs {
		tp, err := Compile(s)
		if err != nil {
			t.Fatal(err)
		}
		tps = append(tps, tp)
	}
	fresh := func(tp *T, item int64) string {
		v, err := new(evalState).eval(tp, &Scope{Item: item}, nil)
		return fmt.Sprintf("%#v %v", v, err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := new(evalState)
			for round := 0; round < 20; round++ {
				for i, tp := range tps {
					item := int64((round+i+g)%5 + 1)
					v, err := st.eval(tp, &Scope{Item: item}, nil)
					if got, want := fmt.Sprintf("%#v %v", v, err), fresh(tp, item); got != want {
						t.Errorf("%s with item %d on a reused VM: %s, on a fresh one: %s", srcs[i], item, got, want)
					}
					// And through the pool that Eval uses.
					v, err = tp.Eval(&Scope{Item: item})
					if got, want := fmt.Sprintf("%#v %v", v, err), fresh(tp, item); got != want {
						t.Errorf("%s with item %d through Eval: %s, want %s", srcs[i], item, got, want)
					}
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkEvalSingle(b *testing.B) {
	tp, err := Compile("${ item * 2 }")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := tp.Eval(&Scope{Item: int64(i)}); err != nil {
			b.Fatal(err)
		}
	}
}
