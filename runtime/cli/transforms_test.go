package cli_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// replayEvents are change events as a MongoDB replay_file holds them (one per line, relaxed Extended JSON).
const replayEvents = `{"_id": {"_data": "8201"}, "operationType": "insert", "clusterTime": {"$timestamp": {"t": 1701945778, "i": 1}}, "wallTime": {"$date": "2023-12-07T10:42:58.117Z"}, "ns": {"db": "shop", "coll": "orders"}, "documentKey": {"_id": {"$oid": "6571a1b2c3d4e5f60718293a"}}, "fullDocument": {"_id": {"$oid": "6571a1b2c3d4e5f60718293a"}, "customer": "ada", "total": {"$numberDecimal": "99.99"}}}
{"_id": {"_data": "8202"}, "operationType": "update", "clusterTime": {"$timestamp": {"t": 1701945792, "i": 2}}, "wallTime": {"$date": "2023-12-07T10:43:12.001Z"}, "ns": {"db": "shop", "coll": "orders"}, "documentKey": {"_id": {"$oid": "6571a1b2c3d4e5f60718293a"}}, "updateDescription": {"updatedFields": {"total": 5}, "removedFields": []}, "txnNumber": {"$numberLong": "42"}, "lsid": {"id": {"$binary": {"base64": "q83vEjRWeJCrze8SNFZ4kA==", "subType": "04"}}}}
{"_id": {"_data": "8203"}, "operationType": "delete", "clusterTime": {"$timestamp": {"t": 1701945800, "i": 1}}, "ns": {"db": "shop", "coll": "orders"}, "documentKey": {"_id": 7}}
{"_id": {"_data": "8204"}, "operationType": "drop", "clusterTime": {"$timestamp": {"t": 1701945900, "i": 1}}, "ns": {"db": "shop", "coll": "orders"}}
`

