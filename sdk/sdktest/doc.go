// Package sdktest is the acceptance suite every sluice plugin runs: it drives a plugin through the real
// plugin protocol, the way the host does, and checks what the host relies on — positions, batching, acks,
// resuming and restarting, checkpoints, and that closing a stage leaves nothing running.
//
// # Running it
//
// Call the function for each stage kind your plugin serves from an ordinary test:
//
//	func TestSource(t *testing.T) {
//		sdktest.Source(t, myplugin.Plugin(), sdktest.SourceConfig{
//			Settings: func(t *testing.T) map[string]any {
//				return map[string]any{"path": writeFixture(t, 100)} // a fresh fixture per check
//			},
//			Records: 100,  // how many records each check reads
//			Done:    true, // with these settings the source ends after exactly 100 records
//			Binary:  binary,
//		})
//	}
//
//	func TestSink(t *testing.T) {
//		sdktest.Sink(t, myplugin.Plugin(), sdktest.SinkConfig{
//			Settings: func(t *testing.T) map[string]any {
//				return map[string]any{"path": filepath.Join(t.TempDir(), "out.jsonl")}
//			},
//			Verify: func(t *testing.T, settings map[string]any, written []record.Record) {
//				// read the destination back and compare it with written
//			},
//			Binary: binary,
//		})
//	}
//
// sdktest.Buffer works the same way with a BufferConfig.
//
// Every check runs twice when Binary is set: "local" serves the plugin in the test process over an
// in-memory gRPC connection (protocol.Local: the same server code a plugin binary runs, and the race
// detector sees the plugin), and "process" starts the binary as a subprocess over mutual TLS
// (protocol.Launch), which catches a main that does not call sdk.Serve, a spec that differs from the
// library's, or output written to stdout. Build the binary once, in TestMain, with Build:
//
//	var binary string
//
//	func TestMain(m *testing.M) {
//		bin, remove, err := sdktest.Build("./cmd/myplugin")
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		binary = bin
//		code := m.Run()
//		remove()
//		os.Exit(code)
//	}
//
// # What the checks mean for your plugin
//
// Settings are sent as the host sends them: the values your Settings function returns, checked and
// normalised and with the spec's defaults filled in by the host's own resolver (sdk.Resolve): a key the
// spec does not declare, a missing required setting, a value of the wrong type or out of bounds, and a
// default the host would refuse fail the check.
//
// Each check runs in its own subtest with its own instances, a 15 s deadline, and a goroutine leak
// check at the end (go.uber.org/goleak): once every instance has ended, no goroutine your plugin started may
// still run. An instance ends when Close has returned or, in the checks that simulate a crash, when it is
// aborted: a subprocess is killed (SIGKILL), and an in-process one gets no Close, only the end of its stage
// context. So tie what a stage keeps open — a database/sql pool, a client with background goroutines — to
// OpenRequest.Context (context.AfterFunc(req.Context(), …)), which ends in both cases.
//
// Because the leak check looks at the whole process, do not run these functions in parallel with other
// tests of the same package (no t.Parallel around them).
//
// Sources must be resumable: opened with After set to a position they emitted, they continue with the
// next record. When your source's records cannot be reproduced exactly, set SourceConfig.Same to compare
// what can be. Sinks and buffers receive the records DefaultRecord makes unless the config supplies
// Record; sinks with the AtomicPosition capability must return the last batch's position from
// Checkpoint, across a crash.
package sdktest
