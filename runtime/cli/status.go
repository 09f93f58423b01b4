package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/runtime/api"
)

// statusTimeout bounds `sluice status`'s request.
const statusTimeout = 5 * time.Second

func statusCmd(g *globals) *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show the pipelines of a running sluice: state, rates, lag, stages, positions, errors",
		Long: `status asks a running sluice for its pipelines (GET /api/pipelines on the address its run serves with
--http) and prints them as a table, then each pipeline's stages, positions and last error. "—" is a value
that is not known (a rate before two samples, the lag of a source that reports no event times).`,
		Args: usage(cobra.NoArgs),
		RunE: func(*cobra.Command, []string) error {
			base, err := statusURL(addr)
			if err != nil {
				return ExitError{ExitInvalid, err}
			}
			l, err := fetchStatus(base)
			if err != nil {
				return ExitError{ExitFailure, err}
			}
			printStatus(g.stdout, l)
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", api.DefaultAddr, "the address the sluice to ask serves on (its run's --http): HOST:PORT or http://HOST:PORT")
	return cmd
}

// statusURL turns --addr into the URL of the API's root.
func statusURL(addr string) (string, error) {
	raw := addr
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("--addr: want HOST:PORT or http://HOST:PORT, got %q", addr)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

func fetchStatus(base string) (*api.List, error) {
	c := &http.Client{Timeout: statusTimeout}
	u := base + "/api/pipelines"
	resp, err := c.Get(u)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("no sluice answers at %s (connection refused): is `sluice run` running, serving on that address (its --http, default %s)?", base, api.DefaultAddr)
		}
		return nil, fmt.Errorf("asking %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: %s (is it a sluice?)", u, resp.Status, firstLine(body))
	}
	var l api.List
	if err := json.Unmarshal(body, &l); err != nil || l.Time.IsZero() {
		if err == nil {
			err = errors.New("no time in it")
		}
		return nil, fmt.Errorf("%s did not answer with a sluice pipeline list (is it a sluice?): %v", u, err)
	}
	return &l, nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

// printStatus writes l as a table, then each pipeline's details.
func printStatus(w io.Writer, l *api.List) {
	if len(l.Pipelines) == 0 {
		fmt.Fprintln(w, "no pipelines")
		return
	}
	cluster := l.Instances != nil
	if cluster {
		fmt.Fprintf(w, "instance %s; live instances: %s\n\n", l.Instance, strings.Join(l.Instances, ", "))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "PIPELINE\tSTATE\tGUARANTEE\tREAD/S\tDELIVERED/S\tDELIVERED\tLAG\tBUFFER\tRESTARTS"
	if cluster {
		head += "\tINSTANCE"
	}
	fmt.Fprintln(tw, head)
	for _, p := range l.Pipelines {
		buffer := "—"
		if p.Buffer != nil {
			buffer = fmtBuffer(p.Buffer, false)
		}
		row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d", p.ID, p.State, p.Guarantee, fmtRate(p.ReadPerSecond),
			fmtRate(p.DeliveredPerSecond), fmtCount(p.Delivered), fmtLag(p.LagSeconds), buffer, p.Restarts)
		if cluster {
			row += "\t" + holder(p.Lease)
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	for _, p := range l.Pipelines {
		fmt.Fprintln(w)
		head := fmt.Sprintf("%s: %s", p.ID, p.State)
		if p.Since != nil {
			head += " for " + fmtDuration(l.Time.Sub(*p.Since))
		}
		fmt.Fprintln(w, head)
		dw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		stages := "none running"
		if len(p.Stages) > 0 {
			stages = fmtStages(p.Stages)
		}
		if p.Lease != nil {
			fmt.Fprintf(dw, "  lease\t%s\n", fmtLease(p.Lease, l.Time))
		}
		fmt.Fprintf(dw, "  stages\t%s\n", stages)
		fmt.Fprintf(dw, "  read\t%s (%s), %s delivered (%s)\n", fmtCount(p.Read), fmtRate(p.ReadPerSecond),
			fmtCount(p.Delivered), fmtRate(p.DeliveredPerSecond))
		if p.Redelivered > 0 || p.DeadLetters > 0 {
			fmt.Fprintf(dw, "  redelivered\t%s (possible duplicates), %s dead letters\n", fmtCount(p.Redelivered), fmtCount(p.DeadLetters))
		}
		if p.Buffer != nil {
			fmt.Fprintf(dw, "  buffer\t%s\n", fmtBuffer(p.Buffer, true))
		}
		if p.Snapshot != nil {
			fmt.Fprintf(dw, "  snapshot\t%s\n", fmtSnapshot(p.Snapshot))
		}
		if pos := fmtPositions(p.Positions); pos != "" {
			fmt.Fprintf(dw, "  positions\t%s\n", pos)
		}
		if p.LastError != nil {
			fmt.Fprintf(dw, "  last error\t%s\n", *p.LastError)
		}
		dw.Flush()
	}
}

// The formatting below is shared by `sluice status` and the progress report of `sluice run`. An unknown
// value is "—".

// holder names the instance holding a lease: "—" when none does.
func holder(l *api.Lease) string {
	if l == nil || l.Instance == nil {
		return unknown
	}
	return *l.Instance
}

// fmtLease says who holds a lease, since when and with which token: "on etl-2 since 14:58:06 (12s),
// token 1764504000123".
func fmtLease(l *api.Lease, now time.Time) string {
	if l.Instance == nil {
		return "not held by any instance"
	}
	s := "on " + *l.Instance
	if l.Here {
		s += " (this instance)"
	}
	if l.Since != nil {
		s += fmt.Sprintf(" since %s (%s)", l.Since.Local().Format("2006-01-02 15:04:05"), fmtDuration(now.Sub(*l.Since)))
	}
	if l.Token != nil {
		s += fmt.Sprintf(", token %d", *l.Token)
	}
	return s
}

const unknown = "—"

// fmtRate renders records per second with three significant digits at most: 0/s, 8.5/s, 950/s, 12.3k/s.
func fmtRate(r *float64) string {
	if r == nil {
		return unknown
	}
	return fmtShort(*r) + "/s"
}

func fmtShort(x float64) string {
	a := math.Abs(x)
	for _, u := range []struct {
		d float64
		s string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if a >= u.d*0.9995 {
			return trimZeros(strconv.FormatFloat(x/u.d, 'f', decimals(a/u.d), 64)) + u.s
		}
	}
	if a == 0 || a >= 99.5 {
		return strconv.FormatFloat(math.Round(x), 'f', 0, 64)
	}
	return trimZeros(strconv.FormatFloat(x, 'f', decimals(a), 64))
}

func decimals(a float64) int {
	switch {
	case a >= 99.5:
		return 0
	case a >= 9.95:
		return 1
	}
	return 2
}

func trimZeros(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// fmtCount renders n with thousands separators: 1,234,567.
func fmtCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtLag renders a lag in seconds: 850ms, 1.2s, 3m4s, 2h5m.
func fmtLag(s *float64) string {
	if s == nil {
		return unknown
	}
	return fmtDuration(time.Duration(*s * float64(time.Second)))
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%dm", int64(d.Hours()), int64(d.Minutes())%60)
}

// fmtBuffer renders a buffer's fill: its fraction of the bound when it has one, else its entries; long
// adds entries and bytes.
func fmtBuffer(b *api.Buffer, long bool) string {
	entries := fmtCount(b.Entries) + " entries"
	if long {
		entries += ", " + fmtBytes(b.Bytes)
	}
	if b.Fraction == nil {
		return entries
	}
	pct := fmt.Sprintf("%.0f%%", *b.Fraction*100)
	if long {
		return pct + " (" + entries + ")"
	}
	return pct
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// fmtSnapshot renders a snapshot's progress: 4,000 of ~10,000 documents (40%), or 4,000 documents.
func fmtSnapshot(s *api.Snapshot) string {
	if s.Estimated == nil {
		return fmtCount(s.Copied) + " documents"
	}
	pct := min(100, 100*s.Copied / *s.Estimated)
	return fmt.Sprintf("%s of ~%s documents (%d%%)", fmtCount(s.Copied), fmtCount(*s.Estimated), pct)
}

// fmtStages renders stages in the order records flow: source generate (pid 4242) → sink file (in sluice).
func fmtStages(stages []api.Stage) string {
	parts := make([]string, len(stages))
	for i, s := range stages {
		where := "in sluice"
		if s.Pid != nil {
			where = "pid " + strconv.Itoa(*s.Pid)
		}
		parts[i] = fmt.Sprintf("%s %s (%s)", s.Role, s.Plugin, where)
	}
	return strings.Join(parts, " → ")
}

// fmtPositions renders positions source first, then buffer, then any other.
func fmtPositions(pos map[string]string) string {
	var parts []string
	for _, k := range []string{"source", "buffer"} {
		if v, ok := pos[k]; ok {
			parts = append(parts, k+" "+v)
		}
	}
	var rest []string
	for k, v := range pos {
		if k != "source" && k != "buffer" {
			rest = append(rest, k+" "+v)
		}
	}
	slices.Sort(rest)
	return strings.Join(append(parts, rest...), ", ")
}
