package main

// Issue 13, class 5: secrets as an attacker would make them leak. Each test
// runs the real binary and scans everything flow prints or records (stderr
// with plain progress, stdout, the report, and the error values of kept
// items) for the secret, each of its encoded forms, and any start of them of
// 8 bytes or more.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/flowrun/flow/internal/redact"
)

// secretLeaks fails if text holds any secret in any form, whole or its
// first 8 bytes or more.
func secretLeaks(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, f := range redact.Forms(s) {
			for k := min(8, len(f)); k <= len(f); k++ {
				if strings.Contains(text, f[:k]) {
					t.Errorf("%s shows %q (the first %d bytes of %q, a form of the secret %q):\n%s", what, f[:k], k, f, s, text)
					break
				}
			}
		}
	}
}

// secretScan scans stderr, stdout, the report and the error values of the
// items kept in out.jsonl.
func secretScan(t *testing.T, r *relResult, secrets ...string) {
	t.Helper()
	secretLeaks(t, "stderr (progress and messages)", r.stderr, secrets...)
	secretLeaks(t, "stdout", r.stdout, secrets...)
	secretLeaks(t, "the report", string(r.raw), secrets...)
	b, _ := os.ReadFile(filepath.Join(r.dir, "out.jsonl"))
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var kept struct{ Error string }
		if json.Unmarshal([]byte(line), &kept) == nil && kept.Error != "" {
			secretLeaks(t, "a kept item's error", kept.Error, secrets...)
		}
	}
}

const (
	secPin  = "007700770077"                   // YAML 1.1 reads an octal number
	secHex  = "0x1f2e3d4c5b6a7988"             // a hex number
	secLong = "123456789012345678901234567890" // a float, rounded
	secAmp  = "p&ss<w>rd-Amp3rs4nd/x y"        // JSON-escaped as \u0026 \u003c \u003e
	secEnv  = "env-0nly-S3cret-value"          // from FLOW_VAR_env only
)

