package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/services"
)

// The bad-input corpus: every directory under testdata/corpus is one case, run by TestCorpus against the
// real sluice binary, the real plugins and the real servers of services/. A case is files only:
//
//	case.yaml       what to run and what must come of it (corpusCase)
//	*.yaml, …       the connector files and anything else the command reads, copied into a fresh directory
//	plugins/        executables put into the case's plugins directory ($PLUGINS), beside the test plugins
//	                it names; plugins do not inherit sluice's environment, so a script there reads the
//	                case's variables from corpus.env in the directory sluice runs in
//	stdout.golden   the whole of sluice's stdout, normalised (see normalise)
//	stdout.lines    or: lines that must appear in stdout, in this order, among others; … matches any text
//	stderr.golden   the same for stderr
//	stderr.lines
//	NAME.golden     an output file, compared whole once the run is over (case.yaml files:)
//
// `go test -run TestCorpus/NAME -update` rewrites a case's .golden files (and writes stdout.golden and
// stderr.golden for a case that has no expectation for a stream yet); .lines files are written by hand.
const corpusDir = "testdata/corpus"

// corpusCase is a case.yaml.
type corpusCase struct {
	// About says in one line what the case shows.
	About string `yaml:"about"`
	// Args is sluice's command line, run in a fresh copy of the case's directory. $NAME is replaced by the
	// value of a variable of the case's environment ($WORK, $PLUGINS, $REDIS_ADDR, …).
	Args []string `yaml:"args"`
	// Plugins are test plugins linked into $PLUGINS: misbehave, misbehave-v2, misbehave-broken.
	Plugins []string `yaml:"plugins"`
	// Services are the servers the case needs, each started once for the whole corpus: redis, redis-full,
	// mongo, kafka. Their addresses are in the environment (corpusServices).
	Services []string `yaml:"services"`
	// Env is added to sluice's environment ($NAME expanded as in Args).
	Env map[string]string `yaml:"env"`
	// Deadline bounds the whole case: sluice, the processes started beside it and the commands after it
	// (default 30s: time enough on a loaded machine, where discovering the plugins alone can take
	// seconds). A sluice still running then is killed and the case fails.
	Deadline duration `yaml:"deadline"`
	// Exit is sluice's exit code.
	Exit *int `yaml:"exit"`
	// NoPosition: with exit 2, a problem line on stderr need not start with file:line:col (a command-line
	// error has no file). Say why.
	NoPosition string `yaml:"no_position"`
	// Tmpfs mounts a small filesystem at a directory of the case, in a mount namespace of sluice's own.
	Tmpfs *corpusTmpfs `yaml:"tmpfs"`
	// Background are sluices started before the command (each waits until it is ready) and stopped with
	// SIGTERM after it.
	Background []corpusBackground `yaml:"background"`
	// Actions happen in order while the command runs.
	Actions []corpusAction `yaml:"actions"`
	// Then are commands run after sluice ended (a second sluice run, kafka-tail): their stdout goes to a
	// file, for records and files to check.
	Then []corpusThen `yaml:"then"`
	// Records checks output files of records {"seq":N}: none lost, duplicates accounted for.
	Records []corpusRecords `yaml:"records"`
	// Files maps output files to golden files of the case, compared whole after normalisation.
	Files map[string]string `yaml:"files"`
	// Absent are files that must not exist after the run (nothing written).
	Absent []string `yaml:"absent"`
	// NeverPrinted are texts that no output of the case may hold ($NAME expanded): secrets, in sluice's
	// stdout and stderr and every file it wrote; or a log line that must not happen ("restarting from
	// stored positions" after a permanent failure).
	NeverPrinted []string `yaml:"never_printed"`
	// KnownBug marks a case whose expectations sluice does not meet yet, saying what is wrong: the case
	// must fail its checks (logged, not an error) until the bug is fixed.
	KnownBug string `yaml:"known_bug"`
	// Intermittent: the known bug shows on some runs only, so the case may pass too.
	Intermittent bool `yaml:"intermittent"`
}

type corpusTmpfs struct {
	Dir  string `yaml:"dir"`
	Size string `yaml:"size"` // as mount -o size= takes it: 256k, 1m
	// Ballast is the size of a file $Dir/ballast made before sluice starts, taking that much room (an action
	// can remove it: the disk has room again).
	Ballast string `yaml:"ballast"`
}

type corpusBackground struct {
	Args []string `yaml:"args"`
	// Ready is what to wait for before the command starts.
	Ready corpusWait `yaml:"ready"`
	// Exit is its exit code once stopped with SIGTERM (default 0).
	Exit int `yaml:"exit"`
	// Stdout, when set, must appear in its stdout (lines, as in a .lines file).
	Stdout []string `yaml:"stdout"`
}

// corpusWait waits for files to have lines, or for sluice's stderr to hold a text.
type corpusWait struct {
	Lines map[string]int `yaml:"lines"`
	Log   string         `yaml:"log"`
}

type corpusAction struct {
	corpusWait `yaml:",inline"`
	// Sleep waits this long (after the conditions).
	Sleep duration `yaml:"sleep"`
	// Signal is sent to sluice: TERM, INT, HUP, KILL.
	Signal string `yaml:"signal"`
	// KillPlugin is the file name of a plugin binary: sluice's child process running it gets SIGKILL.
	KillPlugin string `yaml:"kill_plugin"`
	// Remove deletes a file of the case's directory, as sluice sees it (inside its tmpfs, too).
	Remove string `yaml:"remove"`
}

