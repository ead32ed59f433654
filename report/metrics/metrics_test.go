package metrics

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/flowrun/flow/report"
)

func parse(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Legacy names: what every Prometheus and node_exporter accepts.
	p := expfmt.NewTextParser(model.LegacyValidation)
	mf, err := p.TextToMetricFamilies(f)
	if err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("not the Prometheus text format: %v\n%s", err, b)
	}
	return mf
}

// value finds the sample of family name whose labels include want.
func value(t *testing.T, mf map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	fam := mf[name]
	if fam == nil {
		t.Fatalf("no %s", name)
	}
	if fam.GetType() != dto.MetricType_GAUGE {
		t.Errorf("%s is %v, want a gauge", name, fam.GetType())
	}
next:
	for _, m := range fam.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("no %s with %v", name, want)
	return 0
}

func TestWriteFileParses(t *testing.T) {
	start := time.Date(2026, 12, 3, 22, 0, 0, 0, time.UTC)
	rep := &report.Report{
		Pipeline: `nightly "import"`, File: "nightly.yaml", Start: start, End: start.Add(1500 * time.Millisecond),
		Duration: report.Duration(1500 * time.Millisecond), ExitCode: 1, Status: report.StatusFailed,
		Stages: []*report.Stage{
			{Name: "src", In: 10, Succeeded: 10},
			{Name: "fetch", In: 10, Succeeded: 7, Failed: 1, Skipped: 2, Retries: 4, Duration: report.Duration(time.Second)},
		},
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "flow.prom")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, rep); err != nil {
		t.Fatal(err)
	}
	mf := parse(t, path)
	p := map[string]string{"pipeline": `nightly "import"`}
	if v := value(t, mf, "flow_last_run_success", p); v != 0 {
		t.Errorf("success %v, want 0", v)
	}
	if v := value(t, mf, "flow_last_run_status", map[string]string{"status": "failed"}); v != 1 {
		t.Errorf("status failed %v, want 1", v)
	}
	if v := value(t, mf, "flow_last_run_status", map[string]string{"status": "succeeded"}); v != 0 {
		t.Errorf("status succeeded %v, want 0", v)
	}
	if v := value(t, mf, "flow_last_run_start_timestamp_seconds", p); v != float64(start.Unix()) {
		t.Errorf("start %v, want %d", v, start.Unix())
	}
	if v := value(t, mf, "flow_last_run_duration_seconds", p); v != 1.5 {
		t.Errorf("duration %v, want 1.5", v)
	}
	if v := value(t, mf, "flow_last_run_exit_code", p); v != 1 {
		t.Errorf("exit code %v", v)
	}
	for outcome, want := range map[string]float64{"succeeded": 7, "failed": 1, "skipped": 2, "cancelled": 0, "filtered": 0} {
		if v := value(t, mf, "flow_last_run_items", map[string]string{"stage": "fetch", "outcome": outcome}); v != want {
			t.Errorf("fetch %s: %v, want %v", outcome, v, want)
		}
	}
	if v := value(t, mf, "flow_last_run_retries", map[string]string{"stage": "fetch"}); v != 4 {
		t.Errorf("retries %v", v)
	}
	// Written atomically: no temporary file left, readable by the
	// collector's user.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left in the directory: %v", ents)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
}

// The file name of the pipeline stands in for a missing name.
func TestWriteNamesByFile(t *testing.T) {
	var b strings.Builder
	if err := Write(&b, &report.Report{File: "/etc/flow/daily.yaml", Status: report.StatusSucceeded}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `flow_last_run_success{pipeline="daily.yaml"} 1`) {
		t.Errorf("got\n%s", b.String())
	}
}
