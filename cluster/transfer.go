package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"gopkg.in/yaml.v3"

	"github.com/flowrun/flow/cache"
	"github.com/flowrun/flow/conf"
	"github.com/flowrun/flow/engine"
	"github.com/flowrun/flow/internal/regular"
	"github.com/flowrun/flow/protocol"
	"github.com/flowrun/flow/spec"
	"github.com/flowrun/flow/stagehost"
	"github.com/flowrun/flow/steps"
	"github.com/flowrun/flow/tmpl"
)

// transfer: true ships an item's files to a worker that does not share the
// run's file system, as GNU parallel's --transfer and --return do.
//
// Which options name files: the inputs are what the result cache already
// digests (cache.FileOptions: analyze-logs' path, resize's src); the
// outputs are the files a kind writes under its output directory
// (outputRules: resize's out_dir, confined to the pipeline directory
// unless allow_outside, as steps/resize confines it).
//
// The run's side evaluates those options for the item, uploads each input
// to the run's Object Store bucket (flow-files-RUN) and sends the item
// with a manifest: paths, object names, sizes, SHA-256 digests. The worker
// downloads them into a private temporary directory that mirrors the run's
// absolute paths (TMP/home/u/logs/a.log for /home/u/logs/a.log), builds
// the step for that item with the file options pointing into the mirror
// and the pipeline directory inside it, runs it, and uploads every regular
// file the step wrote under the output directory. Paths in the result and
// in errors are given back as the run's. The run's side then writes the
// outputs where they belong, atomically, inside the output directory.
//
// Both sides bound sizes (Settings.TransferMaxFile, TransferMaxItem) and
// verify digests: the Object Store checks its own on every read, and each
// side checks the SHA-256 the other announced.
//
// Neither side trusts the other with its file system: the run writes back
// only what the kind could have written for the item (outputRule.names,
// evaluated on the run's side), and the worker takes from the manifest
// only paths into its mirror, for the options the run's side sets
// (checkSet). What a worker uploads carries the attempt's prefix, so that
// a failed attempt's objects can be found and deleted (Client.sweep).

// outputRules says, per kind, where its items write files: the option
// naming the directory (resolved against the pipeline directory) and the
// option that lets it leave the pipeline directory, and which names the
// kind can give them there.
var outputRules = map[string]outputRule{
	"resize": {dir: "out_dir", outside: "allow_outside", name: "name", format: "format", files: 1, names: resizeNames},
}

// outputRule is what the run's side knows of a kind's outputs, so that it
// writes back only what the kind itself could have written: a worker is
// not trusted with the run's file system.
type outputRule struct {
	dir, outside string
	name, format string // the options naming the output and its format
	files        int    // the most files an item writes
	// names is the pattern of the names (slash-separated, relative to
	// dir) an item can write, given the name option evaluated for it, its
	// input and the format option.
	names func(name, src, format string) (*regexp.Regexp, error)
}