type corpusThen struct {
	// Sluice or Tool (a tool built beside sluice: kafka-tail) with its arguments.
	Sluice []string `yaml:"sluice"`
	Tool   string   `yaml:"tool"`
	Args   []string `yaml:"args"`
	// Stdout and Stderr are files its output is written to (a sluice's normalised), for records and files
	// to check.
	Stdout string `yaml:"stdout"`
	Stderr string `yaml:"stderr"`
	Exit   int    `yaml:"exit"`
}

type corpusRecords struct {
	// Files hold one record per line, taken together: a generate or misbehave payload {"seq":N,…}, or a
	// JSON object whose string field Fields[file] holds such a payload (kafka-tail -json: value).
	Files  []string          `yaml:"files"`
	Fields map[string]string `yaml:"fields"`
	// Seqs: every seq from 0 to Seqs-1 is there, and no other.
	Seqs int `yaml:"seqs"`
	// Prefix, for a run that failed: the seqs are 0 to some N-1, none missing, and N is at least what the
	// summary reports delivered (and at most Seqs, when set).
	Prefix bool `yaml:"prefix"`
	// Duplicates allowed: "redelivered" (default: at most the records the summaries of every sluice run of
	// the case report redelivered), "none", or "any" (a case that misconfigures sluice on purpose, where
	// at-least-once gives no bound).
	Duplicates string `yaml:"duplicates"`
}

// duration is a time.Duration written as "10s".
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = duration(v)
	return nil
}

var corpusTestPlugins = []string{"misbehave", "misbehave-v2", "misbehave-broken"}

func loadCorpusCase(dir string) (*corpusCase, error) {
	b, err := os.ReadFile(filepath.Join(dir, "case.yaml"))
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c corpusCase
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("case.yaml: %w", err)
	}
	switch {
	case c.About == "":
		return nil, errors.New("case.yaml: about is missing: say in one line what the case shows")
	case len(c.Args) == 0:
		return nil, errors.New("case.yaml: args is missing")
	case c.Exit == nil:
		return nil, errors.New("case.yaml: exit is missing: every case asserts its exit code")
	case c.Intermittent && c.KnownBug == "":
		return nil, errors.New("case.yaml: intermittent without known_bug")
	}
	if c.Deadline == 0 {
		c.Deadline = duration(30 * time.Second)
	}
	for _, s := range c.Services {
		if _, ok := serviceKinds[s]; !ok {
			return nil, fmt.Errorf("case.yaml: unknown service %q; known: %s", s, strings.Join(slices.Sorted(mapKeys(serviceKinds)), ", "))
		}
	}
	for _, p := range c.Plugins {
		if !slices.Contains(corpusTestPlugins, p) {
			return nil, fmt.Errorf("case.yaml: unknown test plugin %q; known: %s", p, strings.Join(corpusTestPlugins, ", "))
		}
	}
	usesPlugins := len(c.Plugins) > 0
	if fi, err := os.Stat(filepath.Join(dir, "plugins")); err == nil && fi.IsDir() {
		usesPlugins = true
	}
	all := append([][]string{c.Args}, backgroundArgs(&c)...)
	if usesPlugins && !slices.ContainsFunc(slices.Concat(all...), func(a string) bool { return strings.Contains(a, "$PLUGINS") }) {
		return nil, errors.New("case.yaml: the case has plugins but no argument names $PLUGINS: add --plugins-dir $PLUGINS")
	}
	for _, args := range all {
		if len(args) > 0 && slices.Contains(args, "run") && !slices.Contains(args, "--http") {
			return nil, errors.New("case.yaml: a run needs --http off (or --http 127.0.0.1:0): cases run in parallel")
		}
	}
	return &c, nil
}

func backgroundArgs(c *corpusCase) [][]string {
	var out [][]string
	for _, b := range c.Background {
		out = append(out, b.Args)
	}
	for _, th := range c.Then {
		out = append(out, th.Sluice)
	}
	return out
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestCorpus runs every case of testdata/corpus (see corpusCase), several at a time. The servers the
// selected cases need are started once, in the background, as soon as the test begins.
func TestCorpus(t *testing.T) {
	entries, err := os.ReadDir(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	cases := map[string]*corpusCase{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		c, err := loadCorpusCase(filepath.Join(corpusDir, e.Name()))
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
			continue
		}
		names = append(names, e.Name())
		cases[e.Name()] = c
	}
	if len(names) < 100 {
		t.Errorf("the corpus has %d cases; it promises at least 100", len(names))
	}
	tp := testPlugins(t)
	svc := newCorpusServices(t)
	begun := time.Now()
	t.Cleanup(func() { t.Logf("%d cases in %s", len(names), time.Since(begun).Round(time.Second)) })
	// Start the servers the selected cases need now: Kafka takes a while, and the cases waiting for it
	// would hold a slot each.
	for _, n := range names {
		if corpusSelected(n) {
			for _, s := range cases[n].Services {
				svc.prefetch(s)
			}
		}
	}
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			t.Parallel()
			runCorpusCase(t, filepath.Join(corpusDir, n), cases[n], tp, svc)
		})
	}
}

