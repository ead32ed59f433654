package cluster

import (
	"fmt"
	"strconv"
	"time"
)

const (
	workStream    = "FLOW_WORK"
	resultsStream = "FLOW_RESULTS"
	workConsumer  = "flow-workers"
	helloBucket   = "flow-hello"
	runsBucket    = "flow-runs"
	workersBucket = "flow-workers"

	hdrRun      = "Flow-Run"
	hdrStage    = "Flow-Stage"
	hdrBatch    = "Flow-Batch"
	hdrWorker   = "Flow-Worker"
	hdrDelivery = "Flow-Delivery"
	// hdrItems, on a results message, is where the items it answers start
	// in its data (after the results): what a resumed run matches them by.
	hdrItems = "Flow-Items"
	// hdrHello, on a results message, is the digest of the stage's hello.
	hdrHello = "Flow-Hello"
)

func workSubject(run string, stage int) string { return "flow.work." + run + "." + strconv.Itoa(stage) }
func resultsSubject(run string, stage int) string {
	return "flow.results." + run + "." + strconv.Itoa(stage)
}
func resultsFilter(run string) string       { return "flow.results." + run + ".>" }
func cancelSubject(run string) string       { return "flow.cancel." + run }
func helloKey(run string, stage int) string { return run + "." + strconv.Itoa(stage) }

// newRunID is a run's name in subjects and keys: sortable by start, unique
// across machines (time plus random), and a valid subject token.
func newRunID() string {
	return fmt.Sprintf("r%x%s", time.Now().UnixNano(), randHex(4))
}