// resizeNames follows steps/resize: its name is the evaluated template
// with {stem} and {name} from the source path, {ext} the source's own
// spelling or that of the output format, {width} and {height} positive
// numbers. Everything else is the template's own, evaluated on the run's
// side.
func resizeNames(name, src, format string) (*regexp.Regexp, error) {
	base := filepath.Base(src)
	se := strings.TrimPrefix(filepath.Ext(src), ".")
	var ext string
	switch format {
	case "jpeg":
		ext = "jpg"
	case "png":
		ext = "png"
	default:
		ext = "jpg|png"
		if f := map[string]bool{"jpg": true, "jpeg": true, "jpe": true, "png": true}; f[strings.ToLower(se)] {
			ext += "|" + regexp.QuoteMeta(se)
		}
	}
	vals := map[string]string{
		"stem": regexp.QuoteMeta(strings.TrimSuffix(base, filepath.Ext(base))), "name": regexp.QuoteMeta(base),
		"ext": "(?:" + ext + ")", "width": "[1-9][0-9]{0,9}", "height": "[1-9][0-9]{0,9}",
	}
	var b strings.Builder
	b.WriteString("^")
	for {
		i := strings.IndexByte(name, '{')
		if i < 0 {
			b.WriteString(regexp.QuoteMeta(name))
			break
		}
		j := strings.IndexByte(name[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("output name %q has an unclosed '{'", name)
		}
		v, ok := vals[name[i+1:i+j]]
		if !ok {
			return nil, fmt.Errorf("output name %q has an unknown placeholder %s", name, name[i:i+j+1])
		}
		b.WriteString(regexp.QuoteMeta(name[:i]))
		b.WriteString(v)
		name = name[i+j+1:]
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// transferTTL is the backstop of a bucket whose run died before deleting
// it: its objects expire.
const transferTTL = 24 * time.Hour

func filesBucket(run string) string { return "flow-files-" + run }

// transferKinds lists the kinds transfer: true can ship, for messages.
func transferKinds() string {
	var ks []string
	for k := range cache.FileOptions {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, ", ")
}

// runFiles is a run's Object Store bucket, made by its first transfer:
// true stage and deleted when the run ends.
type runFiles struct {
	mu       sync.Mutex
	store    jetstream.ObjectStore
	maxBytes int64         // the bucket's MaxBytes (files); -1: unbounded
	seq      atomic.Uint64 // names the run's inputs and attempts, across its stages
	// abandoned are the output prefixes of attempts that failed: a worker
	// still running one may upload after the run swept it, so each sweep
	// looks for all of them again (the last maxAbandoned).
	abandoned []string
}

const maxAbandoned = 1024

// files returns the run's bucket, creating it on first use, and makes
// room in it for need more bytes: a stage's share, so that what leaks
// (a worker's upload nobody answers for, one that outlived every sweep)
// is bounded by what the run's stages could legitimately have in flight.
// A JetStream server sets a bucket's MaxBytes aside from its storage, and
// refuses what it cannot set aside: the bound is then halved until the
// server takes it, and halved once more so that other streams keep room
// (taking n where 2n failed may leave nothing). Only a server that cannot
// set aside minBucket leaves the bucket unbounded, with a warning.
func (c *Client) files(ctx context.Context, need int64, stderr io.Writer) (jetstream.ObjectStore, error) {
	c.xfer.mu.Lock()
	defer c.xfer.mu.Unlock()
	if c.xfer.store != nil && c.xfer.maxBytes < 0 {
		return c.xfer.store, nil
	}
	want := c.xfer.maxBytes + need
	if want < need { // overflow
		want = math.MaxInt64
	}
	least := max(c.xfer.maxBytes, minBucket)
	cfg := jetstream.ObjectStoreConfig{
		Bucket: filesBucket(c.run), TTL: transferTTL,
		Description: "files shipped to and from workers for run " + c.run + " (transfer: true)",
	}
	apply := func(n int64) (jetstream.ObjectStore, error) {
		cfg.MaxBytes = n
		if c.xfer.store == nil {
			return c.js.CreateObjectStore(ctx, cfg)
		}
		return c.js.UpdateObjectStore(ctx, cfg)
	}
	n := max(want, least)
	st, err := apply(n)
	for noRoom(err) && n > least {
		n = max(n/2, least)
		st, err = apply(n)
	}
	if err == nil && n < want && n/2 >= least {
		if st2, err2 := apply(n / 2); err2 == nil {
			st, n = st2, n/2
		}
	}
	if noRoom(err) {
		if stderr != nil {
			fmt.Fprintf(stderr, "flow: the NATS server cannot set aside %d bytes for the bucket %s (it is nearly full): the bucket is left unbounded\n", least, filesBucket(c.run))
		}
		n = -1
		st, err = apply(n)
	}
	if err != nil {
		return nil, fmt.Errorf("the Object Store bucket %s: %w", filesBucket(c.run), err)
	}
	c.xfer.store, c.xfer.maxBytes = st, n
	return st, nil
}

// minBucket is the least MaxBytes worth asking a server for.
const minBucket = 1 << 20

func noRoom(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errStorageResources
}

// errStorageResources is JetStream's "insufficient storage resources
// available": it cannot reserve a stream's MaxBytes.
const errStorageResources jetstream.ErrorCode = 10047

// sweep deletes the objects a failed attempt's worker may have uploaded
// (those named with its prefix), and those of earlier failed attempts
// uploaded since.
func (c *Client) sweep(store jetstream.ObjectStore, prefix string) {
	c.xfer.mu.Lock()
	c.xfer.abandoned = append(c.xfer.abandoned, prefix)
	if n := len(c.xfer.abandoned); n > maxAbandoned {
		c.xfer.abandoned = slices.Clone(c.xfer.abandoned[n-maxAbandoned:])
	}
	prefixes := slices.Clone(c.xfer.abandoned)
	c.xfer.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	infos, err := store.List(ctx)
	if err != nil {
		return // jetstream.ErrNoObjectsFound, or the run's end deletes them
	}
	for _, oi := range infos {
		for _, p := range prefixes {
			if strings.HasPrefix(oi.Name, p) {
				_ = store.Delete(ctx, oi.Name)
				break
			}
		}
	}
}

// dropFiles deletes the run's bucket, if it made one.
func (c *Client) dropFiles(ctx context.Context) {
	c.xfer.mu.Lock()
	defer c.xfer.mu.Unlock()
	if c.xfer.store != nil {
		_ = c.js.DeleteObjectStore(ctx, filesBucket(c.run))
		c.xfer.store = nil
	}
}

// shipper is the run's side of a transfer: true stage.
type shipper struct {
	c       *Client
	stage   string
	kind    string
	env     *steps.Env
	dir     string    // the pipeline directory, absolute
	inputs  []*tmpl.T // per cache.FileOptions; nil: the item itself
	outDir  *tmpl.T   // nil: the kind writes nothing
	outside bool      // the output directory may leave dir
	rule    outputRule
	name    *tmpl.T // the name option of rule
	format  string  // the format option of rule
	store   jetstream.ObjectStore
	limits  Settings
}

// testHookShipped, set by tests only, runs once an item's inputs are in
// the bucket ("uploaded") and once its answer is back ("answered").
var testHookShipped func(phase string, store jetstream.ObjectStore, files []transferFile)

// transferFile is one file of a manifest.
type transferFile struct {
	Path   string // absolute, on the run's machine; relative to the output directory for outputs
	Object string
	Size   int64
	SHA256 string
}

func (f transferFile) value() map[string]any {
	return map[string]any{"path": f.Path, "object": f.Object, "size": f.Size, "sha256": f.SHA256}
}

func fileOf(v any) (transferFile, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return transferFile{}, false
	}
	f := transferFile{}
	f.Path, _ = m["path"].(string)
	f.Object, _ = m["object"].(string)
	f.SHA256, _ = m["sha256"].(string)
	switch n := m["size"].(type) {
	case int64:
		f.Size = n
	case uint64:
		f.Size = int64(n)
	case float64:
		f.Size = int64(n)
	default:
		return f, false
	}
	return f, f.Path != "" && f.Object != "" && len(f.SHA256) == 64 && f.Size >= 0
}

// newShipper prepares the run's side of a transfer: true stage: its kind
// must be one whose files flow knows.
func newShipper(ctx context.Context, c *Client, sr engine.StageRun) (*shipper, error) {
	s := sr.Stage
	keys, ok := cache.FileOptions[s.Kind]
	if !ok {
		return nil, fmt.Errorf("stage %q: transfer: true: kind %s reads no file flow knows how to ship (these do: %s); remove transfer:, or share the files with the workers", s.Name, s.Kind, transferKinds())
	}
	k, ok := sr.Registry.Lookup(s.Kind)
	if !ok || k.Config == nil {
		return nil, fmt.Errorf("stage %q: unknown step kind %q", s.Name, s.Kind)
	}
	cfg := reflect.New(k.Config)
	if ds := conf.Decode(s.Options, cfg.Interface(), &conf.Context{Vars: sr.Env.Vars}); len(ds) > 0 {
		return nil, ds
	}
	dir := sr.Pipeline.Dir
	if dir == "" {
		dir = "."
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	sh := &shipper{c: c, stage: s.Name, kind: s.Kind, env: sr.Env, dir: dir, limits: c.settings}
	for _, key := range keys {
		sh.inputs = append(sh.inputs, templateField(cfg.Elem(), key))
	}
	if rule, ok := outputRules[s.Kind]; ok {
		sh.rule = rule
		sh.outDir = templateField(cfg.Elem(), rule.dir)
		if f := fieldByKey(cfg.Elem(), rule.outside); f.IsValid() && f.Kind() == reflect.Bool {
			sh.outside = f.Bool()
		}
		sh.name = templateField(cfg.Elem(), rule.name)
		if f := fieldByKey(cfg.Elem(), rule.format); f.IsValid() && f.Kind() == reflect.String {
			sh.format = f.String()
		}
		if sh.outDir == nil || sh.name == nil {
			return nil, fmt.Errorf("stage %q: transfer: true: kind %s has no %s or %s option: this flow cannot check what its workers send back", s.Name, s.Kind, rule.dir, rule.name)
		}
	}
	// The bucket holds, at most, each item in flight's files both ways.
	need := c.settings.TransferMaxItem
	if w := int64(max(sr.Workers, 1)) * 2; need > math.MaxInt64/w {
		need = math.MaxInt64
	} else {
		need *= w
	}
	if sh.store, err = c.files(ctx, need, sr.Stderr); err != nil {
		return nil, fmt.Errorf("stage %q: %w", s.Name, err)
	}
	return sh, nil
}

func fieldByKey(v reflect.Value, key string) reflect.Value {
	t := v.Type()
	for i := range t.NumField() {
		if strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0] == key {
			return v.Field(i)
		}
	}
	return reflect.Value{}
}

func templateField(v reflect.Value, key string) *tmpl.T {
	f := fieldByKey(v, key)
	if !f.IsValid() {
		return nil
	}
	t, _ := f.Interface().(*tmpl.T)
	return t
}

// path evaluates a path option for the item, absolute and clean.
func (s *shipper) path(ctx context.Context, in steps.Input, t *tmpl.T, what string) (string, error) {
	var v any = in.Item
	if t != nil {
		var err error
		if v, err = t.Eval(s.env.Scope(ctx, in)); err != nil {
			return "", steps.Permanent(err)
		}
	}
	p, ok := v.(string)
	if !ok || p == "" {
		return "", steps.Permanent(fmt.Errorf("transfer: %s is not a path: %s", what, tmpl.Stringify(v)))
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(s.dir, p)
	}
	if strings.Contains(p, "${") {
		return "", steps.Permanent(fmt.Errorf("transfer: %s: a path holding '${' cannot be shipped (it would read as an expression on the worker)", p))
	}
	return filepath.Clean(p), nil
}

func tooLarge(format string, args ...any) error {
	return &steps.Error{Class: "too_large", Permanent: true, Err: fmt.Errorf(format, args...)}
}

// run ships the item's inputs, runs it through do, and writes its outputs
// back.
func (s *shipper) run(ctx context.Context, in steps.Input, at *engine.Attempt, do func(context.Context, steps.Input, *engine.Attempt) (any, error)) (v any, err error) {
	// The worker names what it uploads with the attempt's prefix, so that
	// the run can find and delete it when the attempt fails: timed out,
	// answer lost, outputs refused.
	prefix := "out." + s.c.run + "." + strconv.FormatUint(s.c.xfer.seq.Add(1), 10) + "."
	shipped := false
	defer func() {
		if err != nil && shipped {
			s.c.sweep(s.store, prefix)
		}
	}()
	man := map[string]any{"dir": s.dir, "prefix": prefix}
	set := map[string]any{}
	keys := cache.FileOptions[s.kind]
	var files []transferFile
	defer func() { s.remove(files) }()
	var total int64
	for i, t := range s.inputs {
		p, err := s.path(ctx, in, t, "'"+keys[i]+"'")
		if err != nil {
			return nil, err
		}
		set[keys[i]] = p
		f, err := s.upload(ctx, p, s.limits.TransferMaxFile, &total)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	outDir := ""
	if s.outDir != nil {
		p, err := s.path(ctx, in, s.outDir, "the output directory")
		if err != nil {
			return nil, err
		}
		if !s.outside {
			if rel, err := filepath.Rel(s.dir, p); err != nil || !filepath.IsLocal(rel) && rel != "." {
				return nil, steps.Permanent(fmt.Errorf("the output directory %s is outside the pipeline directory %s; set allow_outside: true to allow it", p, s.dir))
			}
		}
		outDir = p
		set[s.rule.dir] = p
	}
	var names *regexp.Regexp
	if s.rule.names != nil {
		nv, err := s.name.Eval(s.env.Scope(ctx, in))
		if err != nil {
			return nil, steps.Permanent(err)
		}
		src, _ := set[keys[0]].(string)
		if names, err = s.rule.names(tmpl.Stringify(nv), src, s.format); err != nil {
			return nil, steps.Permanent(fmt.Errorf("%s: %v", src, err))
		}
	}
	if testHookShipped != nil {
		testHookShipped("uploaded", s.store, files)
	}
	list := make([]any, len(files))
	for i, f := range files {
		list[i] = f.value()
	}
	man["files"], man["set"], man["out"] = list, set, outDir
	shipped = true
	v, err = do(ctx, steps.Input{Index: in.Index, Item: map[string]any{"item": in.Item, "transfer": man}}, at)
	if testHookShipped != nil {
		testHookShipped("answered", s.store, files)
	}
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, steps.Permanent(errors.New("transfer: the worker's answer is not a transfer answer (a worker of another flow version?)"))
	}
	outs, _ := m["outputs"].([]any)
	var got []transferFile
	for _, o := range outs {
		f, ok := fileOf(o)
		if !ok {
			return nil, steps.Permanent(errors.New("transfer: the worker's answer lists an output it does not describe"))
		}
		// Checked before anything is deleted: another item's input is not
		// the worker's to name.
		if !strings.HasPrefix(f.Object, prefix) {
			return nil, steps.Permanent(fmt.Errorf("transfer: the worker sent back %q as object %q, not one of this attempt's (%s*): refused (a worker of another flow version?)", f.Path, f.Object, prefix))
		}
		got = append(got, f)
	}
	defer func() { s.remove(got) }()
	if len(got) > 0 {
		if outDir == "" {
			return nil, steps.Permanent(fmt.Errorf("transfer: the worker sent back %d files, and kind %s writes none", len(got), s.kind))
		}
		if len(got) > s.rule.files {
			return nil, steps.Permanent(fmt.Errorf("transfer: the worker sent back %d files, and kind %s writes at most %d per item: refused", len(got), s.kind, s.rule.files))
		}
		if err := s.writeBack(ctx, outDir, names, got); err != nil {
			return nil, err
		}
	}
	return m["value"], nil
}

// upload puts one input file in the bucket, bounded and digested.
func (s *shipper) upload(ctx context.Context, p string, maxFile int64, total *int64) (transferFile, error) {
	f, info, err := regular.Open(p)
	if err != nil {
		return transferFile{}, ioError(p, err)
	}
	defer f.Close()
	if info.Size() > maxFile {
		return transferFile{}, tooLarge("%s: %d bytes, more than the %d a file may have to be shipped to a worker (flow run --transfer-max-file)", p, info.Size(), maxFile)
	}
	itemFull := func() error {
		return tooLarge("%s: the item's files come to more than the %d bytes an item may ship to a worker (flow run --transfer-max-item)", p, s.limits.TransferMaxItem)
	}
	if info.Size() > s.limits.TransferMaxItem-*total {
		return transferFile{}, itemFull()
	}
	name := "in." + s.c.run + "." + strconv.FormatUint(s.c.xfer.seq.Add(1), 10)
	h := sha256.New()
	// The size that counts is what is read, not what Stat said: a file
	// still being written is shipped as it is when read, within both
	// bounds (one byte more tells that it went past).
	room := min(maxFile, s.limits.TransferMaxItem-*total)
	lr := &io.LimitedReader{R: io.TeeReader(f, h), N: room + 1}
	oi, err := s.store.Put(ctx, jetstream.ObjectMeta{Name: name}, lr)
	if err != nil {
		return transferFile{}, &steps.Error{Class: "connection", Err: fmt.Errorf("%s: shipping it to the workers: %w", p, err)}
	}
	tf := transferFile{Path: p, Object: name, Size: int64(oi.Size), SHA256: hex.EncodeToString(h.Sum(nil))}
	if tf.Size > maxFile {
		s.remove([]transferFile{tf})
		return transferFile{}, tooLarge("%s grew past the %d bytes a file may have to be shipped to a worker while it was read (flow run --transfer-max-file)", p, maxFile)
	}
	if tf.Size > room {
		s.remove([]transferFile{tf})
		return transferFile{}, itemFull()
	}
	*total += tf.Size
	return tf, nil
}

func (s *shipper) remove(files []transferFile) {
	if len(files) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, f := range files {
		_ = s.store.Delete(ctx, f.Object)
	}
}

func ioError(p string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &steps.Error{Class: "io", Err: fmt.Errorf("%s: %v", p, err),
		Permanent: errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, regular.ErrNotRegular)}
}

// writeBack writes the worker's outputs into outDir, each atomically (a
// temporary file beside it, then a rename), never outside it: every step
// goes through an os.Root, of the pipeline directory when the output
// directory must stay inside it. Only names the kind could have given
// its output for this item (names) are written, and only over regular
// files: a worker cannot plant .envrc, .git/hooks/... or replace the
// pipeline file.
func (s *shipper) writeBack(ctx context.Context, outDir string, names *regexp.Regexp, outs []transferFile) error {
	for _, o := range outs {
		if !filepath.IsLocal(filepath.FromSlash(o.Path)) {
			return steps.Permanent(fmt.Errorf("transfer: the worker sent back %q, which is not a name inside %s; refused", o.Path, outDir))
		}
		if names == nil || !names.MatchString(o.Path) {
			return steps.Permanent(fmt.Errorf("transfer: the worker sent back %q, which is not a name this stage's %s gives this item's output in %s: refused (a worker of another flow version, or a name that reads the worker's env?)", o.Path, s.rule.name, outDir))
		}
	}
	root, err := s.openOut(outDir)
	if err != nil {
		return &steps.Error{Class: "io", Err: err}
	}
	defer root.Close()
	var total int64
	for _, o := range outs {
		rel := filepath.FromSlash(o.Path)
		dest := filepath.Join(outDir, rel)
		if fi, err := root.Lstat(rel); err == nil && !fi.Mode().IsRegular() {
			return steps.Permanent(fmt.Errorf("transfer: %s exists and is not a regular file: the worker's output is not written over it", dest))
		}
		if o.Size > s.limits.TransferMaxFile {
			return tooLarge("%s: the worker wrote %d bytes, more than the %d a file may have to be shipped (--transfer-max-file)", dest, o.Size, s.limits.TransferMaxFile)
		}
		if total += o.Size; total > s.limits.TransferMaxItem {
			return tooLarge("%s: the item's outputs come to more than the %d bytes an item may ship (--transfer-max-item)", dest, s.limits.TransferMaxItem)
		}
		if err := fetchInto(ctx, s.store, root, rel, o, dest); err != nil {
			return err
		}
	}
	return nil
}

func (s *shipper) openOut(outDir string) (*os.Root, error) {
	if s.outside {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return nil, err
		}
		return os.OpenRoot(outDir)
	}
	base, err := os.OpenRoot(s.dir)
	if err != nil {
		return nil, err
	}
	defer base.Close()
	rel, _ := filepath.Rel(s.dir, outDir)
	if rel != "." {
		if err := base.MkdirAll(rel, 0o755); err != nil {
			return nil, fmt.Errorf("creating %s: %w", outDir, err)
		}
	}
	return base.OpenRoot(rel)
}

