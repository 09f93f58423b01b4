package config

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluicehq/sluice/runtime/alert"
)

// Alert is one entry of a file's alerts key: a webhook that the file's pipelines' events are posted to.
// Its URL and header values are expanded (${env:…}, ${file:…}); header values are never printed, nor is a
// URL that came from a reference.
type Alert struct {
	alert.Target
	// Pos is where the entry starts.
	Pos Pos
	// urlRef: the URL holds a reference, so Print redacts it.
	urlRef bool
}

// alertKeys are the keys of an alert, in the order they are documented.
var alertKeys = []string{"url", "events", "min_interval", "headers", "buffer_high", "lag_high"}

// reservedHeaders are set by sluice on every post; an alert cannot set them.
var reservedHeaders = []string{"Content-Type", "Content-Length", "Host", "Transfer-Encoding"}

// alerts reads the alerts key (n, nil when absent):
//
//	alerts:
//	  - url: https://hooks.example.com/${env:HOOK_TOKEN}   # http or https; references allowed
//	    events: [pipeline_failed, buffer_high]              # required, at least one
//	    min_interval: 1m                                    # per pipeline and event; 0s: no limit
//	    headers: { Authorization: "Bearer ${env:TOKEN}" }   # values never printed
//	    buffer_high: 0.8                                    # with buffer_high: fill of the buffer's bound
//	    lag_high: 5m                                        # with lag_high: source lag
func (v *validator) alerts(n *node) []*Alert {
	if n == nil || isNull(n) {
		return nil
	}
	if n.kind != kindList {
		v.errorf(n.pos, "alerts: want a list of alerts like { url: https://…, events: [pipeline_failed] }, got %s", describe(n, false))
		return nil
	}
	var out []*Alert
	for _, it := range n.items {
		if a := v.alert(it); a != nil {
			out = append(out, a)
		}
	}
	return out
}

func (v *validator) alert(n *node) *Alert {
	if n.kind != kindMap {
		v.errorf(n.pos, "alert: want an object with url and events, got %s", describe(n, true))
		return nil
	}
	a := &Alert{Pos: n.pos, Target: alert.Target{MinInterval: alert.DefaultMinInterval, BufferHigh: alert.DefaultBufferHigh,
		LagHigh: alert.DefaultLagHigh}}
	typos := v.unknownKeys(n, "in alert", alertKeys)
	errs := len(v.errs)
	switch c := n.fields["url"]; {
	case c == nil:
		if !typos["url"] {
			v.errorf(n.pos, "alert has no url: add url: https://…")
		}
	default:
		a.URL, a.urlRef = v.alertURL(c)
	}
	a.Name = a.Pos.String() + " " + alert.Host(a.URL)
	switch c := n.fields["events"]; {
	case c == nil:
		if !typos["events"] {
			v.errorf(n.pos, "alert has no events: add events: [...] with some of %s", eventNames())
		}
	default:
		a.Events = v.alertEvents(c)
	}
	if c := n.fields["min_interval"]; c != nil {
		if d, ok := v.intervalKey(c, "min_interval"); ok {
			a.MinInterval = d
		}
	}
	if c := n.fields["headers"]; c != nil {
		a.Headers = v.alertHeaders(c)
	}
	if c := n.fields["buffer_high"]; c != nil {
		v.needsEvent(a, c, alert.BufferHigh)
		f, ok := c.scalar.(float64)
		if i, isInt := c.scalar.(int64); isInt {
			f, ok = float64(i), true
		}
		switch {
		case c.kind != kindScalar || !ok:
			v.errorf(c.pos, "buffer_high: want a fraction of the buffer's bound, like 0.8, got %s", describe(c, false))
		case !(f > 0 && f <= 1):
			v.errorf(c.pos, "buffer_high: want a fraction above 0 and at most 1 (0.8 is 80%% of the buffer's bound), got %s", describe(c, false))
		default:
			a.BufferHigh = f
		}
	}
	if c := n.fields["lag_high"]; c != nil {
		v.needsEvent(a, c, alert.LagHigh)
		if d, ok := v.durationKey(c, "lag_high"); ok {
			a.LagHigh = d
		}
	}
	if len(v.errs) > errs {
		return nil
	}
	return a
}

func eventNames() string {
	names := make([]string, len(alert.Events))
	for i, e := range alert.Events {
		names[i] = string(e)
	}
	return strings.Join(names, ", ")
}

// alertURL reads an alert's URL, expanding references; it never quotes the URL, which may hold a token.
func (v *validator) alertURL(c *node) (string, bool) {
	s, ok := v.stringKey(c, "url")
	if !ok {
		return "", false
	}
	r := v.x.expand(s, true, MaxValueBytes)
	v.secrets = append(v.secrets, r.values...)
	for _, p := range r.problems {
		v.errorf(c.pos, "url: %s", p)
	}
	if len(r.problems) > 0 {
		return "", r.refs
	}
	where := "url"
	if r.refs {
		where = "url (from a reference)"
	}
	u, err := url.Parse(r.out)
	switch {
	case r.over:
		v.errorf(c.pos, "%s: longer than %s", where, sizeText(MaxValueBytes))
	case err != nil || r.out == "":
		v.errorf(c.pos, "%s: not a URL: want http://HOST/PATH or https://HOST/PATH", where)
	case u.Scheme == "":
		v.errorf(c.pos, "%s: want an http or https URL like https://HOST/PATH", where)
	case u.Scheme != "http" && u.Scheme != "https":
		v.errorf(c.pos, "%s: want an http or https URL, got scheme %s", where, quote(u.Scheme))
	case u.Host == "":
		v.errorf(c.pos, "%s: the URL has no host: want http://HOST/PATH or https://HOST/PATH", where)
	}
	return r.out, r.refs
}

