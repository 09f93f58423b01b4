package cli

import (
	"testing"

	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/transforms"
)

// TestVerifyReadsSinkBytesAsTheSourceEncodes: a sink that keeps bytes only (Kafka's verifier returns raw
// payloads) is compared as the source's record after the steps is encoded. Before, compare saw nil on the
// sink's side and every key of the demo chain was stale.
func TestVerifyReadsSinkBytesAsTheSourceEncodes(t *testing.T) {
	expr, _, err := transforms.CompileExpression("fullDocument")
	if err != nil {
		t.Fatal(err)
	}
	v := &verifier{compare: expr.NewEvaluator(), compareText: "fullDocument"}
	e := &expected{rec: record.Record{Encoding: record.EncodingJSON,
		Payload: []byte(`{"operationType":"snapshot","fullDocument":{"_id":1,"c":"x"}}`)}}
	same := &held{rec: record.Record{Payload: []byte(`{"_id":{"_data":"6b"},"operationType":"insert","fullDocument":{"_id":1,"c":"x"}}`)}}
	if class, hint := v.classify(ident{key: "1"}, e, same); class != "" {
		t.Fatalf("the same document in raw sink bytes is %s: %s", class, hint)
	}
	other := &held{rec: record.Record{Payload: []byte(`{"operationType":"update","fullDocument":{"_id":1,"c":"y"}}`)}}
	if class, _ := v.classify(ident{key: "1"}, e, other); class != classStale {
		t.Fatalf("a different document in raw sink bytes is %q, want stale", class)
	}
}