// corpusSelected reports whether -test.run may select the case: only to decide which servers to start
// early (a case that needs one not started early starts it when it runs).
func corpusSelected(name string) bool {
	f := flag.Lookup("test.run")
	if f == nil || f.Value.String() == "" {
		return true
	}
	parts := strings.SplitN(f.Value.String(), "/", 2)
	if len(parts) < 2 {
		return true
	}
	re, err := regexp.Compile(parts[1])
	if err != nil {
		return true
	}
	return re.MatchString(name)
}

// corpusRun is one run of a case: its directory, environment and what its processes printed.
type corpusRun struct {
	t        *testing.T
	c        *corpusCase
	caseDir  string
	work     string
	plugins  string
	env      map[string]string // the variables $NAME may name, also given to sluice
	deadline time.Time
	// redelivered adds up the records the summaries of every sluice run reported redelivered;
	// delivered, those the command's summary reports delivered.
	redelivered, delivered int
	// failures are what the case's checks found wrong (see report).
	failures []string
}

// errorf records a failed check of the case.
func (r *corpusRun) errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

// report fails the test with the case's failures, unless the case documents a known bug: then the case
// must fail (it is logged), and passing fails the test, so that a fix is noticed and the mark removed.
func (r *corpusRun) report() {
	t := r.t
	switch {
	case r.c.KnownBug == "":
		for _, f := range r.failures {
			t.Error(f)
		}
	case len(r.failures) == 0 && r.c.Intermittent:
		t.Logf("known bug: %s; it did not show this time", r.c.KnownBug)
	case len(r.failures) == 0:
		t.Errorf("the case passes: the known bug (%s) looks fixed; remove known_bug from case.yaml", r.c.KnownBug)
	default:
		t.Logf("known bug: %s; the case fails as expected:\n%s", r.c.KnownBug, strings.Join(r.failures, "\n"))
	}
}

func runCorpusCase(t *testing.T, caseDir string, c *corpusCase, testPlugins string, svc *corpusServices) {
	r := &corpusRun{t: t, c: c, caseDir: caseDir, deadline: time.Now().Add(time.Duration(c.Deadline))}
	root := t.TempDir()
	r.work = filepath.Join(root, "work")
	r.plugins = filepath.Join(root, "plugins")
	r.env = map[string]string{"WORK": r.work, "PLUGINS": r.plugins, "CASE": filepath.Base(caseDir)}
	for k, v := range svc.fakes {
		r.env[k] = v
	}
	for _, s := range c.Services {
		env, err := svc.get(s)
		if err != nil {
			t.Fatalf("service %s: %v", s, err)
		}
		for k, v := range env {
			r.env[k] = v
		}
	}
	// Waiting for a server does not count against the deadline.
	r.deadline = time.Now().Add(time.Duration(c.Deadline))
	r.prepare(testPlugins)
	for k, v := range c.Env {
		r.env[k] = r.expand(v)
	}

	var bg []*corpusProc
	for i, b := range c.Background {
		p := r.start(fmt.Sprintf("background[%d]", i), b.Args, nil)
		bg = append(bg, p)
		if err := r.wait(b.Ready, p); err != nil {
			p.kill()
			t.Fatalf("background[%d] not ready: %v\nstdout:\n%s\nstderr:\n%s", i, err, p.stdout.String(), p.stderr.String())
		}
	}
	defer r.report()
	main := r.start("sluice", c.Args, c.Tmpfs)
	actionsDone := make(chan error, 1)
	go func() { actionsDone <- r.act(main) }()
	code, hung := main.waitUntil(r.deadline)
	if c.Tmpfs != nil {
		r.keepTmpfs()
	}
	if err := <-actionsDone; err != nil {
		r.errorf("actions: %v", err)
	}
	for i, p := range bg {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		bcode, bhung := p.waitUntil(time.Now().Add(20 * time.Second))
		if bhung {
			r.errorf("background[%d] still running 20s after SIGTERM\nstderr:\n%s", i, r.normalise(p.stderr.String()))
		} else if bcode != c.Background[i].Exit {
			r.errorf("background[%d]: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", i, bcode, c.Background[i].Exit,
				r.normalise(p.stdout.String()), r.normalise(p.stderr.String()))
		}
		r.countRedelivered(p.stdout.String())
		if err := matchLines(c.Background[i].Stdout, r.normalise(p.stdout.String())); err != nil {
			r.errorf("background[%d] stdout: %v\nstdout:\n%s", i, err, r.normalise(p.stdout.String()))
		}
		r.checkText(fmt.Sprintf("background[%d]", i), p.stdout.String()+p.stderr.String())
	}
	r.checkLeftovers()

	stdout, stderr := r.normalise(main.stdout.String()), r.normalise(main.stderr.String())
	if hung {
		r.errorf("sluice still running after the deadline (%s): a hang\nstdout:\n%s\nstderr:\n%s", time.Duration(c.Deadline), stdout, stderr)
		return
	}
	if code != *c.Exit {
		r.errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, *c.Exit, stdout, stderr)
	}
	r.countRedelivered(main.stdout.String())
	if m := deliveredRe.FindStringSubmatch(main.stdout.String()); m != nil {
		r.delivered, _ = strconv.Atoi(m[1])
	}
	r.checkText("sluice", main.stdout.String()+main.stderr.String())
	if code == 2 && c.NoPosition == "" {
		r.checkPositions(stderr)
	}
	r.golden("stdout", stdout)
	r.golden("stderr", stderr)

	for i, th := range c.Then {
		r.then(i, th)
	}
	for _, rc := range c.Records {
		r.checkRecords(rc)
	}
	for out, golden := range c.Files {
		b, err := os.ReadFile(filepath.Join(r.work, out))
		if err != nil {
			r.errorf("files: %v", err)
			continue
		}
		r.compareGolden(golden, r.normalise(string(b)))
	}
	r.checkNeverPrinted(main)
	for _, f := range c.Absent {
		if _, err := os.Lstat(filepath.Join(r.work, f)); !errors.Is(err, fs.ErrNotExist) {
			r.errorf("absent: %s exists (%v)", f, err)
		}
	}
}

