// Package procpool runs the items of a `mode: process` stage in worker
// processes: re-executions of the flow binary in a worker role, speaking the
// protocol package's framed messages over pipes. It is the engine's
// RunnerFactory for process mode (Factory) and the worker's entry point
// (IsWorker, WorkerMain).
//
// What a worker process buys over a goroutine is isolation:
//
//   - A worker that dies (SIGKILL, a panic in a goroutine, os.Exit, the
//     kernel's OOM killer) fails only the item it was running, with class
//     "crash". The other items it held, those not started and those done
//     but not yet reported (results travel in batches), run again in
//     another worker with no error and no retry counted, which only the
//     log shows; a replacement starts when there is work. A panic in the step
//     itself is recovered: the item fails with class "crash" and the worker
//     goes on.
//   - When the context of a Do ends (timeout, deadline, complete: first, an
//     interrupted run) while a worker runs the item, the worker and every
//     process it started get SIGTERM, then SIGKILL after Config.KillGrace,
//     and Do returns at once with an error wrapping ctx.Err().
//   - A memory limit (Config.Memory, from the stage's `memory:`) is enforced
//     on the resident memory of each worker plus its descendants, read from
//     /proc; the item running when it is exceeded fails with class "memory".
//   - max_tasks_per_child replaces a worker after that many items.
//
// Throughput comes from batching: items queue in a worker ahead of the one
// it runs, as many as cover about 2 ms of work at the measured time per
// item, and cross the pipe many to a frame. This needs more items in flight
// than there are workers. Pool implements engine.BatchRunner: the engine
// hands it hundreds of items per DoBatch call, whose tasks are made in one
// allocation and answered from the goroutine reading each worker's results,
// with no goroutine or channel per item. Where the engine calls Do instead
// (retries, a stage with limits, a cache in between), Pool implements
// engine.InFlighter: the engine should call Do from up to InFlight()
// goroutines (workers x 128 when the stage has no per-attempt timeout,
// which would otherwise tick while an item waits behind others).
//
// Worker processes are started with FLOW_ROLE=worker; the program's main,
// and the TestMain of tests that run process stages, must begin with
//
//	if procpool.IsWorker() {
//		os.Exit(procpool.WorkerMain(registry))
//	}
//
// See docs/protocol.md for the messages and the details.
package procpool