// TestTestCommandSourceMongoDB checks that `source: mongodb` gives test inputs the key, op and metadata the
// MongoDB source plugin gives the same events: the plugin replays them into a file (format record), and
// a test built from what it wrote, taking its inputs from the same replay file, passes.
func TestTestCommandSourceMongoDB(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "events.jsonl"), replayEvents)
	pipeline := `version: 1
pipelines:
  - id: replay
    source: { plugin: mongodb, settings: { replay_file: events.jsonl } }
    sink: { plugin: file, settings: { path: out.jsonl, format: record } }
`
	writeFile(t, filepath.Join(dir, "replay.yaml"), pipeline)
	if out, errOut, code := sluice(t, dir, "run", "--data-dir", filepath.Join(dir, "state"), "replay.yaml"); code != 0 {
		t.Fatalf("run: exit %d\n%s\n%s", code, out, errOut)
	}
	f, err := os.Open(filepath.Join(dir, "out.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var expect []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct {
			Op   string            `json:"op"`
			Key  *string           `json:"key"`
			Meta map[string]string `json:"meta"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		item, _ := json.Marshal(map[string]any{"op": e.Op, "key": e.Key, "meta": e.Meta})
		if e.Key == nil { // an event without a document has no key: expect the op and metadata only
			item, _ = json.Marshal(map[string]any{"op": e.Op, "meta": e.Meta})
		}
		expect = append(expect, "      - "+string(item))
	}
	if len(expect) != 4 {
		t.Fatalf("the plugin wrote %d records, want 4", len(expect))
	}
	tests := pipeline + `tests:
  - name: inputs get what the source gives
    source: mongodb
    input_file: events.jsonl
    expect:
` + strings.Join(expect, "\n") + "\n"
	writeFile(t, filepath.Join(dir, "replay.yaml"), tests)
	out, errOut, code := sluice(t, dir, "test", "replay.yaml")
	if code != 0 || !strings.Contains(out, "PASS  replay.yaml: inputs get what the source gives") {
		t.Fatalf("test: exit %d\n%s\n%s\n%s", code, tests, out, errOut)
	}
}

// TestTestCommandExpectations: expected records that give only metadata or a key are compared on those
// alone, and a wrong one fails with the difference.
func TestTestCommandExpectations(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "events.jsonl"), replayEvents)
	writeFile(t, filepath.Join(dir, "orders.yaml"), `version: 1
pipelines:
  - id: orders
    source: { plugin: mongodb, settings: { replay_file: events.jsonl } }
    transforms:
      - filter: 'op != "other"'
      - set: { "meta.customer?": 'fullDocument.customer', "fullDocument.total_cents?": 'int(fullDocument.total * 100)' }
        when: 'fullDocument != nil'
      - route: '"shop." + meta["mongodb.coll"]'
    sink: { plugin: discard }
tests:
  - name: metadata alone
    source: mongodb
    input_file: events.jsonl
    expect:
      - { meta: { customer: ada, sluice.route: shop.orders } }
      - { key: '{"$oid":"6571a1b2c3d4e5f60718293a"}', op: update }
      - { meta: { sluice.route: shop.orders } }
  - name: a wrong key
    source: mongodb
    input:
      - { operationType: delete, ns: { db: shop, coll: orders }, documentKey: { _id: 8 } }
    expect:
      - { key: '{"$numberInt":"7"}' }
  - name: the payload written back
    source: mongodb
    input_file: events.jsonl
    expect:
      - payload: { _id: { _data: "8201" }, operationType: insert, clusterTime: { $timestamp: { t: 1701945778, i: 1 } }, wallTime: { $date: "2023-12-07T10:42:58.117Z" }, ns: { db: shop, coll: orders }, documentKey: { _id: { $oid: 6571a1b2c3d4e5f60718293a } }, fullDocument: { _id: { $oid: 6571a1b2c3d4e5f60718293a }, customer: ada, total: { $numberDecimal: "99.99" }, total_cents: 9999 } }
      - { op: update }
      - { op: delete, meta: { mongodb.coll: orders } }
`)
	out, errOut, code := sluice(t, dir, "test", "orders.yaml")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"PASS  orders.yaml: metadata alone",
		`record 1: key: want "{\"$numberInt\":\"7\"}", got "{\"$numberInt\":\"8\"}"`,
		"PASS  orders.yaml: the payload written back",
		"1 of 3 tests failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// An unknown source and a missing input_file are load errors with their place.
	writeFile(t, filepath.Join(dir, "bad.yaml"), `version: 1
pipelines:
  - id: orders
    source: { plugin: generate }
    sink: { plugin: discard }
tests:
  - name: bad
    source: mongo
    input_file: nope.jsonl
    expect: []
`)
	_, errOut, code = sluice(t, dir, "test", "bad.yaml")
	if code != 2 || !strings.Contains(errOut, `bad.yaml:8:13: test "bad": source "mongo": sluice test can give inputs the key, op and metadata of mongodb only (did you mean "mongodb"?)`) ||
		!strings.Contains(errOut, "bad.yaml:9:17: test \"bad\": input_file: open") {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
}

// TestValidateSample runs a pipeline's steps on a sample file and checks the warnings.
func TestValidateSample(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "events.jsonl"), replayEvents)
	writeFile(t, filepath.Join(dir, "orders.yaml"), `version: 1
pipelines:
  - id: orders
    source: { plugin: mongodb, settings: { replay_file: events.jsonl } }
    transforms:
      - set: { "fullDocument.cents": 'int(fullDocument.total * 100)' }
        when: 'operationType != "drop"'
      - set: { x: '1' }
        when: 'fullDocument.customer == "nobody"'
      - filter: 'operationTyp == "insert" || meta["mongodb.coll"] == "orders"'
      - filter: 'fullDocument.costumer != nil'
    sink: { plugin: discard }
`)
	out, errOut, code := sluice(t, dir, "validate", "--sample", "events.jsonl", "orders.yaml")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"orders.yaml:3:5: warning: transforms: the steps read operationTyp, which none of the 4 records of events.jsonl has (did you mean operationType?)",
		"orders.yaml:3:5: warning: transforms: the steps read fullDocument.costumer, which none of the 4 records of events.jsonl has (did you mean fullDocument.customer?)",
		"orders.yaml:8:9: warning: transforms[1].set: its when is true for none of the 2 sample records that reach it",
		"orders.yaml:11:9: warning: transforms[3].filter drops all 2 sample records that reach it",
		"orders.yaml:6:9: warning: sample record 2 fails: transforms[0].set[\"fullDocument.cents\"]: operator *: fullDocument.total is nil (a missing field?)",
		"orders.yaml:6:9: warning: sample record 3 fails:",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("warnings lack %q:\n%s", want, errOut)
		}
	}
	// A sample that is not JSON Lines is an error of the command line.
	writeFile(t, filepath.Join(dir, "bad.jsonl"), "{\"a\": 1}\nnot json\n")
	_, errOut, code = sluice(t, dir, "validate", "--sample", "bad.jsonl", "orders.yaml")
	if code != 2 || !strings.Contains(errOut, "--sample: bad.jsonl:2:") {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
}
