package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/sluicehq/sluice/runtime/pipeline"
)

// screenshotEnv names a file the status page test writes a screenshot to (make status-page writes
// docs/status-page.png).
const screenshotEnv = "SLUICE_STATUS_PAGE_PNG"

// chromium returns the path of Debian's chromium. CI installs it (.ci/run), so there a missing one fails
// the test; elsewhere the test is skipped.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; CI must install it (.ci/run: apt-get install chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium); CI runs this test")
	return ""
}

// drawn is what the page's chart function records on a canvas: how many points it has, how many values
// it drew, and the newest point's values.
type drawn struct {
	Points int                 `json:"points"`
	Known  int                 `json:"known"`
	Last   map[string]*float64 `json:"last"`
}

// TestStatusPageInChromium loads the status page in headless chromium while a pipeline runs, and checks
// that its chart's data and pixels change from one moment to the next, that it shows each pipeline's
// state, guarantee, stages and error, and that the browser asked nothing of anyone but this sluice.
func TestStatusPageInChromium(t *testing.T) {
	exe := chromium(t)
	r := start(t, ordersConfig(1500), brokenConfig(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- New(Options{Pipelines: r.statuses}).Serve(sctx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	base := "http://" + ln.Addr().String() + "/"
	waitFor(t, 10*time.Second, "orders running and audit failed", func() bool {
		sts := r.statuses()
		return find(sts, "orders").State == pipeline.Running && find(sts, "audit").State == pipeline.Failed
	})

	browserOut := &lockedBuffer{}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe), chromedp.UserDataDir(t.TempDir()), chromedp.CombinedOutput(browserOut),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.WindowSize(1100, 800),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true), chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("no-pings", true), chromedp.Flag("disable-breakpad", true), chromedp.Flag("disable-dev-shm-usage", true),
		// Any name the browser would look up fails: the page may reach only 127.0.0.1.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"))
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	var mu sync.Mutex
	var requests, problems []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			requests = append(requests, e.Request.URL)
		case *cdpruntime.EventExceptionThrown:
			problems = append(problems, fmt.Sprintf("exception: %s (%s:%d)", e.ExceptionDetails.Text, e.ExceptionDetails.URL, e.ExceptionDetails.LineNumber+1))
		case *cdpruntime.EventConsoleAPICalled:
			if e.Type == cdpruntime.ConsoleAPICalledTypeError || e.Type == cdpruntime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range e.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				problems = append(problems, "console "+string(e.Type)+": "+strings.Join(args, " "))
			}
		}
	}); err != nil {
		t.Fatalf("starting chromium: %v\n%s", err, browserOut)
	}
	const orders, audit = `section[data-pipeline="orders"]`, `section[data-pipeline="audit"]`
	if err := chromedp.Do(ctx, chromedp.Navigate(base), chromedp.WaitVisible(chromedp.CSS(orders+` canvas.throughput`)),
		chromedp.WaitVisible(chromedp.CSS(audit))); err != nil {
		t.Fatalf("loading %s in chromium: %v\n%s", base, err, browserOut)
	}
	eval := func(js string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("evaluating %s: %v", js, err)
		}
		return v
	}

	chart := func() (drawn, string) {
		t.Helper()
		d := eval(`document.querySelector('` + orders + ` canvas.throughput').dataset.drawn || "{}"`)
		png := eval(`document.querySelector('` + orders + ` canvas.throughput').toDataURL()`)
		var v drawn
		if err := json.Unmarshal([]byte(d), &v); err != nil {
			t.Fatalf("the chart's data %q: %v", d, err)
		}
		return v, png
	}
	// The first poll has no rate yet (it needs two samples); wait until the chart has drawn some.
	var first drawn
	var firstPNG string
	deadline := time.Now().Add(20 * time.Second)
	for first.Known < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the chart drew no rates in 20s: %+v", first)
		}
		time.Sleep(200 * time.Millisecond)
		first, firstPNG = chart()
	}
	time.Sleep(2500 * time.Millisecond)
	second, secondPNG := chart()
	if second.Points <= first.Points || second.Known <= first.Known {
		t.Errorf("the chart's data did not grow: %+v then %+v", first, second)
	}
	for _, d := range []drawn{first, second} {
		if v := d.Last["delivered"]; v == nil || *v <= 0 || *v > 2000 {
			t.Errorf("the chart's newest delivered rate: %v, want (0, 2000]", deref(v))
		}
	}
	if firstPNG == secondPNG {
		t.Error("the chart's pixels did not change in 2.5s")
	}

	ordersText := eval(`document.querySelector('` + orders + `').innerText`)
	auditText := eval(`document.querySelector('` + audit + `').innerText`)
	lagDrawn := eval(`document.querySelector('` + orders + ` canvas.lag').dataset.drawn`)
	for _, want := range []string{"orders", "running", "exactly-once", "source generate (in sluice)", "buffer memory (in sluice)",
		"sink discard (in sluice)", "delivered", "positions: source 0x", "buffer 0x", "lag—"} {
		if !strings.Contains(ordersText, want) {
			t.Errorf("the orders card lacks %q:\n%s", want, ordersText)
		}
	}
	for _, want := range []string{"audit", "failed", "at-least-once", "last error: sink file", "not a directory"} {
		if !strings.Contains(auditText, want) {
			t.Errorf("the audit card lacks %q:\n%s", want, auditText)
		}
	}
	var lag drawn
	if err := json.Unmarshal([]byte(lagDrawn), &lag); err != nil || lag.Known != 0 || lag.Points == 0 {
		t.Errorf("the lag chart drew %s (%v); want points and no values: the source reports no event times", lagDrawn, err)
	}

	if path := os.Getenv(screenshotEnv); path != "" {
		// Let the chart show a stretch of the run first.
		time.Sleep(20 * time.Second)
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", path)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(requests) < 5 {
		t.Errorf("the browser made %d requests, want the page, its script and style and some polls: %v", len(requests), requests)
	}
	for _, u := range requests {
		if !strings.HasPrefix(u, base) && !strings.HasPrefix(u, "data:") {
			t.Errorf("the page asked for %s", u)
		}
	}
	for _, p := range problems {
		t.Errorf("in the browser: %s", p)
	}
}

// lockedBuffer collects the browser's output, written from another goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