// fetchInto downloads object f into rel under root, atomically, checking
// its size and SHA-256 (and, as it reads, the Object Store's digest).
func fetchInto(ctx context.Context, store jetstream.ObjectStore, root *os.Root, rel string, f transferFile, shown string) error {
	if sub := filepath.Dir(rel); sub != "." {
		if err := root.MkdirAll(sub, 0o755); err != nil {
			return &steps.Error{Class: "io", Err: fmt.Errorf("%s: %w", shown, err)}
		}
	}
	tmp := filepath.Join(filepath.Dir(rel), "."+filepath.Base(rel)+".tmp-"+strconv.Itoa(os.Getpid())+"-"+randHex(6))
	out, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return &steps.Error{Class: "io", Err: fmt.Errorf("%s: %w", shown, err)}
	}
	ok := false
	defer func() {
		if !ok {
			_ = root.Remove(tmp)
		}
	}()
	h := sha256.New()
	err = copyObject(ctx, store, f, io.MultiWriter(out, h))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return withPath(shown, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return checksumError(shown, f.SHA256, got)
	}
	if err := root.Rename(tmp, rel); err != nil {
		return &steps.Error{Class: "io", Err: fmt.Errorf("%s: %w", shown, err)}
	}
	ok = true
	return nil
}

func checksumError(shown, want, got string) error {
	return &steps.Error{Class: "checksum", Err: fmt.Errorf("%s: the shipped copy does not match its checksum (SHA-256 %s announced, %s received): refused; the file changed while it was shipped, or the Object Store lost data", shown, want[:12], got[:12])}
}

