// Package api is sluice's HTTP server for operators: the status page (/), the pipelines as JSON
// (/api/pipelines), health (/healthz, /readyz) and Prometheus metrics (/metrics).
//
// The server only reads pipeline snapshots (pipeline.Status), which are cheap and never wait for a
// pipeline, so nothing it does blocks or slows one. It asks for the snapshots on every request, so the set
// of pipelines may change while it runs.
package api

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/runtime/pipeline"
)

// DefaultAddr is where `sluice run` serves the API unless told otherwise, and where `sluice status` asks.
// 7584 spells SLUI on a phone keypad; it is outside the ranges Prometheus exporters and common development
// servers use.
const DefaultAddr = "127.0.0.1:7584"

// Options configure a Server.
type Options struct {
	// Pipelines returns a snapshot of every pipeline; called on every request and sample. Required.
	Pipelines func() []pipeline.Status
	// Metrics serves /metrics; nil answers 404.
	Metrics http.Handler
	// Instance names this sluice in /api/pipelines.
	Instance string
	// Instances, when set, returns the live instances sharing the pipelines (cluster:).
	Instances func() []string
	// Logger receives the server's errors; nil discards them.
	Logger *slog.Logger
	// SampleEvery is how often Serve samples the pipelines' counters for rates (default 1s).
	SampleEvery time.Duration
}

// Server serves the operators' endpoints. Create it with New.
type Server struct {
	opts    Options
	sampler Sampler
	mux     *http.ServeMux
}

//go:embed page
var pageFiles embed.FS

// New returns a server with the options o.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SampleEvery <= 0 {
		o.SampleEvery = time.Second
	}
	s := &Server{opts: o, mux: http.NewServeMux()}
	page, _ := fs.Sub(pageFiles, "page")
	s.mux.HandleFunc("GET /{$}", s.file(page, "index.html"))
	s.mux.HandleFunc("GET /status.js", s.file(page, "status.js"))
	s.mux.HandleFunc("GET /status.css", s.file(page, "status.css"))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /api/pipelines", s.pipelines)
	s.mux.HandleFunc("/metrics", s.metrics)
	return s
}

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

// Serve serves on ln until ctx is done, then shuts down (requests in progress get a second to finish)
// and closes ln. On a loopback address it answers only requests addressed to a loopback host (127.0.0.1,
// [::1], localhost), so a web page cannot read it through DNS rebinding. It also samples the pipelines'
// counters every Options.SampleEvery, so that rates are known from the first request.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	h := http.Handler(s)
	if a, ok := ln.Addr().(*net.TCPAddr); ok && a.IP.IsLoopback() {
		h = loopbackHostsOnly(h)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(s.opts.SampleEvery)
		defer t.Stop()
		for {
			s.sampler.Observe(time.Now(), s.opts.Pipelines())
			select {
			case <-t.C:
			case <-done:
				return
			}
		}
	}()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving HTTP on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving HTTP on %s: %w", ln.Addr(), err)
	}
	return nil
}

// loopbackHostsOnly refuses requests whose Host is not a loopback address or localhost.
func loopbackHostsOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && !strings.EqualFold(host, "localhost") {
			http.Error(w, fmt.Sprintf("sluice answers only requests for a loopback host (127.0.0.1, [::1], localhost), not %q", r.Host),
				http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// contentSecurity keeps the status page to what sluice itself serves: nothing is fetched from elsewhere.
const contentSecurity = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (s *Server) file(fsys fs.FS, name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", contentSecurity)
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeFileFS(w, r, fsys, name)
	}
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// readyz answers 200 when every pipeline is running, completed or on standby (another instance holds it)
// — also when there is none — else 503 with a line for each pipeline that is not.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	var not []string
	for _, st := range s.opts.Pipelines() {
		if st.State == pipeline.Running || st.State == pipeline.Completed || st.State == pipeline.Standby {
			continue
		}
		line := fmt.Sprintf("pipeline %s: %s", st.ID, st.State)
		if st.LastError != "" {
			line += ": " + st.LastError
		}
		not = append(not, line)
	}
	if len(not) == 0 {
		fmt.Fprintln(w, "ready")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintln(w, "not ready")
	for _, l := range not {
		fmt.Fprintln(w, l)
	}
}

func (s *Server) pipelines(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	body := List{Time: now, Instance: s.opts.Instance, RateWindowSeconds: RateWindow.Seconds(),
		Pipelines: s.sampler.Observe(now, s.opts.Pipelines())}
	if s.opts.Instances != nil {
		body.Instances = s.opts.Instances()
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(body); err != nil {
		s.opts.Logger.Debug("writing /api/pipelines", "err", err)
	}
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	if s.opts.Metrics == nil {
		http.Error(w, "this sluice serves no metrics", http.StatusNotFound)
		return
	}
	s.opts.Metrics.ServeHTTP(w, r)
}
