package main

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"
)

// configs holds the connector files of sluice and the equivalent configurations of the peers, as
// text/template templates of params.
//
//go:embed configs
var configs embed.FS

// params fills a configuration template for one run.
type params struct {
	Pipeline      string // sluice's pipeline id, Conduit's pipeline id
	Records       int
	PayloadBytes  int
	Pad           string // the peers' "pad" field: {"seq":N,"pad":Pad} is about PayloadBytes long
	InProcess     bool
	Transactional bool
	Lanes         int // sluice's lanes with ordered: false; 0: ordered
	Brokers       []string
	Topic, TxnID  string
	RedisAddr     string
	RedisURL      string
	RedisKey      string
	PayloadFile   string // Conduit's generator payload
}

// padFor returns the pad that makes {"seq":N,"pad":"…"} about payload bytes long for a 6-digit N.
func padFor(payload int) string {
	return strings.Repeat("x", max(0, payload-len(`{"seq":123456,"pad":""}`)))
}

var funcs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join": strings.Join,
}

// render writes the template configs/name, filled with p, to dir/base(name) and returns that path.
func render(dir, name string, p params) (string, error) {
	t, err := template.New(filepath.Base(name)).Funcs(funcs).Option("missingkey=error").ParseFS(configs, "configs/"+name)
	if err != nil {
		return "", fmt.Errorf("config template %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, p); err != nil {
		return "", fmt.Errorf("config template %s: %w", name, err)
	}
	path := filepath.Join(dir, filepath.Base(name))
	return path, os.WriteFile(path, b.Bytes(), 0o644)
}

// program is one way of running a workload: sluice in one of its modes, or a peer.
type program struct {
	// Name labels the program's rows: "sluice", "sluice in_process", "Redpanda Connect", …
	Name string
	// Peer is the peer's key ("rpconnect", "conduit"), "" for sluice.
	Peer string
	// Files are the templates (under configs/) written into the run's directory, in the order args gets them.
	Files []string
	// Args returns the command line, given the program's binary, the run's directory and the written files.
	Args func(bin, dir string, files []string) []string
	// UntilStopped: the program does not exit when its work is done; the harness stops it once the
	// Kafka topic holds every record.
	UntilStopped bool
	// Adjust sets the program's own parameters (in_process, transactional).
	Adjust func(*params)
}

func sluiceArgs(bin, _ string, files []string) []string {
	return append([]string{bin, "run", "--http", "off", "--progress", "off", "--data-dir", "state"}, files...)
}

func sluiceProgram(name, file string, adjust func(*params)) program {
	return program{Name: name, Files: []string{file}, Args: sluiceArgs, Adjust: adjust}
}

// The peers' programs.
var (
	rpconnectRun = func(bin, _ string, files []string) []string { return append([]string{bin, "run"}, files...) }
	conduitRun   = func(bin, dir string, files []string) []string {
		return []string{bin, "run", "--api.enabled=false", "--log.level", "warn", "--pipelines.path", files[0],
			"--db.type", "badger", "--db.badger.path", filepath.Join(dir, "conduit.db"),
			"--connectors.path", filepath.Join(dir, "connectors"), "--processors.path", filepath.Join(dir, "processors")}
	}
	transactional = func(p *params) { p.Transactional = true }
)

// workload is one of the bench's pipelines, with the programs that run it.
type workload struct {
	// Key selects it (-workloads); Name labels its rows (it says which Kafka, once known).
	Key, Name string
	// Kafka: the workload writes to Kafka; Redis: it needs redis-server.
	Kafka, Redis bool
	// RealKafka: a real broker rather than kfake (W5 kafka); W2 takes the real one when there is one.
	RealKafka bool
	// Partitions of the workload's topic (0: 1).
	Partitions int
	// Extra: run only when -workloads names it, not by default.
	Extra bool
	// Delivered returns the records the sink must get out of n read.
	Delivered func(n int) int
	Programs  []program
}

func all(n int) int { return n }

// workloads are the bench's workloads in the order a round runs them.
func workloads() []workload {
	w5 := []program{
		sluiceProgram("sluice", "sluice/w5.yaml", transactional),
		sluiceProgram("sluice idempotent", "sluice/w5.yaml", nil),
		{Name: "Redpanda Connect", Peer: "rpconnect", Files: []string{"rpconnect/w5.yaml"}, Args: rpconnectRun},
		{Name: "Conduit", Peer: "conduit", Files: []string{"conduit/w5.yaml"}, Args: conduitRun, UntilStopped: true},
	}
	return []workload{
		{Key: "W1", Name: "W1 generate → filter 50 % + set → discard", Delivered: func(n int) int { return (n + 1) / 2 },
			Programs: []program{
				sluiceProgram("sluice", "sluice/w1.yaml", nil),
				{Name: "Redpanda Connect", Peer: "rpconnect", Files: []string{"rpconnect/w1.yaml"}, Args: rpconnectRun},
			}},
		{Key: "B3", Name: "B3 W1 with in_process: true", Delivered: func(n int) int { return (n + 1) / 2 },
			Programs: []program{sluiceProgram("sluice in_process", "sluice/w1.yaml", func(p *params) { p.InProcess = true })}},
		{Key: "W5-kfake", Name: "W5 generate → Kafka", Kafka: true, Delivered: all, Programs: w5},
		{Key: "W5-kafka", Name: "W5 generate → Kafka", Kafka: true, RealKafka: true, Delivered: all, Programs: w5},
		{Key: "W2", Name: "W2 generate → Redis (AOF everysec) → Kafka", Kafka: true, Redis: true, Delivered: all,
			Programs: []program{
				sluiceProgram("sluice", "sluice/w2.yaml", transactional),
				{Name: "Redpanda Connect", Peer: "rpconnect", UntilStopped: true,
					Files: []string{"rpconnect/w2-observability.yaml", "rpconnect/w2-produce.yaml", "rpconnect/w2-deliver.yaml"},
					Args: func(bin, _ string, files []string) []string {
						return append([]string{bin, "streams", "--no-api", "-o", files[0]}, files[1:]...)
					}},
			}},
		// W2 into a topic of 4 partitions, ordered (one transactional sink) and with ordered: false, lanes: 4
		// (four, each with its own transactional id), to measure what lanes gain.
		{Key: "W2-lanes", Name: "W2 generate → Redis (AOF everysec) → Kafka, 4 partitions", Kafka: true, Redis: true,
			Partitions: 4, Extra: true, Delivered: all,
			Programs: []program{
				sluiceProgram("sluice", "sluice/w2.yaml", transactional),
				sluiceProgram("sluice lanes 4", "sluice/w2.yaml", func(p *params) { p.Transactional, p.Lanes = true, 4 }),
			}},
	}
}

// summaryLine matches the counts in sluice's run summary:
// "pipeline ID: done — 1000 records read (…/s), 500 delivered (…/s) in 1.2s, …".
var summaryLine = regexp.MustCompile(`(?m)^pipeline (\S+): (\w+)[^\n]*? (\d+) records read \([^)]*\), (\d+) delivered \([^)]*\) in ([0-9.a-zµ]+)`)

// summary is what sluice's run summary says of a pipeline.
type summary struct {
	State           string // done, stopped, failed
	Read, Delivered int64
	Took            string // the pipeline's own duration, as printed
}

// parseSummary finds pipeline's line in sluice's standard output.
func parseSummary(out []byte, pipeline string) (summary, error) {
	for _, m := range summaryLine.FindAllSubmatch(out, -1) {
		if string(m[1]) != pipeline+":" && string(m[1]) != pipeline {
			continue
		}
		read, err1 := strconv.ParseInt(string(m[3]), 10, 64)
		delivered, err2 := strconv.ParseInt(string(m[4]), 10, 64)
		if err1 != nil || err2 != nil {
			return summary{}, fmt.Errorf("run summary of %s: counts out of range in %q", pipeline, m[0])
		}
		return summary{State: string(m[2]), Read: read, Delivered: delivered, Took: string(m[5])}, nil
	}
	return summary{}, fmt.Errorf("no run summary line for pipeline %s in sluice's output", pipeline)
}