func withPath(shown string, err error) error {
	var se *steps.Error
	if errors.As(err, &se) {
		return &steps.Error{Class: se.Class, Permanent: se.Permanent, Err: fmt.Errorf("%s: %w", shown, se.Err)}
	}
	return &steps.Error{Class: "connection", Err: fmt.Errorf("%s: %w", shown, err)}
}

// copyObject copies object f to w, no more than its announced size.
func copyObject(ctx context.Context, store jetstream.ObjectStore, f transferFile, w io.Writer) error {
	r, err := store.Get(ctx, f.Object)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return &steps.Error{Class: "io", Err: fmt.Errorf("the shipped copy is gone from the Object Store (the run ended, or it expired): %w", err)}
		}
		return err
	}
	defer r.Close()
	n, err := io.Copy(w, io.LimitReader(r, f.Size+1))
	if errors.Is(err, jetstream.ErrDigestMismatch) {
		return &steps.Error{Class: "checksum", Err: fmt.Errorf("the Object Store's digest does not match what was read: refused")}
	}
	if err != nil {
		return err
	}
	if n != f.Size {
		return &steps.Error{Class: "checksum", Err: fmt.Errorf("the shipped copy has %d bytes where %d were announced: refused", n, f.Size)}
	}
	return nil
}

// ---- the worker's side ----

