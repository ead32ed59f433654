// Package htmlreport renders a run report, and the events recorded during
// the run, as one self-contained HTML file: inline CSS and JavaScript, the
// data as inline JSON, nothing fetched from a network, so that it opens
// from a mail attachment or a CI artifact. The page draws its charts and
// the per-worker timeline on canvases from the bounded summary of package
// events, so its size does not grow with the number of items.
package htmlreport

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flowrun/flow/report"
	"github.com/flowrun/flow/report/events"
)

//go:embed report.html report.css report.js
var files embed.FS

// page is the data the page's script reads (docs/report-format.md).
type page struct {
	Report *report.Report `json:"report"`
	Events *eventsView    `json:"events"`
}

type eventsView struct {
	Start  time.Time       `json:"start"`
	End    time.Time       `json:"end"`
	Limits events.Limits   `json:"limits"`
	Stages []*events.Stage `json:"stages"`
	Items  []*events.Item  `json:"items"`
}

// Render writes the page of rep, with the timeline and item table of ev
// when the run recorded events (ev may be nil: the page then shows the
// report's counts and failures only, and says why there is no timeline).
func Render(w io.Writer, rep *report.Report, ev *events.Data) error {
	p := page{Report: rep}
	if ev != nil {
		p.Events = &eventsView{Start: ev.Start, End: ev.End, Limits: ev.Limits, Stages: ev.Stages, Items: ev.Items}
	}
	// json.Marshal escapes <, > and & (and U+2028/9): the data cannot end
	// the script element it sits in.
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("html report: %w", err)
	}
	tpl, _ := files.ReadFile("report.html")
	css, _ := files.ReadFile("report.css")
	js, _ := files.ReadFile("report.js")
	title := rep.Pipeline
	if title == "" {
		title = filepath.Base(rep.File)
	}
	title = fmt.Sprintf("%s %s · flow", title, rep.Status)
	// One pass, so that nothing substituted is substituted again.
	r := strings.NewReplacer("{{TITLE}}", html.EscapeString(title), "{{CSS}}", string(css), "{{JS}}", string(js), "{{DATA}}", string(data))
	var b bytes.Buffer
	if _, err := r.WriteString(&b, string(tpl)); err != nil {
		return err
	}
	_, err = w.Write(b.Bytes())
	return err
}

// WriteFile renders to path atomically (temporary file, then rename).
func WriteFile(path string, rep *report.Report, ev *events.Data) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".flow-html-*")
	if err != nil {
		return fmt.Errorf("writing HTML report: %w", err)
	}
	defer os.Remove(f.Name())
	if err := Render(f, rep, ev); err != nil {
		f.Close()
		return fmt.Errorf("writing HTML report %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing HTML report %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("writing HTML report %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing HTML report %s: %w", path, err)
	}
	return nil
}
