// Package cachekey builds the key under which one item's result is cached
// for one stage, from plain Go values, and explains how two keys differ.
//
// A key covers what decides an item's result and nothing else:
//
//   - the step kind;
//   - its options after defaults, without the policy keys (PolicyKeys:
//     workers, rate, limits, timeouts, retries, on_error, order...), which
//     decide when, how often and how many at once, not what one item gives;
//   - the item, as canonical JSON;
//   - the content (SHA-256) of each file the item reads, never its mtime;
//   - FormatVersion, bumped when what a kind produces changes shape;
//   - an optional salt (cache.salt), the user's own way to start afresh;
//   - the environment variables the stage declares it depends on, and no
//     others: a changed PATH must not invalidate every entry.
//
// Parts, what a key is the digest of, never holds a secret or an
// environment value in clear: those are replaced by their SHA-256, so the
// parts can be stored beside the result and compared later to explain a
// miss.
package cachekey

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// FormatVersion is the version of the cache format and of what kinds put
// in it. Entries of another version never match.
const FormatVersion = 1

// PolicyKeys are the stage keys left out of a key: they cannot change the
// result of one item.
var PolicyKeys = []string{
	"name", "mode", "workers", "rate", "burst", "limit", "limits", "timeout", "timeouts",
	"deadline", "retry", "order", "key", "complete", "on_error", "max_errors", "when",
	"max_tasks_per_child", "memory", "cache",
}

// maxItemInParts is the largest canonical item kept in clear in Parts; a
// larger one is represented by its digest alone.
const maxItemInParts = 4 << 10

// Input is what a key is built from.
type Input struct {
	Kind    string
	Options map[string]any
	Item    any
	// Files are the paths of the files the item reads (relative to the
	// pipeline's directory or absolute, as the stage names them).
	Files []string
	// Env holds every environment variable the stage declares, with its
	// value ("" when unset).
	Env  map[string]string
	Salt string
	// Secrets are values never to store in clear: any string of the
	// options or the item holding one is replaced by its digest in Parts.
	Secrets []string
	// Prepared says that Options come from PrepareOptions (with the same
	// Secrets): a stage's options are the same for all its items, so they
	// are made canonical once, not once per item.
	Prepared bool
	// Encoded, with Prepared, is EncodeOptions(Options): the options'
	// encodings, written once per stage rather than once per item.
	Encoded *EncodedOptions
}

// EncodedOptions are prepared options as every key of a stage writes them:
// canonical JSON for the digest, and json.Marshal's JSON for the stored
// Parts (Key.PartsJSON).
type EncodedOptions struct {
	canonical, marshalled []byte
}

// EncodeOptions encodes options that PrepareOptions returned.
func EncodeOptions(prepared map[string]any) (*EncodedOptions, error) {
	m, err := json.Marshal(prepared)
	if err != nil {
		return nil, err
	}
	return &EncodedOptions{canonical: canonicalBytes(prepared), marshalled: m}, nil
}

// PrepareOptions returns options as Build puts them in Parts: without the
// policy keys, canonical, secrets replaced by their digests. The result
// is shared by every key built from it and must not be changed.
func PrepareOptions(options map[string]any, secrets []string) (map[string]any, error) {
	red := redactor(secrets)
	out := make(map[string]any, len(options))
	for k, v := range options {
		if slices.Contains(PolicyKeys, k) {
			continue
		}
		c, err := canonicalValue(v)
		if err != nil {
			return nil, fmt.Errorf("option %s: %w", k, err)
		}
		if red != nil {
			c = red(c)
		}
		out[k] = c
	}
	return validValue(out).(map[string]any), nil
}

// validUTF8 is s as a JSON round trip leaves it: each byte that is not
// UTF-8 becomes U+FFFD. The key's digest was defined through one.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string([]rune(s))
}

// validValue applies validUTF8 to every string and key of a canonical
// value.
func validValue(v any) any {
	switch x := v.(type) {
	case string:
		return validUTF8(x)
	case []any:
		for i, e := range x {
			x[i] = validValue(e)
		}
		return x
	case map[string]any:
		out := make(map[string]any, len(x))
		for _, k := range validKeys(x) {
			out[validUTF8(k)] = validValue(x[k])
		}
		return out
	}
	return v
}

// validKeys are m's keys in the order a JSON round trip meets them: sorted
// when one is not UTF-8, so that of two keys that become one, the later
// wins (json.Marshal sorts keys, decoding keeps the last), as before.
func validKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	valid := true
	for k := range m {
		keys = append(keys, k)
		valid = valid && utf8.ValidString(k)
	}
	if !valid {
		sort.Strings(keys)
	}
	return keys
}