// transferStep runs a transfer: true stage's items in a worker: the
// manifest's files downloaded into a private mirror, the step built for
// the item on them, what it wrote uploaded.
type transferStep struct {
	w      *Worker
	run    string
	kind   *steps.Kind
	stage  *spec.Stage
	vars   map[string]any
	env    steps.Env
	outKey string

	mu    sync.Mutex
	store jetstream.ObjectStore
}

// transferring wraps the step a hello built when its stage ships files.
func (w *Worker) transferring(run string, hello *protocol.Hello, b steps.Built) (steps.Built, error) {
	p, err := spec.Parse(hello.File, []byte(hello.Source), spec.Options{}, w.cfg.Registry)
	if err != nil {
		return b, nil // Build parsed it: cannot happen
	}
	var st *spec.Stage
	for _, s := range p.Stages {
		if s.Name == hello.Stage {
			st = s
		}
	}
	if st == nil || !st.Transfer {
		return b, nil
	}
	_ = b.Close()
	k, ok := w.cfg.Registry.Lookup(st.Kind)
	if _, known := cache.FileOptions[st.Kind]; !ok || !known {
		return steps.Built{}, fmt.Errorf("stage %q: transfer: true: this worker cannot ship the files of kind %s", st.Name, st.Kind)
	}
	for _, v := range p.Vars.List {
		if val, ok := hello.Vars[v.Name]; ok {
			v.Value = val
		}
	}
	vars := p.Vars.Map()
	ts := &transferStep{w: w, run: run, kind: k, stage: st, vars: vars, outKey: outputRules[st.Kind].dir,
		env: steps.Env{Stage: st.Name, Vars: vars, Env: stagehost.Environ(), Workers: hello.Workers, Timeout: st.Timeout,
			Stdin: strings.NewReader(""), Stdout: w.cfg.Log, Stderr: w.cfg.Log}}
	return steps.Built{Step: ts}, nil
}

