// Package compare benchmarks sluice's JSON and Extended JSON codec (transforms/codec) against well-kept
// JSON libraries on the same MongoDB change event: tidwall/gjson and tidwall/sjson (reading a few paths,
// patching one), bytedance/sonic and goccy/go-json (decoding and encoding whole documents), and
// encoding/json. It is its own module so that those libraries stay out of the transforms module. Run it
// outside the workspace:
//
//	cd transforms/codec/compare && GOWORK=off go test -run '^$' -bench . -benchmem
//
// The results, and what they decided, are in the README's Benchmarks section and in
// docs/decisions/2026-11-30-transforms-values.md.
package compare