// prepare copies the case into the work directory, except case.yaml, the expectations and plugins/,
// and lays out the plugins directory.
func (r *corpusRun) prepare(testPlugins string) {
	t := r.t
	if err := os.MkdirAll(r.plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range r.c.Plugins {
		if err := os.Symlink(filepath.Join(testPlugins, p), filepath.Join(r.plugins, p)); err != nil {
			t.Fatal(err)
		}
	}
	err := filepath.WalkDir(r.caseDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(r.caseDir, path)
		dest := filepath.Join(r.work, rel)
		if strings.HasPrefix(rel, "plugins"+string(filepath.Separator)) || rel == "plugins" {
			dest = filepath.Join(r.plugins, strings.TrimPrefix(strings.TrimPrefix(rel, "plugins"), string(filepath.Separator)))
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(dest, 0o755)
		case rel == "case.yaml" || strings.HasSuffix(rel, ".golden") || strings.HasSuffix(rel, ".lines"):
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, dest)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dest, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	// Plugins do not inherit sluice's environment: a script in plugins/ reads the case's variables here.
	var env strings.Builder
	for _, k := range slices.Sorted(mapKeys(r.env)) {
		fmt.Fprintf(&env, "%s='%s'\n", k, r.env[k])
	}
	if err := os.WriteFile(filepath.Join(r.work, "corpus.env"), []byte(env.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

var envRef = regexp.MustCompile(`\$([A-Z][A-Z0-9_]*)`)

// expand replaces $NAME by the case's variable NAME; other text is left alone.
func (r *corpusRun) expand(s string) string {
	return envRef.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := r.env[m[1:]]; ok {
			return v
		}
		return m
	})
}

// corpusProc is a process of the case.
type corpusProc struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
	code           int
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// start starts sluice with args, in its own process group, killed if the test dies. With tmpfs it runs in
// a mount namespace of its own where a tmpfs is mounted at the directory (unshare, as root or in a user
// namespace).
func (r *corpusRun) start(name string, args []string, tmpfs *corpusTmpfs) *corpusProc {
	argv := []string{filepath.Join(binDir, "sluice")}
	for _, a := range args {
		argv = append(argv, r.expand(a))
	}
	if tmpfs != nil {
		dir := filepath.Join(r.work, tmpfs.Dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			r.t.Fatal(err)
		}
		// A process that stays in the namespace (in /, so that it is not taken for a leftover of the case)
		// keeps the tmpfs readable after sluice exits: keepTmpfs copies it out.
		script := `mount -t tmpfs -o size="$1" corpus "$2" || exit 97
if [ -n "$3" ]; then head -c "$3" /dev/zero > "$2/ballast" || exit 97; fi
(cd / && exec sleep 600) </dev/null >/dev/null 2>&1 &
echo $! > "$4"
shift 4
exec "$@"`
		ns := []string{"unshare", "--mount", "--propagation", "private"}
		if os.Geteuid() != 0 {
			ns = []string{"unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"}
		}
		argv = append(append(ns, "sh", "-c", script, "sh", tmpfs.Size, dir, tmpfs.Ballast, r.holderFile()), argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = r.work
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range r.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &corpusProc{cmd: cmd, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("%s: %v", name, err)
	}
	r.t.Cleanup(p.kill)
	go func() {
		err := cmd.Wait()
		p.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	return p
}

// holderFile is where the tmpfs wrapper writes the pid of the process that keeps its namespace.
func (r *corpusRun) holderFile() string {
	return filepath.Join(filepath.Dir(r.work), "tmpfs-holder.pid")
}

// keepTmpfs copies what sluice left in its tmpfs to the same directory outside its mount namespace, for the
// checks, and ends the process that kept the namespace.
func (r *corpusRun) keepTmpfs() {
	b, err := os.ReadFile(r.holderFile())
	if err != nil {
		r.errorf("tmpfs: %v", err)
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		r.errorf("tmpfs: holder pid %q: %v", b, err)
		return
	}
	defer func() { _ = syscall.Kill(pid, syscall.SIGKILL) }()
	dir := filepath.Join(r.work, r.c.Tmpfs.Dir)
	inside := filepath.Join("/proc", strconv.Itoa(pid), "root", dir)
	err = filepath.WalkDir(inside, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(inside, path)
		switch {
		case d.IsDir():
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		case !d.Type().IsRegular():
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), data, 0o644)
	})
	if err != nil {
		r.errorf("tmpfs: copying it out: %v", err)
	}
}

// waitUntil waits for the process to exit and returns its exit code; hung is true when it was still
// running at the deadline (it is then killed, with its process group).
func (p *corpusProc) waitUntil(deadline time.Time) (code int, hung bool) {
	select {
	case <-p.done:
		return p.code, false
	case <-time.After(time.Until(deadline)):
		p.kill()
		return -1, true
	}
}

func (p *corpusProc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill kills the process and its process group, and waits for it.
func (p *corpusProc) kill() {
	if p.running() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// wait waits for w's conditions, or until p exits or the case's deadline.
func (r *corpusRun) wait(w corpusWait, p *corpusProc) error {
	for {
		ok := true
		for f, n := range w.Lines {
			if countLines(r.path(p, f)) < n {
				ok = false
			}
		}
		if w.Log != "" && !strings.Contains(p.stderr.String(), w.Log) {
			ok = false
		}
		if ok {
			return nil
		}
		if !p.running() {
			return fmt.Errorf("the process exited (%d) before %+v", p.code, w)
		}
		if time.Now().After(r.deadline) {
			return fmt.Errorf("deadline reached waiting for %+v", w)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// path is a file of the work directory as process p sees it: through /proc/PID/root while it runs, so
// that files inside its own tmpfs are reached too.
func (r *corpusRun) path(p *corpusProc, f string) string {
	abs := filepath.Join(r.work, f)
	if p != nil && r.c.Tmpfs != nil && p.running() {
		return filepath.Join("/proc", strconv.Itoa(p.cmd.Process.Pid), "root", abs)
	}
	return abs
}

func countLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\n"))
}

var signals = map[string]syscall.Signal{"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "HUP": syscall.SIGHUP, "KILL": syscall.SIGKILL}

// act does the case's actions in order, while sluice runs.
func (r *corpusRun) act(p *corpusProc) error {
	for i, a := range r.c.Actions {
		if err := r.wait(a.corpusWait, p); err != nil {
			return fmt.Errorf("action %d: %w", i, err)
		}
		if a.Sleep > 0 {
			time.Sleep(time.Duration(a.Sleep))
		}
		if !p.running() {
			return fmt.Errorf("action %d: sluice exited before it (%d)", i, p.code)
		}
		if a.Signal != "" {
			sig, ok := signals[a.Signal]
			if !ok {
				return fmt.Errorf("action %d: unknown signal %q", i, a.Signal)
			}
			if err := p.cmd.Process.Signal(sig); err != nil {
				return fmt.Errorf("action %d: %w", i, err)
			}
		}
		if a.KillPlugin != "" {
			pid := pluginChild(p.cmd.Process.Pid, a.KillPlugin, r.deadline)
			if pid == 0 {
				return fmt.Errorf("action %d: no %s plugin process under sluice", i, a.KillPlugin)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				return fmt.Errorf("action %d: %w", i, err)
			}
		}
		if a.Remove != "" {
			if err := os.Remove(r.path(p, a.Remove)); err != nil {
				return fmt.Errorf("action %d: %w", i, err)
			}
		}
	}
	return nil
}

// pluginChild returns the pid of a child of pid whose executable's file name is name, waiting for one
// until the deadline; 0 when there is none.
func pluginChild(pid int, name string, deadline time.Time) int {
	for time.Now().Before(deadline) {
		for _, c := range children(pid) {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); err == nil && filepath.Base(exe) == name {
				return c
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0
}

// checkLeftovers fails the case if a process still runs in its directory 5 s after sluice ended (a
// plugin that outlived the host), and kills it.
func (r *corpusRun) checkLeftovers() {
	var left []int
	for end := time.Now().Add(5 * time.Second); ; {
		left = processesIn(r.work)
		if len(left) == 0 || time.Now().After(end) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range left {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		r.errorf("process %d (%s) outlived sluice by 5s", pid, exe)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// processesIn returns the pids of live processes whose working directory is dir or below it.
func processesIn(dir string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || (cwd != dir && !strings.HasPrefix(cwd, dir+"/")) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && !bytes.Contains(stat, []byte(") Z ")) {
			out = append(out, pid)
		}
	}
	return out
}

// then runs a command after sluice ended.
func (r *corpusRun) then(i int, th corpusThen) {
	t := r.t
	var argv []string
	switch {
	case th.Sluice != nil:
		argv = append([]string{filepath.Join(binDir, "sluice")}, th.Sluice...)
	case th.Tool != "":
		argv = append([]string{corpusTool(t, th.Tool)}, th.Args...)
	default:
		t.Fatalf("then[%d]: neither sluice nor tool", i)
	}
	for j := range argv {
		argv[j] = r.expand(argv[j])
	}
	ctx, cancel := context.WithDeadline(context.Background(), r.deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = r.work
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range r.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("then[%d]: %v", i, err)
	}
	if ctx.Err() != nil {
		r.errorf("then[%d]: still running at the deadline (a hang)\nstderr:\n%s", i, r.normalise(stderr.String()))
		return
	}
	if code != th.Exit {
		r.errorf("then[%d]: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", i, code, th.Exit, r.normalise(stdout.String()), r.normalise(stderr.String()))
	}
	if th.Sluice != nil {
		r.countRedelivered(stdout.String())
		r.checkText(fmt.Sprintf("then[%d]", i), stdout.String()+stderr.String())
	}
	for file, out := range map[string]string{th.Stdout: stdout.String(), th.Stderr: stderr.String()} {
		if file == "" {
			continue
		}
		if th.Sluice != nil { // a tool's output is data, kept as it is
			out = r.normalise(out)
		}
		if err := os.WriteFile(filepath.Join(r.work, file), []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var (
	toolsOnce sync.Once
	toolsErr  error
)

// corpusTool builds the tools of plugins/*/tools beside sluice, once, and returns the named one.
func corpusTool(t *testing.T, name string) string {
	toolsOnce.Do(func() {
		tools, _ := filepath.Glob(filepath.Join(repoRoot(), "plugins", "*", "tools", "*"))
		for _, tool := range tools {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, filepath.Base(tool)), "./tools/"+filepath.Base(tool))
			cmd.Dir = filepath.Dir(filepath.Dir(tool))
			if out, err := cmd.CombinedOutput(); err != nil {
				toolsErr = fmt.Errorf("building %s: %v\n%s", tool, err, out)
				return
			}
		}
	})
	if toolsErr != nil {
		t.Fatal(toolsErr)
	}
	path := filepath.Join(binDir, name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no tool %q under plugins/*/tools", name)
	}
	return path
}

var (
	redeliveredRe = regexp.MustCompile(`, (\d+) records redelivered`)
	deliveredRe   = regexp.MustCompile(`, (\d+) delivered \(`)
)

func (r *corpusRun) countRedelivered(stdout string) {
	for _, m := range redeliveredRe.FindAllStringSubmatch(stdout, -1) {
		n, _ := strconv.Atoi(m[1])
		r.redelivered += n
	}
}

// checkNeverPrinted looks for the case's secrets in what sluice printed and in every file of the work
// directory.
func (r *corpusRun) checkNeverPrinted(p *corpusProc) {
	if len(r.c.NeverPrinted) == 0 {
		return
	}
	outputs := map[string]string{"stdout": p.stdout.String(), "stderr": p.stderr.String()}
	_ = filepath.WalkDir(r.work, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && filepath.Base(path) != "corpus.env" {
			if b, err := os.ReadFile(path); err == nil {
				outputs[path] = string(b)
			}
		}
		return nil
	})
	for i, secret := range r.c.NeverPrinted {
		secret = r.expand(secret)
		for where, out := range outputs {
			if strings.Contains(out, secret) {
				r.errorf("%s holds never_printed[%d] (%d bytes; not shown: it may be a secret)", where, i, len(secret))
			}
		}
	}
}

// corpusForbidden are texts no output of sluice may hold: Go's or gRPC's internals, which say nothing to a
// user.
var corpusForbidden = []string{"rpc error", "desc = ", "goroutine ", "runtime error", "nil pointer", "[recovered]",
	"context deadline exceeded", "context canceled", "use of closed network connection", "transport is closing", "strconv."}

func (r *corpusRun) checkText(who, out string) {
	for _, f := range corpusForbidden {
		if strings.Contains(out, f) {
			r.errorf("%s printed %q, Go's internals rather than a message for users:\n%s", who, f, r.normalise(out))
		}
	}
}

var (
	positioned  = regexp.MustCompile(`^[^\s:]+:\d+:\d+: `)
	problemsEnd = regexp.MustCompile(`^\d+ problems? found$`)
)

// checkPositions checks that every problem sluice reported for exit 2 names where: file:line:col.
func (r *corpusRun) checkPositions(stderr string) {
	for _, line := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		if line == "" || strings.HasPrefix(line, "level=") || problemsEnd.MatchString(line) || positioned.MatchString(line) {
			continue
		}
		r.errorf("a problem that does not say where (file:line:col): %q", line)
	}
}

// golden compares a stream with the case's NAME.golden (whole) or NAME.lines (lines in order).
func (r *corpusRun) golden(name, got string) {
	goldenPath := filepath.Join(r.caseDir, name+".golden")
	linesPath := filepath.Join(r.caseDir, name+".lines")
	if b, err := os.ReadFile(linesPath); err == nil {
		if err := matchLines(strings.Split(strings.TrimRight(string(b), "\n"), "\n"), got); err != nil {
			r.errorf("%s: %v\n%s:\n%s", name+".lines", err, name, got)
		}
		return
	}
	if _, err := os.Stat(goldenPath); err == nil || (*update && r.c.KnownBug == "") {
		r.compareGolden(name+".golden", got)
	}
}

func (r *corpusRun) compareGolden(file, got string) {
	path := filepath.Join(r.caseDir, file)
	// The goldens of a known bug hold what sluice should print, not what it prints.
	if *update && r.c.KnownBug == "" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			r.t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		r.errorf("%v (go test -run 'TestCorpus/%s$' -update writes it)", err, filepath.Base(r.caseDir))
		return
	}
	if string(want) != got {
		r.errorf("%s differs (-update rewrites it)\ngot:\n%s\nwant:\n%s", file, got, want)
	}
}

// matchLines checks that each pattern matches a whole line of out, in order; … in a pattern matches any
// text.
func matchLines(patterns []string, out string) error {
	lines := strings.Split(out, "\n")
	i := 0
	for _, p := range patterns {
		if p == "" {
			continue
		}
		parts := strings.Split(p, "…")
		for j := range parts {
			parts[j] = regexp.QuoteMeta(parts[j])
		}
		re := regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
		for i < len(lines) && !re.MatchString(lines[i]) {
			i++
		}
		if i == len(lines) {
			return fmt.Errorf("no line matches %q (after the lines matched before it)", p)
		}
		i++
	}
	return nil
}

// Normalisation: what changes from run to run becomes a placeholder.
var normalisers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`time=\S+ `), ""},                                                                                  // log timestamps
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)`), "<time>"},                                 // other timestamps (with a fraction: a time written in a file stays)
	{regexp.MustCompile(`pid([ =])\d+`), "pid$1<pid>"},                                                                     // process ids
	{regexp.MustCompile(`\(\d+/s\)`), "(<rate>)"},                                                                          // rates in summaries
	{regexp.MustCompile(`\b(in|over|for|after|took)([ =])\d+(\.\d+)?(ns|µs|ms|s|m|h)(\d+(\.\d+)?(ms|s|m))*`), "$1$2<dur>"}, // elapsed times
	{regexp.MustCompile(`\bin=\d+(\.\d+)?(ns|µs|ms|s|m|h)(\d+(\.\d+)?(ms|s|m))*`), "in=<dur>"},
	{regexp.MustCompile(`\.go:\d+`), ".go:<line>"},                             // source lines in panics
	{regexp.MustCompile(`127\.0\.0\.1:[1-6]\d{4}\b`), "127.0.0.1:<port>"},      // free ports not named by a variable
	{regexp.MustCompile(`known plugins: [a-z0-9_, -]+`), "known plugins: …"},   // grows as plugins are added
	{regexp.MustCompile(`lookup (\S+) on \S+: `), "lookup $1 on <resolver>: "}, // the machine's DNS server
	{regexp.MustCompile(`script: [0-9a-f]{40}`), "script: <sha1>"},             // a Redis script's digest changes with its text
}

// normalise replaces the case's directories and the servers' addresses by their $NAME, then the
// volatile parts by placeholders.
func (r *corpusRun) normalise(s string) string {
	vars := []string{"BIN", "REPO"}
	vals := map[string]string{"BIN": binDir, "REPO": filepath.Clean(repoRoot())}
	for k, v := range r.env {
		if len(v) >= 6 && (k == "WORK" || k == "PLUGINS" || strings.Contains(v, "127.0.0.1") || strings.Contains(v, "/")) {
			vars = append(vars, k)
			vals[k] = v
		}
	}
	// Longest first: $WORK before a prefix of it.
	sort.Slice(vars, func(i, j int) bool { return len(vals[vars[i]]) > len(vals[vars[j]]) })
	for _, k := range vars {
		s = strings.ReplaceAll(s, vals[k], "$"+k)
	}
	for _, n := range normalisers {
		s = n.re.ReplaceAllString(s, n.with)
	}
	return s
}

// checkRecords checks output files of records.
func (r *corpusRun) checkRecords(rc corpusRecords) {
	name := strings.Join(rc.Files, " + ")
	counts := map[int]int{}
	for _, file := range rc.Files {
		if err := readSeqs(filepath.Join(r.work, file), rc.Fields[file], counts); err != nil {
			r.errorf("records: %s: %v", file, err)
			return
		}
	}
	n := rc.Seqs
	if rc.Prefix {
		n = 0
		for counts[n] > 0 {
			n++
		}
		if n < r.delivered {
			r.errorf("%s: seqs 0 to %d, fewer than the %d the summary reports delivered", name, n-1, r.delivered)
		}
		if rc.Seqs > 0 && n > rc.Seqs {
			r.errorf("%s: seqs 0 to %d, more than the %d expected", name, n-1, rc.Seqs)
		}
	}
	var missing []int
	dups := 0
	for i := 0; i < n; i++ {
		if counts[i] == 0 {
			missing = append(missing, i)
		}
		dups += max(counts[i]-1, 0)
	}
	for _, seq := range slices.Sorted(mapKeys(counts)) {
		if seq < 0 || seq >= n {
			r.errorf("%s: seq %d, beyond the %d expected (a gap before it: a record lost)", name, seq, n)
			break
		}
	}
	if len(missing) > 0 {
		r.errorf("%s: %d records lost (first: seq %d)", name, len(missing), missing[0])
	}
	switch rc.Duplicates {
	case "none":
		if dups > 0 {
			r.errorf("%s: %d duplicates, want none", name, dups)
		}
	case "", "redelivered":
		if dups > r.redelivered {
			r.errorf("%s: %d duplicates, but sluice reported %d records redelivered", name, dups, r.redelivered)
		}
	case "any":
	default:
		r.errorf("records: duplicates: want none, redelivered or any, got %q", rc.Duplicates)
	}
	r.t.Logf("%s: %d records, %d duplicates, %d reported redelivered", name, n, dups, r.redelivered)
}

var leadingSeq = regexp.MustCompile(`^\{"seq":(\d+)[,}]`)

// readSeqs counts the seq of each record in a file (see corpusRecords).
func readSeqs(path, field string, counts map[int]int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		payload := sc.Bytes()
		if field != "" {
			var m map[string]json.RawMessage
			var s string
			if err := json.Unmarshal(payload, &m); err != nil || json.Unmarshal(m[field], &s) != nil {
				return fmt.Errorf("line %d: want a JSON object with a string %q: %.200q", line, field, payload)
			}
			payload = []byte(s)
		}
		// The seq leads the payload: read it alone, so that a payload too deep for encoding/json counts.
		m := leadingSeq.FindSubmatch(payload)
		if m == nil {
			return fmt.Errorf("line %d: not a record {\"seq\":N,…}: %.200q", line, payload)
		}
		seq, err := strconv.Atoi(string(m[1]))
		if err != nil {
			return fmt.Errorf("line %d: %v", line, err)
		}
		counts[seq]++
	}
	return sc.Err()
}

// corpusServices starts the servers cases need, each at most once, and the fake ones every case may use.
type corpusServices struct {
	t     *testing.T
	root  string
	fakes map[string]string
	mu    sync.Mutex
	lazy  map[string]*lazyService
	stops []func()
}

type lazyService struct {
	once sync.Once
	done chan struct{}
	env  map[string]string
	err  error
}

func newCorpusServices(t *testing.T) *corpusServices {
	s := &corpusServices{t: t, root: t.TempDir(), lazy: map[string]*lazyService{}}
	// A server that accepts connections and never answers.
	silent, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	var held []io.Closer
	var heldMu sync.Mutex
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			heldMu.Lock()
			held = append(held, c)
			heldMu.Unlock()
		}
	}()
	// A port nothing listens on: connections are refused.
	refusedAddr := services.RefusedAddr(t)
	t.Cleanup(func() {
		silent.Close()
		heldMu.Lock()
		for _, c := range held {
			c.Close()
		}
		heldMu.Unlock()
	})
	s.fakes = map[string]string{"SILENT_ADDR": silent.Addr().String(), "REFUSED_ADDR": refusedAddr}
	t.Cleanup(s.stop)
	return s
}

func (s *corpusServices) service(kind string) *lazyService {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.lazy[kind]
	if l == nil {
		l = &lazyService{done: make(chan struct{})}
		s.lazy[kind] = l
	}
	return l
}

// prefetch starts a server in the background.
func (s *corpusServices) prefetch(kind string) {
	l := s.service(kind)
	l.once.Do(func() {
		go func() {
			defer close(l.done)
			l.env, l.err = serviceKinds[kind](s, filepath.Join(s.root, kind))
		}()
	})
}

// get starts a server if it is not started yet, waits for it and returns its variables.
func (s *corpusServices) get(kind string) (map[string]string, error) {
	s.prefetch(kind)
	l := s.service(kind)
	<-l.done
	return l.env, l.err
}

// cleanup registers f to run when TestCorpus ends.
func (s *corpusServices) cleanup(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stops = append(s.stops, f)
}

// stop waits for the servers still starting, then stops every server, last started first.
func (s *corpusServices) stop() {
	s.mu.Lock()
	lazy := slices.Collect(func(yield func(*lazyService) bool) {
		for _, l := range s.lazy {
			yield(l)
		}
	})
	s.mu.Unlock()
	for _, l := range lazy {
		<-l.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
}

// TestCorpusMatching checks the two things every golden relies on: how .lines patterns match and what
// normalise replaces.
func TestCorpusMatching(t *testing.T) {
	out := "a start\npipeline p: done — 12 records read (<rate>)\nlevel=ERROR msg=x\nend"
	for _, tt := range []struct {
		patterns []string
		ok       bool
	}{
		{[]string{"pipeline p: done — … records read (<rate>)", "end"}, true},
		{[]string{"a start", "", "level=ERROR …"}, true},
		{[]string{"end", "a start"}, false},                         // order counts
		{[]string{"pipeline p: done"}, false},                       // a whole line, not a prefix
		{[]string{"level=ERROR msg=x", "level=ERROR msg=x"}, false}, // each line matches once
	} {
		if err := matchLines(tt.patterns, out); (err == nil) != tt.ok {
			t.Errorf("matchLines(%q) = %v, want ok %v", tt.patterns, err, tt.ok)
		}
	}
	r := &corpusRun{env: map[string]string{"WORK": "/tmp/x/work", "REDIS_ADDR": "127.0.0.1:41234", "CASE": "c"}}
	got := r.normalise("time=2026-11-30T15:18:38.722Z level=WARN msg=m stage=\"sink file (pid 4242)\" pid=77 in=1.5s " +
		"/tmp/x/work/out 127.0.0.1:41234 127.0.0.1:38001 127.0.0.1:9092 at=2026-11-30T15:18:38.722Z 1979-05-27T07:32:00Z " +
		"(1234/s) in 428ms main.go:92 lookup h.invalid on 10.0.0.53:53: no such host")
	want := "level=WARN msg=m stage=\"sink file (pid <pid>)\" pid=<pid> in=<dur> $WORK/out $REDIS_ADDR 127.0.0.1:<port> " +
		"127.0.0.1:9092 at=<time> 1979-05-27T07:32:00Z (<rate>) in <dur> main.go:<line> lookup h.invalid on <resolver>: no such host"
	if got != want {
		t.Errorf("normalise:\n got %s\nwant %s", got, want)
	}
}