func (ts *transferStep) bucket(ctx context.Context) (jetstream.ObjectStore, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.store == nil {
		s, err := ts.w.st.js.ObjectStore(ctx, filesBucket(ts.run))
		if err != nil {
			return nil, &steps.Error{Class: "connection", Err: fmt.Errorf("the run's Object Store bucket %s: %w", filesBucket(ts.run), err)}
		}
		ts.store = s
	}
	return ts.store, nil
}

// Do runs one item on local copies of its files.
func (ts *transferStep) Do(ctx context.Context, in steps.Input) (any, error) {
	wrapped, _ := in.Item.(map[string]any)
	man, _ := wrapped["transfer"].(map[string]any)
	if man == nil {
		return nil, steps.Permanent(errors.New("transfer: the item came without its files' manifest (a run of another flow version?)"))
	}
	store, err := ts.bucket(ctx)
	if err != nil {
		return nil, err
	}
	dir, _ := man["dir"].(string)
	outDir, _ := man["out"].(string)
	set, _ := man["set"].(map[string]any)
	prefix, _ := man["prefix"].(string)
	if !cleanAbs(dir) || outDir != "" && !cleanAbs(outDir) {
		return nil, steps.Permanent(errors.New("transfer: the manifest's directories are not clean absolute paths: refused"))
	}
	if want := "out." + ts.run + "."; !strings.HasPrefix(prefix, want) || strings.ContainsAny(prefix[len(want):], "*>/ ") {
		return nil, steps.Permanent(fmt.Errorf("transfer: the manifest's output prefix %q is not one of run %s's: refused (a run of another flow version?)", prefix, ts.run))
	}
	tmp, err := os.MkdirTemp("", "flow-transfer-")
	if err != nil {
		return nil, &steps.Error{Class: "io", Err: err}
	}
	defer os.RemoveAll(tmp)
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return nil, &steps.Error{Class: "io", Err: err}
	}
	defer root.Close()
	limits := ts.w.cfg.Settings
	files, _ := man["files"].([]any)
	inputs := map[string]bool{}
	var total int64
	for _, fv := range files {
		f, ok := fileOf(fv)
		if !ok || !cleanAbs(f.Path) {
			return nil, steps.Permanent(errors.New("transfer: the manifest names a file that is not a clean absolute path: refused"))
		}
		if f.Size > limits.TransferMaxFile {
			return nil, tooLarge("%s: %d bytes, more than the %d this worker takes per file (flow worker --transfer-max-file)", f.Path, f.Size, limits.TransferMaxFile)
		}
		if total += f.Size; total > limits.TransferMaxItem {
			return nil, tooLarge("%s: the item's files come to more than the %d bytes this worker takes per item (flow worker --transfer-max-item)", f.Path, limits.TransferMaxItem)
		}
		rel := mirror(f.Path)
		inputs[rel] = true
		if err := fetchInto(ctx, store, root, rel, f, f.Path); err != nil {
			return nil, err
		}
	}
	if err := ts.checkSet(set, inputs, outDir); err != nil {
		return nil, err
	}
	if err := root.MkdirAll(mirror(dir), 0o755); err != nil {
		return nil, &steps.Error{Class: "io", Err: err}
	}
	opts := withOptions(ts.stage.Options, set, tmp)
	env := ts.env
	env.Dir = filepath.Join(tmp, dir)
	b, err := ts.kind.Build(opts, &conf.Context{Vars: ts.vars}, &env)
	if err != nil {
		return nil, steps.Permanent(unmirrorErr(err, tmp))
	}
	v, err := b.Step.Do(ctx, steps.Input{Index: in.Index, Item: wrapped["item"]})
	_ = b.Close()
	if err != nil {
		return nil, unmirrorErr(err, tmp)
	}
	outs := []any{}
	if outDir != "" {
		if outs, err = ts.upload(ctx, store, root, mirror(outDir), inputs, prefix); err != nil {
			return nil, unmirrorErr(err, tmp)
		}
	}
	return map[string]any{"value": unmirror(v, tmp), "outputs": outs}, nil
}