// alertEvents reads an alert's events: a list of known event names, each once.
func (v *validator) alertEvents(c *node) []alert.Event {
	switch {
	case c.kind != kindList:
		v.errorf(c.pos, "events: want a list of events with some of %s, got %s", eventNames(), describe(c, false))
		return nil
	case len(c.items) == 0:
		v.errorf(c.pos, "events is empty: list some of %s", eventNames())
		return nil
	}
	names := make([]string, len(alert.Events))
	for i, e := range alert.Events {
		names[i] = string(e)
	}
	var out []alert.Event
	for _, it := range c.items {
		s, ok := v.stringKey(it, "event")
		switch {
		case !ok:
		case !slices.Contains(names, s):
			v.errorf(it.pos, "unknown event %s%s", quote(s), hint(s, names, "events"))
		case slices.Contains(out, alert.Event(s)):
			v.errorf(it.pos, "event %s is listed twice", quote(s))
		default:
			out = append(out, alert.Event(s))
		}
	}
	return out
}

// alertHeaders reads an alert's headers: names are HTTP header names, values strings whose references are
// expanded. Messages never quote a value.
func (v *validator) alertHeaders(c *node) map[string]string {
	if isNull(c) {
		return nil
	}
	if c.kind != kindMap {
		v.errorf(c.pos, "headers: want an object of header names and values, got %s", describe(c, false))
		return nil
	}
	out, seen := map[string]string{}, map[string]bool{}
	for _, name := range c.keys {
		f := c.fields[name]
		canon := http.CanonicalHeaderKey(name)
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			v.errorf(f.key, "header %s: not a valid HTTP header name (letters, digits and !#$%%&'*+-.^_`|~)", quote(name))
			continue
		case slices.Contains(reservedHeaders, canon):
			v.errorf(f.key, "header %s is set by sluice and cannot be changed; sluice sets %s", quote(name), strings.Join(reservedHeaders, ", "))
			continue
		case seen[canon]:
			v.errorf(f.key, "header %s is set twice (header names ignore case)", quote(name))
			continue
		}
		seen[canon] = true
		s, ok := f.scalar.(string)
		if f.kind != kindScalar || !ok {
			v.errorf(f.pos, "header %s: want a string, got %s", quote(name), describe(f, true))
			continue
		}
		r := v.x.expand(s, true, MaxValueBytes)
		for _, p := range r.problems {
			v.errorf(f.pos, "header %s: %s", quote(name), p)
		}
		switch {
		case len(r.problems) > 0:
		case r.over:
			v.errorf(f.pos, "header %s: the value is longer than %s", quote(name), sizeText(MaxValueBytes))
		case !httpguts.ValidHeaderFieldValue(r.out):
			v.errorf(f.pos, "header %s: the value holds a line break or another control character", quote(name))
		default:
			out[canon] = r.out
			v.secrets = append(append(v.secrets, r.out), r.values...)
		}
	}
	return out
}

// needsEvent reports a threshold key (c) set on an alert that does not subscribe to its event.
func (v *validator) needsEvent(a *Alert, c *node, e alert.Event) {
	if a.Events != nil && !a.Wants(e) {
		v.errorf(c.key, "%s is set but events does not list %s: add it, or remove %s", e, e, e)
	}
}

// intervalKey reads a duration that may be zero ("0s").
func (v *validator) intervalKey(n *node, name string) (time.Duration, bool) {
	s, ok := n.scalar.(string)
	if n.kind != kindScalar || !ok {
		v.errorf(n.pos, `%s: want a duration like "1m" (or "0s" for none), got %s`, name, describe(n, false))
		return 0, false
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		v.errorf(n.pos, `%s: %q is not a duration: want a number with a unit (ms, s, m, h), like "30s" or "5m"`, name, truncate(s, 40))
		return 0, false
	case d < 0:
		v.errorf(n.pos, "%s: want a duration of 0s or more, got %s", name, s)
		return 0, false
	}
	return d, true
}

// printAlert is how Print shows an alert.
type printAlert struct {
	URL         string            `yaml:"url"`
	Events      []string          `yaml:"events"`
	MinInterval string            `yaml:"min_interval"`
	Headers     map[string]string `yaml:"headers,omitempty"`
	BufferHigh  *float64          `yaml:"buffer_high,omitempty"`
	LagHigh     string            `yaml:"lag_high,omitempty"`
}

// printedAlerts shows alerts for Print: header values always redacted, the URL when it held a reference.
func printedAlerts(as []*Alert) []printAlert {
	var out []printAlert
	for _, a := range as {
		p := printAlert{URL: a.URL, MinInterval: a.MinInterval.String()}
		if a.urlRef {
			p.URL = redacted
		}
		for _, e := range a.Events {
			p.Events = append(p.Events, string(e))
		}
		if len(a.Headers) > 0 {
			p.Headers = map[string]string{}
			for k := range a.Headers {
				p.Headers[k] = redacted
			}
		}
		if a.Wants(alert.BufferHigh) {
			f := a.BufferHigh
			p.BufferHigh = &f
		}
		if a.Wants(alert.LagHigh) {
			p.LagHigh = a.LagHigh.String()
		}
		out = append(out, p)
	}
	return out
}