// Parts are what a key is the digest of.
type Parts struct {
	Format     int               `json:"format"`
	Kind       string            `json:"kind"`
	Options    map[string]any    `json:"options"`
	ItemDigest string            `json:"item_digest"`
	Files      map[string]string `json:"files,omitempty"` // path -> sha256 of the content
	Env        map[string]string `json:"env,omitempty"`   // name -> sha256 of the value
	Salt       string            `json:"salt,omitempty"`
	// Item is the canonical item, when small enough, for people reading
	// the cache; the key covers ItemDigest, not this.
	Item json.RawMessage `json:"item,omitempty"`
}

// Key is a built key.
type Key struct {
	Digest string // hex SHA-256 of the canonical Parts (without Item)
	Parts  Parts
	// opts are Parts.Options encoded, when Build was given them.
	opts *EncodedOptions
}

// partsJSON is Parts as json.Marshal writes it, with the options already
// encoded.
type partsJSON struct {
	Format     int               `json:"format"`
	Kind       string            `json:"kind"`
	Options    json.RawMessage   `json:"options"`
	ItemDigest string            `json:"item_digest"`
	Files      map[string]string `json:"files,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	Salt       string            `json:"salt,omitempty"`
	Item       json.RawMessage   `json:"item,omitempty"`
}

// PartsJSON is json.Marshal(k.Parts), the form the store keeps; the
// options are not encoded again when Build had them encoded
// (Input.Encoded). TestPartsJSON holds the two equal.
func (k Key) PartsJSON() ([]byte, error) {
	if k.opts == nil {
		return json.Marshal(k.Parts)
	}
	p := k.Parts
	return json.Marshal(partsJSON{Format: p.Format, Kind: p.Kind, Options: k.opts.marshalled, ItemDigest: p.ItemDigest,
		Files: p.Files, Env: p.Env, Salt: p.Salt, Item: p.Item})
}

// FileDigester gives the SHA-256 (hex) of a file's content. The store's
// stat cache is one, so that unchanged files are not read again.
type FileDigester interface {
	FileDigest(path string) (string, error)
}

// ReadFiles is the FileDigester that reads every file every time.
type ReadFiles struct{}

// FileDigest hashes the file's content.
func (ReadFiles) FileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// bufs are the buffers keys are written in: the canonical JSON of an
// item and of the parts, hashed, then dropped.
var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Build builds the key of in, reading file digests through files (ReadFiles
// when nil).
func Build(in Input, files FileDigester) (Key, error) {
	if files == nil {
		files = ReadFiles{}
	}
	red := redactor(in.Secrets)
	p := Parts{Format: FormatVersion, Kind: in.Kind, Salt: in.Salt, Options: in.Options}
	var opts *EncodedOptions
	if in.Prepared {
		opts = in.Encoded
	} else {
		var err error
		if p.Options, err = PrepareOptions(in.Options, in.Secrets); err != nil {
			return Key{}, err
		}
	}
	item, err := canonicalValue(in.Item)
	if err != nil {
		return Key{}, fmt.Errorf("item: %w", err)
	}
	buf := bufs.Get().(*bytes.Buffer)
	defer bufs.Put(buf)
	buf.Reset()
	// The digest covers the item in full, secrets included: two items
	// differing only in a secret are different items.
	writeCanonical(buf, item)
	p.ItemDigest = Digest(buf.Bytes())
	if red != nil {
		buf.Reset()
		writeCanonical(buf, red(item))
	}
	if buf.Len() <= maxItemInParts {
		p.Item = bytes.Clone(buf.Bytes())
	}
	for _, f := range in.Files {
		if p.Files == nil {
			p.Files = map[string]string{}
		}
		d, err := files.FileDigest(f)
		if err != nil {
			return Key{}, fmt.Errorf("input file %s: %w", f, err)
		}
		p.Files[f] = d
	}
	for name, v := range in.Env {
		if p.Env == nil {
			p.Env = map[string]string{}
		}
		p.Env[name] = Digest([]byte(v))
	}
	buf.Reset()
	p.writeDigested(buf, opts)
	return Key{Digest: Digest(buf.Bytes()), Parts: p, opts: opts}, nil
}

// writeDigested writes Canonical(p) without Item, from p's fields directly
// (their JSON names and omitempty rules, keys in sorted order), with no
// JSON round trip: p's values are canonical already. opts, when set, are
// p.Options encoded. TestDigestIsCanonicalParts holds the two equal.
func (p Parts) writeDigested(b *bytes.Buffer, opts *EncodedOptions) {
	b.WriteByte('{')
	if len(p.Env) > 0 {
		b.WriteString(`"env":`)
		writeCanonical(b, stringMap(p.Env))
		b.WriteByte(',')
	}
	if len(p.Files) > 0 {
		b.WriteString(`"files":`)
		writeCanonical(b, stringMap(p.Files))
		b.WriteByte(',')
	}
	b.WriteString(`"format":`)
	b.WriteString(strconv.Itoa(p.Format))
	b.WriteString(`,"item_digest":`)
	writeCanonical(b, p.ItemDigest)
	b.WriteString(`,"kind":`)
	writeCanonical(b, validUTF8(p.Kind))
	b.WriteString(`,"options":`)
	switch {
	case opts != nil:
		b.Write(opts.canonical)
	case p.Options != nil:
		writeCanonical(b, p.Options)
	default:
		b.WriteString("null")
	}
	if p.Salt != "" {
		b.WriteString(`,"salt":`)
		writeCanonical(b, validUTF8(p.Salt))
	}
	b.WriteByte('}')
}

func stringMap(in map[string]string) map[string]any {
	out := make(map[string]any, len(in))
	for _, k := range validKeys(in) {
		out[validUTF8(k)] = validUTF8(in[k])
	}
	return out
}

// canonicalBytes writes c, already canonicalValue's output, as canonical
// JSON.
func canonicalBytes(c any) []byte {
	var b bytes.Buffer
	writeCanonical(&b, c)
	return b.Bytes()
}

// Digest is the hex SHA-256 of b.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], s[:])
	return string(h[:])
}

// Canonical is v as canonical JSON: object keys sorted, no HTML escaping,
// numbers in one spelling (1, 1.0 and 1e0 are all 1). v must already be
// canonicalValue's output or a value json.Marshal accepts.
func Canonical(v any) []byte {
	c, err := canonicalValue(v)
	if err != nil {
		// Only reached with values Build has already checked.
		panic(err)
	}
	var b bytes.Buffer
	writeCanonical(&b, c)
	return b.Bytes()
}

// canonicalValue turns any JSON-marshalable value into nil, bool, string,
// json.Number (canonical spelling), []any or map[string]any.
func canonicalValue(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool, string:
		return x, nil
	case json.Number:
		return canonicalNumber(x)
	// Numbers as the JSON round trip below leaves them, without it.
	case int:
		return json.Number(strconv.FormatInt(int64(x), 10)), nil
	case int64:
		return json.Number(strconv.FormatInt(x, 10)), nil
	case float64:
		// Below 2^53, json.Marshal spells an integer exactly; above, it
		// may round its digits (9223372036854775000), which the round
		// trip keeps. NaN and infinities fail there.
		if math.Abs(x) < 1<<53 {
			return floatNumber(x), nil
		}
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := canonicalValue(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := canonicalValue(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var back any
	if err := d.Decode(&back); err != nil {
		return nil, err
	}
	return canonicalValue(back)
}

func canonicalNumber(n json.Number) (json.Number, error) {
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return json.Number(strconv.FormatInt(i, 10)), nil
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return "", fmt.Errorf("number %s: %w", n, err)
	}
	return floatNumber(f), nil
}

// floatNumber is f's canonical spelling: an integer's without a point.
func floatNumber(f float64) json.Number {
	if f == math.Trunc(f) && math.Abs(f) < 1<<63 {
		return json.Number(strconv.FormatInt(int64(f), 10))
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
}

func writeCanonical(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case json.Number:
		b.WriteString(string(x))
	case string:
		if plainASCII(x) {
			b.WriteByte('"')
			b.WriteString(x)
			b.WriteByte('"')
			return
		}
		e := json.NewEncoder(b)
		e.SetEscapeHTML(false)
		_ = e.Encode(x)
		b.Truncate(b.Len() - 1) // Encode's newline
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			writeCanonical(b, e)
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeCanonical(b, k)
			b.WriteByte(':')
			writeCanonical(b, x[k])
		}
		b.WriteByte('}')
	}
}

// plainASCII says JSON writes s as it is between quotes: printable
// ASCII, no quote or backslash.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// redactor returns a function replacing, in a canonical value, every
// string that holds one of secrets by "sha256:" and its digest; nil
// without secrets.
func redactor(secrets []string) func(any) any {
	var ss []string
	for _, s := range secrets {
		if s != "" {
			ss = append(ss, s)
		}
	}
	if len(ss) == 0 {
		return nil
	}
	var red func(any) any
	red = func(v any) any {
		switch x := v.(type) {
		case string:
			for _, s := range ss {
				if strings.Contains(x, s) {
					return "sha256:" + Digest([]byte(x))
				}
			}
		case []any:
			out := make([]any, len(x))
			for i, e := range x {
				out[i] = red(e)
			}
			return out
		case map[string]any:
			out := make(map[string]any, len(x))
			for k, e := range x {
				out[k] = red(e)
			}
			return out
		}
		return v
	}
	return red
}