// checkSet refuses a manifest whose set does not do what the run's side
// does: point each of the kind's file options at one of the files just
// downloaded, and its output option at the output directory; nothing
// else. Otherwise a manifest could make the step read or write the
// worker's own files (TMP joined with "/../../etc/shadow" is
// /etc/shadow; an option left out keeps the pipeline's value, absolute
// with allow_outside) or change any other option.
func (ts *transferStep) checkSet(set map[string]any, inputs map[string]bool, outDir string) error {
	refuse := func(format string, args ...any) error {
		return steps.Permanent(fmt.Errorf("transfer: the manifest's options: "+format+": refused (a run of another flow version?)", args...))
	}
	want := slices.Clone(cache.FileOptions[ts.stage.Kind])
	if ts.outKey != "" {
		want = append(want, ts.outKey)
		if outDir == "" {
			return refuse("no output directory for kind %s", ts.stage.Kind)
		}
	} else if outDir != "" {
		return refuse("an output directory for kind %s, which writes none", ts.stage.Kind)
	}
	if len(set) != len(want) {
		return refuse("%d set where kind %s ships %s", len(set), ts.stage.Kind, strings.Join(want, ", "))
	}
	for _, k := range want {
		p, ok := set[k].(string)
		switch {
		case !ok || !cleanAbs(p):
			return refuse("%s is not a clean absolute path", k)
		case k == ts.outKey && p != outDir:
			return refuse("%s is %s, not the output directory %s", k, p, outDir)
		case k != ts.outKey && !inputs[mirror(p)]:
			return refuse("%s is %s, not one of the files shipped", k, p)
		}
	}
	return nil
}

