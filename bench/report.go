package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/services"
)

// report is what a bench run measured, and the machine it ran on.
type report struct {
	Date      time.Time
	Commit    string
	Go        string
	Machine   machine
	Records   int
	Payload   int
	Rounds    int
	Notes     []string
	LoadStart string
	LoadEnd   string
	Runs      []*runResult
}

// machine describes where the bench ran.
type machine struct {
	Cores  int
	CPU    string
	Memory int64 // bytes
}

func (m machine) String() string {
	return fmt.Sprintf("%d cores, %s, %.1f GiB", m.Cores, m.CPU, float64(m.Memory)/(1<<30))
}

func newReport(opts options, e *env, notes []string) *report {
	return &report{Date: time.Now().UTC(), Commit: commit(filepath.Dir(services.Root())), Go: goVersion(),
		Machine: thisMachine(), Records: opts.records, Payload: opts.payload, Rounds: opts.rounds,
		Notes: notes, LoadStart: loadAverage()}
}

func (r *report) add(run *runResult) { r.Runs = append(r.Runs, run) }

// finish records the load average at the end.
func (r *report) finish() { r.LoadEnd = loadAverage() }

// failed counts the runs that failed.
func (r *report) failed() int {
	n := 0
	for _, run := range r.Runs {
		if run.Err != "" {
			n++
		}
	}
	return n
}

// row is the summary of one program on one workload over the rounds.
type row struct {
	Key, Workload, Program string
	Sluice                 bool
	Runs, Failed           int
	Rate, Delivered, CPU   spread
	PeakTotal, PeakAnon    spread
	PeakBy                 map[string]spread
	// Ratio is the records/s of the workload's reference sluice row over this row's ("" for that row).
	Ratio string
}

// rows summarizes the runs per workload and program, in the order they first ran.
func (r *report) rows() []row {
	var out []row
	index := map[string]int{}
	var runs [][]*runResult
	for _, run := range r.Runs {
		k := run.Key + "\x00" + run.Program
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, row{Key: run.Key, Workload: run.Workload, Program: run.Program, Sluice: run.Sluice})
			runs = append(runs, nil)
		}
		runs[i] = append(runs[i], run)
	}
	for i := range out {
		var rate, delivered, cpu, peak, anon []float64
		byName := map[string][]float64{}
		for _, run := range runs[i] {
			out[i].Runs++
			if run.Err != "" {
				out[i].Failed++
				continue
			}
			out[i].Workload = run.Workload
			rate = append(rate, run.Rate())
			delivered = append(delivered, run.DeliveredRate())
			cpu = append(cpu, run.CPUPerRecord())
			peak = append(peak, float64(run.PeakTotal))
			anon = append(anon, float64(run.PeakAnon))
			for name, b := range run.Peak {
				byName[name] = append(byName[name], float64(b))
			}
		}
		out[i].Rate, out[i].Delivered, out[i].CPU = summarize(rate), summarize(delivered), summarize(cpu)
		out[i].PeakTotal, out[i].PeakAnon = summarize(peak), summarize(anon)
		out[i].PeakBy = map[string]spread{}
		for name, v := range byName {
			out[i].PeakBy[name] = summarize(v)
		}
	}
	// The reference of a workload is its "sluice" row; B3's is W1's.
	ref := map[string]float64{}
	for _, o := range out {
		if o.Program == "sluice" {
			ref[o.Key] = o.Rate.Median
		}
	}
	for i, o := range out {
		base, ok := ref[o.Key]
		if o.Key == "B3" {
			base, ok = ref["W1"]
		}
		if ok && !(o.Program == "sluice" && o.Key != "B3") && o.Rate.N > 0 && !math.IsNaN(base) {
			out[i].Ratio = fmt.Sprintf("%.2f×", base/o.Rate.Median)
		}
	}
	return out
}

// human formats a rate: 1.23M, 189k, 950.
func human(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 0, 64) + "k"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// mib formats bytes as MiB.
func mib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 0, 64) }

// peaks formats peak RSS by process, largest first: "kafka 150, sluice 120".
func peaks(by map[string]int64) string {
	names := make([]string, 0, len(by))
	for n := range by {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return by[names[i]] > by[names[j]] || by[names[i]] == by[names[j]] && names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " " + mib(by[n])
	}
	return strings.Join(parts, ", ")
}

// cell formats a spread: "189k (180k–195k)"; the range is left out for one value.
func cell(s spread, f func(float64) string) string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 || s.Min == s.Max {
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median), f(s.Min), f(s.Max))
}

func fixed(digits int) func(float64) string {
	return func(v float64) string { return strconv.FormatFloat(v, 'f', digits, 64) }
}

func mibF(v float64) string { return mib(int64(v)) }

