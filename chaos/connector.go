package main

import (
	"fmt"
	"strings"
	"time"
)

// versionHeader is the metadata entry (a Kafka header) in which the MongoDB pipeline's steps put a change's
// version: "0" for the insert, "1", "2", … for updates, "del" for the delete.
const versionHeader = "chaos.v"

// generateKeys is how many keys the generate pipeline's records are spread over (key = seq % generateKeys),
// so that each key holds many records whose order can be checked.
const generateKeys = 1000

// connectorParams fills the connector file.
type connectorParams struct {
	mode                    mode
	mongoURI, database      string
	collection              string
	startAt                 time.Time
	redisAddr               string
	brokers                 []string
	mongoTopic, genTopic    string
	generateCount           int
	generateRate            float64
	mongoPipe, generatePipe string
}

// connectorFile is the harness's connector file: both pipelines in one file, run by one host, with
// `retry` set as for a chaos run — never give up on transient failures (the harness itself notices a
// pipeline that stops making progress), backoff capped at 5 s so that a pipeline is back soon after a
// server it needs has restarted. Its inline tests check the MongoDB pipeline's steps on the three change
// shapes before anything runs (`sluice test`).
func connectorFile(p connectorParams) string {
	brokers := make([]string, len(p.brokers))
	for i, b := range p.brokers {
		brokers[i] = fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf(`# Written by the chaos harness (chaos/): %[1]s.
version: 1
pipelines:
  - id: %[2]s
    source:
      plugin: mongodb
      settings: { uri: %[3]q, database: %[4]s, collection: %[5]s, max_await: 200ms, start_at: %[6]q }
    transforms:
      - filter: 'operationType in ["insert", "update", "delete"]'
      # MongoDB gives an update's _id in documentKey and its new fields in updateDescription;
      # mongo-java-server gives neither, but puts the update ($set) in documentKey. The writer sets k and v.
      - key: 'documentKey._id ?? documentKey["$set"].k'
      - set: { "meta.%[7]s": 'operationType == "delete" ? "del" : string(updateDescription.updatedFields.v ?? documentKey["$set"].v ?? fullDocument.v)' }
      - route: '"%[8]s"'
    buffer:
      plugin: redis
      settings: { addr: %[9]q, key: "chaos:{%[2]s}" }
    sink:
      plugin: kafka
      settings: { brokers: [%[10]s], headers: [%[7]s], transactional: %[11]t, transactional_id: "chaos-%[2]s" }
    batch_max_records: 200
    %[17]s
    retry: { initial: 500ms, max: 5s, give_up_after: never }

  - id: %[12]s
    source:
      plugin: generate
      settings: { count: %[13]d, rate: %[14]g, payload_bytes: 120 }
    buffer:
      plugin: redis
      settings: { addr: %[9]q, key: "chaos:{%[12]s}" }
    sink_transforms:
      - key: 'seq %% %[15]d'
    sink:
      plugin: kafka
      settings: { brokers: [%[10]s], topic: %[16]q, transactional: %[11]t, transactional_id: "chaos-%[12]s" }
    batch_max_records: 500
    %[17]s
    retry: { initial: 500ms, max: 5s, give_up_after: never }

tests:
  - name: an insert is keyed by its _id and has version 0
    pipeline: %[2]s
    input:
      - { operationType: insert, documentKey: { _id: m0000001 }, fullDocument: { _id: m0000001, k: m0000001, v: 0 } }
    expect:
      - { key: m0000001, meta: { %[7]s: "0", sluice.route: %[8]s } }
  - name: an update as mongo-java-server sends it, and as MongoDB does
    pipeline: %[2]s
    input:
      - { operationType: update, documentKey: { $set: { k: m0000001, v: 2 } }, fullDocument: { _id: m0000001, k: m0000001, v: 5 } }
      - { operationType: update, documentKey: { _id: m0000001 }, updateDescription: { updatedFields: { k: m0000001, v: 3 } }, fullDocument: { _id: m0000001, k: m0000001, v: 4 } }
    expect:
      - { key: m0000001, meta: { %[7]s: "2" } }
      - { key: m0000001, meta: { %[7]s: "3" } }
  - name: a delete has version del
    pipeline: %[2]s
    input:
      - { operationType: delete, documentKey: { _id: m0000001 } }
    expect:
      - { key: m0000001, meta: { %[7]s: del } }
`, p.mode, p.mongoPipe, p.mongoURI, p.database, p.collection, p.startAt.UTC().Format(time.RFC3339),
		versionHeader, p.mongoTopic, p.redisAddr, strings.Join(brokers, ", "), p.mode.transactional(),
		p.generatePipe, p.generateCount, p.generateRate, generateKeys, p.genTopic, p.mode.ordering())
}