// upload ships back every regular file the step wrote under out (inside
// the mirror), bounded, each named with the attempt's prefix; when one
// fails, those already shipped are deleted.
func (ts *transferStep) upload(ctx context.Context, store jetstream.ObjectStore, root *os.Root, out string, inputs map[string]bool, prefix string) (_ []any, err error) {
	limits := ts.w.cfg.Settings
	var outs []any
	var put []string
	defer func() {
		if err != nil && len(put) > 0 {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, o := range put {
				_ = store.Delete(dctx, o)
			}
		}
	}()
	var total int64
	err = fs.WalkDir(root.FS(), filepath.ToSlash(out), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == filepath.ToSlash(out) {
				return fs.SkipAll // it wrote nothing
			}
			return err
		}
		rel := filepath.FromSlash(p)
		if !d.Type().IsRegular() || inputs[rel] {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		name := string(filepath.Separator) + rel
		if info.Size() > limits.TransferMaxFile {
			return tooLarge("%s: the step wrote %d bytes, more than the %d a file may have to be shipped back (flow worker --transfer-max-file)", name, info.Size(), limits.TransferMaxFile)
		}
		if total += info.Size(); total > limits.TransferMaxItem {
			return tooLarge("%s: the item's outputs come to more than the %d bytes an item may ship back (flow worker --transfer-max-item)", name, limits.TransferMaxItem)
		}
		f, err := root.Open(rel)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		obj := prefix + strconv.Itoa(len(put))
		put = append(put, obj) // a Put that fails may have left chunks
		oi, err := store.Put(ctx, jetstream.ObjectMeta{Name: obj}, io.TeeReader(io.LimitReader(f, info.Size()), hashWriter{h}))
		if err != nil {
			return &steps.Error{Class: "connection", Err: fmt.Errorf("%s: shipping it back: %w", name, err)}
		}
		relOut, _ := filepath.Rel(out, rel)
		outs = append(outs, transferFile{Path: filepath.ToSlash(relOut), Object: obj, Size: int64(oi.Size), SHA256: hex.EncodeToString(h.Sum(nil))}.value())
		return nil
	})
	return outs, err
}

type hashWriter struct{ h hash.Hash }

func (w hashWriter) Write(p []byte) (int, error) { return w.h.Write(p) }

func cleanAbs(p string) bool { return filepath.IsAbs(p) && filepath.Clean(p) == p }

// mirror is where the run's absolute path p lives in the worker's
// private directory, relative to it.
func mirror(p string) string {
	rel := strings.TrimLeft(strings.TrimPrefix(p, filepath.VolumeName(p)), `/\`)
	if rel == "" {
		return "."
	}
	return rel
}

// withOptions is the stage's options with the keys of set pointing into
// the mirror under tmp.
func withOptions(n *yaml.Node, set map[string]any, tmp string) *yaml.Node {
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	if n != nil && n.Kind == yaml.MappingNode {
		cp := *n
		out = &cp
		out.Content = nil
		for i := 0; i+1 < len(n.Content); i += 2 {
			if _, over := set[n.Content[i].Value]; !over {
				out.Content = append(out.Content, n.Content[i], n.Content[i+1])
			}
		}
	}
	for k, v := range set {
		p, _ := v.(string)
		out.Content = append(out.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: filepath.Join(tmp, p)})
	}
	return out
}

// unmirror gives back the run's paths in a result: a string naming a file
// in the mirror names the run's file.
func unmirror(v any, tmp string) any {
	switch x := v.(type) {
	case string:
		if x == tmp || strings.HasPrefix(x, tmp+string(filepath.Separator)) {
			if r := x[len(tmp):]; r != "" {
				return r
			}
			return string(filepath.Separator)
		}
		return x
	case map[string]any:
		for k, e := range x {
			x[k] = unmirror(e, tmp)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = unmirror(e, tmp)
		}
		return x
	}
	return v
}

// unmirrorErr names the run's paths in an error, keeping what the retry
// policy reads.
func unmirrorErr(err error, tmp string) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	msg := strings.ReplaceAll(err.Error(), tmp, "")
	var se *steps.Error
	if errors.As(err, &se) {
		return &steps.Error{Class: se.Class, Permanent: se.Permanent, RetryAfter: se.RetryAfter, Err: errors.New(msg)}
	}
	return &steps.Error{Class: steps.ClassOf(err), Err: errors.New(msg)}
}