// Numeric-looking secrets are sent exactly as written, and no secret shows
// in any form: percent-encoded in a URL, JSON-escaped or base64 in an error
// body a server echoes, or cut short in the body's excerpt.
func TestHostileSecretsEncodedForms(t *testing.T) {
	var mu sync.Mutex
	got := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		mu.Lock()
		for k := range q {
			got[k] = q.Get(k)
		}
		mu.Unlock()
		if r.URL.Path == "/ok" {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"got": q, "raw": r.URL.RawQuery})
			return
		}
		js, _ := json.Marshal(q)
		w.WriteHeader(http.StatusBadGateway)
		// The excerpt of an error body is cut at 200 bytes: right inside
		// the secret.
		fmt.Fprintf(w, "%s%s is wrong; query %s; json %s; basic %s", strings.Repeat("-", 190), q.Get("amp"),
			r.URL.RawQuery, js, base64.StdEncoding.EncodeToString([]byte("user:"+q.Get("amp"))))
	}))
	defer srv.Close()
	dir := t.TempDir()
	cmd := relCommand(t, dir, fmt.Sprintf(`version: 1
vars:
  pin: {default: %s, secret: true}
  hex: {default: %s, secret: true}
  long: {default: %s, secret: true}
  amp: {default: %s, secret: true}
  env: {secret: true}
stages:
  - name: src
    source: {items: [ok, echo]}
  - name: get
    step: fetch
    on_error: keep
    with:
      url: "%s/${ item }"
      query: {pin: "${ vars.pin }", hex: "${ vars.hex }", long: "${ vars.long }", amp: "${ vars.amp }", env: "${ vars.env }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, secPin, secHex, secLong, relYAML(secAmp), srv.URL))
	cmd.Env = append(cmd.Env, "FLOW_VAR_env="+secEnv)
	r := secretRun(t, dir, cmd)
	for k, want := range map[string]string{"pin": secPin, "hex": secHex, "long": secLong, "amp": secAmp, "env": secEnv} {
		if got[k] != want {
			t.Errorf("the server received %s=%q, want the text as written, %q", k, got[k], want)
		}
	}
	if r.rep == nil || len(r.rep.Failures) != 1 || !strings.Contains(r.stderr, "***") {
		t.Fatalf("the echo request did not fail as planned, or nothing was redacted:\n%s\n%s", r.stderr, r.raw)
	}
	secretScan(t, r, secPin, secHex, secLong, secAmp, secEnv)
}

// An item preview in a message is redacted, then cut at 80 characters: a
// secret straddling the cut leaves nothing of itself.
func TestHostileSecretsCutPreview(t *testing.T) {
	r := relRun(t, fmt.Sprintf(`version: 1
vars:
  amp: {default: %s, secret: true}
stages:
  - name: src
    source: {items: [a]}
  - name: mk
    step: compute
    with: {value: "${ '%s' + vars.amp }"}
  - name: bad
    step: compute
    with: {value: "${ fail('refused') }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`, relYAML(secAmp), strings.Repeat("x", 62)))
	r.check(t, 1, 4, nil)
	// Redacted first, the preview is 62 x's and the mark: no cut needed.
	if !strings.Contains(r.rep.Reason, "("+strings.Repeat("x", 62)+"***)") {
		t.Errorf("the reason does not show the preview, redacted: %q", r.rep.Reason)
	}
	secretScan(t, r, secAmp)
}

// Building a source or a sink can fail on a value made from a secret; the
// message flow prints says so without the value.
func TestHostileSecretsBuildErrors(t *testing.T) {
	dir := t.TempDir()
	cmd := relCommand(t, dir, fmt.Sprintf(`version: 1
vars:
  amp: {default: %s, secret: true}
stages:
  - name: src
    source: {range: {from: 1, to: "${ vars.amp }"}}
  - name: out
    sink: {write: {path: out.jsonl}}
`, relYAML(secAmp)))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code := relWait(t, cmd)
	if code == 0 || !strings.Contains(stderr.String(), "whole number") {
		t.Fatalf("exit %d; the build did not fail as planned:\n%s", code, stderr.String())
	}
	secretLeaks(t, "stderr", stderr.String(), secAmp)
	secretLeaks(t, "stdout", stdout.String(), secAmp)
	if b, err := os.ReadFile(filepath.Join(dir, "report.json")); err == nil {
		secretLeaks(t, "the report", string(b), secAmp)
	}
}

// A program started by exec does not inherit the FLOW_VAR_* variables,
// secrets among them; it gets one when the pipeline passes it.
func TestHostileSecretsExecEnvironment(t *testing.T) {
	dir := t.TempDir()
	cmd := relCommand(t, dir, `version: 1
vars:
  env: {secret: true}
stages:
  - name: src
    source: {items: [inherit, passed]}
  - name: run
    step: exec
    with:
      argv: [env]
      env: {PASSED: "${ item == 'passed' ? vars.env : '' }"}
  - name: out
    sink: {write: {path: out.jsonl}}
`)
	cmd.Env = append(cmd.Env, "FLOW_VAR_env="+secEnv, "FLOW_VAR_ENV="+secEnv)
	r := secretRun(t, dir, cmd)
	lines := relLines(t, filepath.Join(dir, "out.jsonl"))
	r.check(t, 0, 3, lines)
	if len(lines) != 2 {
		t.Fatalf("out.jsonl: %q", lines)
	}
	for _, l := range lines {
		if strings.Contains(l, "FLOW_VAR_") {
			t.Errorf("a program saw flow's variables: %s", l)
		}
	}
	if !strings.Contains(lines[1], "PASSED="+secEnv) {
		t.Errorf("the secret passed explicitly did not reach the program: %s", lines[1])
	}
	secretLeaks(t, "stderr", r.stderr, secEnv)
	secretLeaks(t, "the report", string(r.raw), secEnv)
}

// secretRun runs a command made by relCommand to its end.
func secretRun(t *testing.T, dir string, cmd *exec.Cmd) *relResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	code := relWait(t, cmd)
	return relCollect(t, dir, code, stdout.String(), stderr.String())
}

// What steps and worker processes write to stderr goes through the same
// redaction: here the csv printer's warning quotes an item's key made of a
// secret.
func TestHostileSecretsStepStderr(t *testing.T) {
	r := relRun(t, fmt.Sprintf(`version: 1
vars:
  amp: {default: %s, secret: true}
stages:
  - name: src
    source: {range: {from: 1, to: 1001}}
  - name: mk
    step: compute
    with:
      value: >-
        ${ item <= 1000 ? {n: item} : fromJSON(toJSON({n: item}) | replace('}', ', ' + toJSON(vars.amp) + ': 2}')) }
  - name: out
    sink: {print: csv}
`, relYAML(secAmp)))
	if r.code != 0 || !strings.Contains(r.stderr, "warning: csv: item 1000 has a key") {
		t.Fatalf("exit %d; no csv warning about the new key:\n%s", r.code, r.stderr)
	}
	secretLeaks(t, "stderr", r.stderr, secAmp)
	secretLeaks(t, "the report", string(r.raw), secAmp)
}
