// Package mock is what a pipeline finds outside the process under
// `flow test`: HTTP responses for fetch, program outcomes for exec, and a
// sandbox of fixture files for the kinds that read and write files. Nothing
// unmocked gets through: a request, a program run or a file read that no
// mock covers fails its item with class 'unmocked' and is recorded, so the
// test fails even when the stage would skip the item.
//
// The flow test command decodes a test case's `mocks:` section into a Set
// (conf.Decode, like any options struct: positions on every problem), then
// for each run of the case:
//
//	rec, err := set.Install(testDir, pipeline.Dir) // conf.Diags, positioned
//	defer rec.Close()                              // removes the sandbox
//	// every stage's steps.Env gets Outside = rec (engine.Options.Outside)
//	// run the pipeline on the thread runner only: a worker process or a
//	// cluster worker builds its steps without the mocks
//	rec.Unmocked()   // accesses nothing mocked: each one fails the test
//	rec.Requests()   // every HTTP request, secrets redacted
//	rec.Calls()      // every program run
//	rec.Output(path) // the content of a file the pipeline wrote
//
// Latency is waited on clock.From(ctx), so on the virtual clock of a test it
// is instant and exact, and counts against timeouts like a slow server.
package mock
