// Package cluster runs the items of `mode: cluster` stages on `flow
// worker` processes on any machine, through NATS JetStream: the run's
// engine keeps every policy (order, completion, limits, retries, on_error,
// when) and hands batches of items to a work-queue stream; workers pull
// them, build the stage from the validated pipeline text (stagehost), and
// publish the answers on a results stream the run reads back.
//
// What each piece of JetStream is for:
//
//   - FLOW_WORK, a work-queue stream (subjects flow.work.RUN.STAGE): one
//     message per batch of items, removed when a worker acks it. Its
//     durable pull consumer "flow-workers" is shared by every worker:
//     MaxAckPending bounds what is in flight, AckWait bounds how long a
//     dead worker's batch stays unseen (a live worker sends in-progress
//     acks at a third of it), MaxDeliver bounds redelivery, so a batch that
//     kills every worker fails instead of circling.
//   - FLOW_RESULTS, a limits stream (subjects flow.results.RUN.STAGE): the
//     answers, kept for a day so that a run's parent that died loses
//     nothing a worker finished. Publishes are de-duplicated by message ID.
//     Each answer carries the items it answers and the digest of the
//     stage's hello: `flow run --resume` (RunOptions.Resume) settles its
//     items of the same hello, index and value from a dead run's answers.
//   - KV bucket flow-hello: the hello of each stage of each run (the text
//     that was validated, the effective variables), under RUN.STAGE.
//   - KV bucket flow-runs: one key per live run, refreshed by its parent.
//     A worker drops (terms) the work of a run whose key expired: a dead
//     parent leaves no orphaned work behind.
//   - KV bucket flow-workers: one key per worker, refreshed while it lives,
//     for `flow workers`.
//   - core subject flow.cancel.RUN: the items a run no longer wants
//     (timeouts, complete: first); workers cancel them where they run.
//   - core subject flow.drain.RUN: a resumed run taking RUN up; workers
//     stop its items and answer once what they ran of it is answered.
//
// Streams and buckets get three replicas on a cluster of three servers or
// more (Settings.Replicas). A run survives a node's death: publishes are
// sent again under their message ID, the reading of answers restarts when
// it stalls, and a run whose key lapsed sends its items out again.
//
// Every item is settled exactly once on the parent's side (taskq's Task
// states): a late answer from a worker that hung and came back after its
// batch went elsewhere is ignored. A redelivery after a worker's death is
// not an attempt of the item's retry policy; the attempt records it
// (engine.Attempt.Redelivered).
package cluster
