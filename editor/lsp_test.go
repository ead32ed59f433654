package editor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// client is the part of an LSP client (as VS Code is one) that the test
// needs: JSON-RPC over the server's stdin and stdout, replies to the
// server's own requests, and the diagnostics it publishes.
type client struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	stder *strings.Builder

	mu       sync.Mutex
	wmu      sync.Mutex
	nextID   int
	pending  map[int]chan response
	diags    map[string][]diagnostic // by URI, the last publication
	lastDiag time.Time
	settings map[string]any
	done     chan struct{}
}

type response struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type message struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	response
}

type position struct {
	Line      int `json:"line"`
	Character int `json:"character"`
}

type diagnostic struct {
	Range struct {
		Start position `json:"start"`
		End   position `json:"end"`
	} `json:"range"`
	Severity int    `json:"severity"`
	Message  string `json:"message"`
	Source   string `json:"source"`
}

func (d diagnostic) String() string {
	return fmt.Sprintf("%d:%d: %s", d.Range.Start.Line+1, d.Range.Start.Character+1, d.Message)
}

func start(t *testing.T, server, root string, settings map[string]any) *client {
	t.Helper()
	cmd := exec.Command(server, "--stdio")
	cmd.Dir = root
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, cmd: cmd, in: in, out: bufio.NewReader(out), stder: &strings.Builder{},
		pending: map[int]chan response{}, diags: map[string][]diagnostic{}, settings: settings, done: make(chan struct{})}
	cmd.Stderr = &lockedWriter{w: c.stder}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", server, err)
	}
	go c.read()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = c.call(ctx, "shutdown", nil)
		_ = c.notify("exit", nil)
		_ = in.Close()
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
		if t.Failed() {
			t.Logf("yaml-language-server stderr:\n%s", c.stder.String())
		}
	})
	return c
}

type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (c *client) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = fmt.Fprintf(c.in, "Content-Length: %d\r\n\r\n%s", len(b), b)
	return err
}

func (c *client) notify(method string, params any) error {
	return c.send(map[string]any{"jsonrpc": "2.0", "method": method, "params": params})
}

func (c *client) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan response, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.send(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params}); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return nil, fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		return r.Result, nil
	case <-c.done:
		return nil, fmt.Errorf("%s: the server exited", method)
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: no answer: %w", method, ctx.Err())
	}
}

func (c *client) read() {
	defer close(c.done)
	for {
		length := -1
		for {
			line, err := c.out.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSpace(line)
			if line == "" {
				break
			}
			if v, ok := strings.CutPrefix(line, "Content-Length:"); ok {
				length, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if length < 0 {
			return
		}
		body := make([]byte, length)
		if _, err := io.ReadFull(c.out, body); err != nil {
			return
		}
		var m message
		if err := json.Unmarshal(body, &m); err != nil {
			continue
		}
		c.handle(m)
	}
}

func (c *client) handle(m message) {
	switch {
	case m.Method == "" && len(m.ID) > 0: // a response to us
		id, _ := strconv.Atoi(string(m.ID))
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- m.response
		}
	case m.Method == "textDocument/publishDiagnostics":
		var p struct {
			URI         string       `json:"uri"`
			Diagnostics []diagnostic `json:"diagnostics"`
		}
		if json.Unmarshal(m.Params, &p) == nil {
			c.mu.Lock()
			c.diags[p.URI] = p.Diagnostics
			c.lastDiag = time.Now()
			c.mu.Unlock()
		}
	case len(m.ID) > 0: // a request from the server: answer as VS Code would
		var result any
		if m.Method == "workspace/configuration" {
			var p struct {
				Items []struct {
					Section string `json:"section"`
				} `json:"items"`
			}
			_ = json.Unmarshal(m.Params, &p)
			res := make([]any, len(p.Items))
			for i, it := range p.Items {
				res[i] = c.settings[it.Section]
			}
			result = res
		}
		_ = c.send(map[string]any{"jsonrpc": "2.0", "id": m.ID, "result": result})
	}
}

// settle waits until every uri has diagnostics and none has arrived for
// quiet: the server validates a moment after didOpen, sometimes twice
// (before and after it has loaded the schema).
// settle waits until every one of uris has diagnostics, none came for
// quiet, and ready accepts them. The server may publish a document twice
// (before and after it has loaded the schema of the modeline), and on a
// loaded machine more than quiet apart: so while ready refuses, it waits
// on, up to patience, and then returns what it has for the caller to
// compare and report.
func (c *client) settle(ctx context.Context, uris []string, quiet, patience time.Duration, ready func(map[string][]diagnostic) bool) (map[string][]diagnostic, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var giveUp time.Time // when all first arrived and were quiet, plus patience
	for {
		if out := c.quietSnapshot(uris, quiet); out != nil {
			if giveUp.IsZero() {
				giveUp = time.Now().Add(patience)
			}
			if ready(out) || time.Now().After(giveUp) {
				return out, nil
			}
		}
		select {
		case <-tick.C:
		case <-c.done:
			return nil, errors.New("the server exited")
		case <-ctx.Done():
			var missing []string
			c.mu.Lock()
			for _, u := range uris {
				if _, ok := c.diags[u]; !ok {
					missing = append(missing, u)
				}
			}
			c.mu.Unlock()
			return nil, fmt.Errorf("diagnostics did not settle (none yet for %v): %w", missing, ctx.Err())
		}
	}
}

// quietSnapshot is a copy of the diagnostics once every one of uris has
// some and none came for quiet, else nil.
func (c *client) quietSnapshot(uris []string, quiet time.Duration) map[string][]diagnostic {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, u := range uris {
		if _, ok := c.diags[u]; !ok {
			return nil
		}
	}
	if time.Since(c.lastDiag) < quiet {
		return nil
	}
	out := make(map[string][]diagnostic, len(c.diags))
	for k, v := range c.diags {
		out[k] = v
	}
	return out
}

func fileURI(path string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(path)}).String()
}

// repoRoot is the directory holding go.mod.
func repoRoot(t *testing.T) string {
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s", dir)
	}
	return dir
}

const installHint = "install it with: npm install --no-audit --no-fund --prefix .ci/lsp yaml-language-server@1.19 (from the repository root), or point FLOW_YAMLLS at a yaml-language-server binary"

// findServer locates yaml-language-server, or skips (fails under CI=true).
func findServer(t *testing.T, root string) string {
	t.Helper()
	if p := os.Getenv("FLOW_YAMLLS"); p != "" {
		return p
	}
	p := filepath.Join(root, ".ci", "lsp", "node_modules", ".bin", "yaml-language-server")
	if _, err := os.Stat(p); err == nil {
		if _, err := exec.LookPath("node"); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("yaml-language-server not found at %s (or node missing) and CI=true; %s", p, installHint)
	}
	t.Skipf("yaml-language-server not found at %s; %s", p, installHint)
	return ""
}
