package cli

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/sluicehq/sluice/runtime/config"
	"github.com/sluicehq/sluice/runtime/plugin"
)

// lockPath is the lock file that pins the plugins of the connector file at path.
func lockPath(path string) string { return filepath.Join(filepath.Dir(path), config.LockFileName) }

// subprocessStages returns the stages of f that run a plugin binary.
func subprocessStages(f *config.File) []*config.Stage {
	var out []*config.Stage
	for _, p := range f.Pipelines {
		for _, st := range []*config.Stage{p.Source, p.Buffer, p.Sink, p.DeadLetter} {
			if st != nil && !st.InProcess {
				out = append(out, st)
			}
		}
	}
	return out
}

// pin checks the pins of every stage of files that runs a plugin binary against the binary, and gives
// c the pins that hold so that each start of the plugin checks them again. A stage is pinned by its
// sha256 key, else — when withLocks — by the sluice.lock beside its file, which then must pin its plugin.
// It returns the problems, each where the pin (or the unpinned stage) is written, and the errors that
// are not the files' (a binary or lock file that cannot be read).
func pin(c *plugin.Catalog, files []*config.File, withLocks bool) (config.Errors, []error) {
	var problems config.Errors
	var other []error
	type digest struct{ path, sum string }
	digests := map[string]digest{} // by plugin name: each binary is hashed once
	locks := map[string]*config.Lock{}
	seen := map[string]bool{} // pins already checked, by where: each is reported or registered once
	for _, f := range files {
		var lock *config.Lock
		if withLocks {
			lp := lockPath(f.Path)
			l, read := locks[lp]
			if !read {
				var err error
				l, err = config.ReadLock(lp)
				var errs config.Errors
				switch {
				case errors.As(err, &errs):
					problems = append(problems, errs...)
				case err != nil:
					other = append(other, err)
				}
				locks[lp] = l
			}
			lock = l
		}
		for _, st := range subprocessStages(f) {
			pl, ok := c.Lookup(st.Plugin)
			if !ok || pl.Path == "" {
				continue // load reports it
			}
			var p plugin.Pin
			var at config.Pos
			var lp config.LockPin
			locked := false
			if lock != nil {
				lp, locked = lock.Pins[st.Plugin]
			}
			switch {
			case st.SHA256 != "":
				p, at = plugin.Pin{SHA256: st.SHA256, Where: st.SHA256Pos.String()}, st.SHA256Pos
			case lock == nil:
				continue
			case !locked:
				problems = append(problems, &config.Error{Pos: st.Pos, Msg: fmt.Sprintf(
					`plugin %q is not pinned in %s, which must pin every plugin binary the connector files beside it run: run "sluice plugins lock %s", or give the stage a sha256`,
					st.Plugin, lock.Path, f.Path)})
				continue
			default:
				p, at = plugin.Pin{SHA256: lp.SHA256, Where: lp.Pos.String(), Lock: true}, lp.Pos
			}
			d, hashed := digests[st.Plugin]
			if !hashed {
				path, sum, err := c.Digest(st.Plugin)
				if err != nil {
					other = append(other, err)
					continue
				}
				d = digest{path, sum}
				digests[st.Plugin] = d
			}
			if seen[p.Where] {
				continue
			}
			seen[p.Where] = true
			if d.sum != p.SHA256 {
				problems = append(problems, &config.Error{Pos: at, Msg: plugin.PinMismatch(st.Plugin, d.path, d.sum, p)})
				continue
			}
			c.Pin(st.Plugin, p)
		}
	}
	return problems, other
}