// markdown renders the report: a header, the table of medians with min–max, and the notes.
func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### make bench, %s\n\n", r.Date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- commit %s, %s; machine: %s\n", r.Commit, r.Go, r.Machine)
	fmt.Fprintf(&b, "- %d records of %d B per run; rounds: %d, each running every program once, the order rotated; load average (1, 5, 15 min) %s at the start, %s at the end\n",
		r.Records, r.Payload, r.Rounds, r.LoadStart, orUnknown(r.LoadEnd))
	b.WriteString("- median (min–max) over the rounds; rates per second of wall time, exec to exit; CPU is user + system of every process of the program, per record read\n\n")
	b.WriteString("| workload | program | records/s read | delivered/s | CPU µs/record | peak RSS, all processes (MiB) | of which anonymous (MiB) | peak RSS by process (MiB, median) | sluice ÷ this |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, o := range r.rows() {
		prog := o.Program
		if o.Failed > 0 {
			prog += fmt.Sprintf(" (%d of %d runs failed)", o.Failed, o.Runs)
		}
		by := map[string]int64{}
		for n, s := range o.PeakBy {
			by[n] = int64(s.Median)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", o.Workload, prog, cell(o.Rate, human),
			cell(o.Delivered, human), cell(o.CPU, fixed(2)), cell(o.PeakTotal, mibF), cell(o.PeakAnon, mibF), orDash(peaks(by)), orDash(o.Ratio))
	}
	b.WriteString("\nNotes:\n\n")
	b.WriteString("- \"sluice ÷ this\": the workload's `sluice` records/s over this row's (B3: W1's sluice, plugins as subprocesses, over in_process). Above 1, sluice is faster.\n")
	b.WriteString("- \"Of which anonymous\": the processes' own memory (heap, stacks), the highest sum at one reading; the rest of RSS is pages of the binaries mapped from the page cache (code, read-only data), resident on the machines we measured for nearly the whole size of each binary.\n")
	b.WriteString("- The servers written to (kfake, in the harness's process; Apache Kafka; redis-server) are not in CPU or RSS: only the program and the processes it starts are.\n")
	b.WriteString("- Peers' records read are the count their source was given; their delivered counts are checked in Kafka (W1's drop output gives none: exit status only).\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	for _, run := range r.Runs {
		if run.Err != "" {
			fmt.Fprintf(&b, "- FAILED round %d %s %s: %s\n", run.Round, run.Key, run.Program, run.Err)
		}
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown (stopped early)"
	}
	return s
}

// csvHeader is the first line of the CSV: one line per run after it.
var csvHeader = []string{"date", "commit", "go", "cores", "cpu", "memory_gib", "workload_key", "workload", "program",
	"round", "records", "payload_bytes", "read", "delivered", "checked", "wall_s", "sluice_pipeline_time",
	"records_per_s", "delivered_per_s", "cpu_us_per_record", "peak_rss_total_mib", "peak_rss_anon_mib", "peak_rss_mib_by_process", "error"}

// writeCSV writes every run, one line each, with the machine on every line.
func (r *report) writeCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(csvHeader); err != nil {
		return err
	}
	num := func(v float64, digits int) string {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return ""
		}
		return strconv.FormatFloat(v, 'f', digits, 64)
	}
	count := func(n int64) string {
		if n < 0 {
			return ""
		}
		return strconv.FormatInt(n, 10)
	}
	for _, run := range r.Runs {
		var by []string
		for _, p := range strings.Split(peaks(run.Peak), ", ") {
			if p != "" {
				by = append(by, strings.Replace(p, " ", "=", 1))
			}
		}
		rate, del, cpu := run.Rate(), run.DeliveredRate(), run.CPUPerRecord()
		if run.Wall == 0 {
			rate, del, cpu = math.NaN(), math.NaN(), math.NaN()
		}
		if err := cw.Write([]string{
			r.Date.Format(time.RFC3339), r.Commit, r.Go, strconv.Itoa(r.Machine.Cores), r.Machine.CPU,
			num(float64(r.Machine.Memory)/(1<<30), 1), run.Key, run.Workload, run.Program, strconv.Itoa(run.Round),
			strconv.Itoa(run.Records), strconv.Itoa(r.Payload), count(run.Read), count(run.Delivered), run.Checked,
			num(run.Wall.Seconds(), 3), run.PipelineTime, num(rate, 0), num(del, 0), num(cpu, 3),
			num(float64(run.PeakTotal)/(1<<20), 1), num(float64(run.PeakAnon)/(1<<20), 1), strings.Join(by, ";"), run.Err,
		}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// write writes the markdown, the CSV and the chart to dir, named by the date and the record count, and
// returns their paths.
func (r *report) write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base := filepath.Join(dir, fmt.Sprintf("%s-%d", r.Date.Format("2006-01-02-150405"), r.Records))
	if err := os.WriteFile(base+".md", []byte(r.markdown()), 0o644); err != nil {
		return nil, err
	}
	f, err := os.Create(base + ".csv")
	if err != nil {
		return nil, err
	}
	if err := r.writeCSV(f); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	files := []string{base + ".md", base + ".csv"}
	if err := r.chart(base + ".png"); err != nil {
		return files, fmt.Errorf("chart: %w", err)
	}
	return append(files, base+".png"), nil
}

// commit returns the repository's commit, with "+dirty" when tracked files differ from it.
func commit(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "+dirty"
	}
	return c
}

// thisMachine reads the cores, CPU model and memory of this machine.
func thisMachine() machine {
	m := machine{Cores: runtime.NumCPU(), CPU: "unknown CPU"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPU = cpuModel(b)
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.Memory = memTotal(b)
	}
	return m
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo []byte) string {
	for line := range strings.Lines(string(cpuinfo)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "unknown CPU"
}

// memTotal returns MemTotal of /proc/meminfo in bytes, 0 when absent.
func memTotal(meminfo []byte) int64 {
	for line := range strings.Lines(string(meminfo)) {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// workloadOrder lists the workload keys of the report in the order they ran.
func (r *report) workloadOrder() []string {
	var keys []string
	for _, run := range r.Runs {
		if !slices.Contains(keys, run.Key) {
			keys = append(keys, run.Key)
		}
	}
	return keys
}
