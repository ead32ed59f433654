package htmlreport

import (
	"bytes"
	"strings"
	"testing"

	"github.com/flowrun/flow/report"
)

// An item or error holding markup stays data: it cannot close the script
// element that carries the data, nor open one.
func TestRenderKeepsDataInert(t *testing.T) {
	evil := `</script><script>alert(1)</script><!--`
	rep := &report.Report{Pipeline: `<b>p</b>`, Status: report.StatusFailed,
		Failures: []report.Failure{{Stage: "s", Index: 3, Item: evil, Error: evil, Outcome: report.Failed}}}
	var b bytes.Buffer
	if err := Render(&b, rep, nil); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if strings.Contains(page, evil) || strings.Contains(page, "<script>alert") {
		t.Errorf("the page holds the markup of an item as markup")
	}
	if strings.Count(page, "<script") != 2 || strings.Count(page, "</script>") != 2 {
		t.Errorf("want exactly the data and the code scripts")
	}
	if !strings.Contains(page, "<title>&lt;b&gt;p&lt;/b&gt; failed · flow</title>") {
		t.Errorf("title not escaped")
	}
	// Self-contained: nothing loaded from anywhere.
	for _, s := range []string{"http://", "https://", "src=", "@import"} {
		if strings.Contains(page, s) {
			t.Errorf("the page refers to something outside it: %q", s)
		}
	}
}
