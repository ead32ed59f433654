package report

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// An item holding NaN or an infinity does not stop the report from being
// written; the numbers are written as strings.
func TestWriteFileNonFinite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.json")
	item := map[string]any{"ratio": math.Inf(1), "l": []any{math.NaN()}}
	r := &Report{Status: "failed", Stages: []*Stage{{Name: "c", PerSecond: math.NaN()}},
		Failures: []Failure{{Stage: "c", Item: item, Error: "x"}}}
	if err := r.WriteFile(path); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Failures []struct{ Item map[string]any }
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, b)
	}
	if it := got.Failures[0].Item; it["ratio"] != "Infinity" || it["l"].([]any)[0] != "NaN" {
		t.Errorf("item written as %v", it)
	}
	if !math.IsInf(item["ratio"].(float64), 1) {
		t.Errorf("the report's item was modified")
	}
}
