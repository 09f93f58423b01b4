// Package redact hides secret values in the text sluice prints: its log (the host's own lines and the
// plugin lines it forwards), the run summary, errors shown by the HTTP API and sent in alerts.
//
// A Set holds the values to hide. The config loader finds them (settings a plugin marks secret, what
// ${env:…} and ${file:…} references stand for, alert header values), the CLI adds them to the one Set of
// the process, and every place that writes text for people passes it through the Set: its Handler wraps
// the log handler, and String is applied to the summary, the API's errors and the alerts' errors. Each
// occurrence of a value becomes Marker.
//
// The cost is per line of text, never per record: a Set compiles its values into one strings.Replacer,
// which finds every value in one pass over a line.
package redact

import (
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Marker replaces each secret value. It is the text `sluice validate --print` shows for a secret.
const Marker = "<redacted>"

// MinLen is the length, in bytes, under which a value is not hidden: a value of one to three characters
// ("1", "on", "dev") would match ordinary text everywhere and hide nothing worth hiding.
const MinLen = 4

// Set is a set of secret values. The zero value is empty and ready to use; a Set is safe for concurrent
// use, and values can be added while it is in use. Values are never removed: text about an old value (a
// rotated password, a pipeline still stopping) is still hidden.
type Set struct {
	mu     sync.Mutex
	values map[string]bool
	// rep replaces every value with Marker; nil while the set is empty.
	rep atomic.Pointer[strings.Replacer]
}

// Add adds secret values, and the forms in which they are commonly written out (see Forms). Values
// shorter than MinLen are ignored.
func (s *Set) Add(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	added := false
	for _, v := range values {
		for _, f := range Forms(v) {
			if len(f) < MinLen || s.values[f] {
				continue
			}
			if s.values == nil {
				s.values = map[string]bool{}
			}
			s.values[f], added = true, true
		}
	}
	if !added {
		return
	}
	all := make([]string, 0, len(s.values))
	for v := range s.values {
		all = append(all, v)
	}
	// At one place in the text, strings.Replacer takes the first value in argument order that matches:
	// longer values first, so that "Bearer s3cret-token" is hidden whole rather than around its tail.
	slices.SortFunc(all, func(a, b string) int {
		if len(a) != len(b) {
			return len(b) - len(a)
		}
		return strings.Compare(a, b)
	})
	pairs := make([]string, 0, 2*len(all))
	for _, v := range all {
		pairs = append(pairs, v, Marker)
	}
	s.rep.Store(strings.NewReplacer(pairs...))
}

// Len returns how many values (forms included) the set hides.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.values)
}

// String returns text with every secret value in it replaced by Marker. A nil Set returns text as it is.
func (s *Set) String(text string) string {
	if s == nil {
		return text
	}
	rep := s.rep.Load()
	if rep == nil {
		return text
	}
	return rep.Replace(text)
}

// Error returns err unchanged when its message holds no secret value, else an error whose message is
// the redacted one and which wraps err (errors.Is and errors.As still see its class).
func (s *Set) Error(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if r := s.String(msg); r != msg {
		return &redacted{msg: r, err: err}
	}
	return err
}

type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }

// Forms returns v and the forms in which a program may write it out, each once: escaped inside a JSON
// string, percent-encoded (in a URL's query or path), and, when v is a URL with a password
// (scheme://user:password@host…), the password alone, as written and decoded. A plugin given a DSN
// tends to log the DSN's host and its error quotes the password only.
func Forms(v string) []string {
	if v == "" {
		return nil
	}
	out := []string{v}
	add := func(f string) {
		if f != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if b, err := json.Marshal(v); err == nil {
		add(string(b[1 : len(b)-1]))
	}
	add(url.QueryEscape(v))
	add(url.PathEscape(v))
	if p, ok := urlPassword(v); ok {
		add(p)
		if d, err := url.PathUnescape(p); err == nil {
			add(d)
		}
	}
	return out
}

// urlPassword returns the password of a URL written scheme://user:password@host…, as written. It does not
// parse the URL with net/url, which refuses some that drivers accept (mongodb://u:p@h1:1,h2:2/).
func urlPassword(v string) (string, bool) {
	i := strings.Index(v, "://")
	if i < 0 {
		return "", false
	}
	rest := v[i+3:]
	if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		rest = rest[:j]
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return "", false
	}
	_, p, ok := strings.Cut(rest[:at], ":")
	return p, ok && p != ""
}
