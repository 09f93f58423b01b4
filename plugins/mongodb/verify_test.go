package mongodb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sluicehq/sluice/plugins/mongodb"
	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/services"
)

// verified is what one Verify gave: its records (copied) in the order emitted, the size of each emit,
// and its result.
type verified struct {
	recs    []record.Record
	batches []int
	res     sdk.VerifyResult
}

func runVerify(t *testing.T, settings map[string]any, keys ...string) verified {
	t.Helper()
	var v verified
	var err error
	v.res, err = verifyErr(settings, &v, keys...)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return v
}

func verifyErr(settings map[string]any, v *verified, keys ...string) (sdk.VerifyResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ks [][]byte
	for _, k := range keys {
		ks = append(ks, []byte(k))
	}
	return (&mongodb.Source{}).Verify(ctx, sdk.VerifyRequest{Pipeline: "p", Settings: sdk.Settings(settings), Keys: ks,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))},
		func(recs []record.Record) error {
			v.batches = append(v.batches, len(recs))
			for _, r := range recs {
				v.recs = append(v.recs, clone(r))
			}
			return nil
		})
}

// summaries lists records as "operation db.coll key", sorted.
func summaries(recs []record.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, summary(r))
	}
	slices.Sort(out)
	return out
}

// sameRecord says how got differs from want in what Verify promises to match: everything but the
// position (which holds where each snapshot's stream would start).
func sameRecord(want, got record.Record) error {
	switch {
	case want.Op != got.Op || !bytes.Equal(want.Key, got.Key):
		return fmt.Errorf("%v %s, want %v %s", got.Op, got.Key, want.Op, want.Key)
	case want.Encoding != got.Encoding || !bytes.Equal(want.Payload, got.Payload):
		return fmt.Errorf("key %s: payload (%v) %s, want (%v) %s", got.Key, got.Encoding, got.Payload, want.Encoding, want.Payload)
	case !slices.Equal(want.Meta, got.Meta) || !want.Time.Equal(got.Time):
		return fmt.Errorf("key %s: metadata %v time %v, want %v %v", got.Key, got.Meta, got.Time, want.Meta, want.Time)
	}
	return nil
}

// TestLiveVerify checks Verify against mongo-java-server: after inserts, updates and deletes it emits
// exactly the documents there are now, in batches of at most 1000, as the very records an initial
// snapshot makes of them (Op snapshot, key, payload, encoding, metadata), with a position FormatPosition
// renders and its time; with Keys, only the documents those keys name (of any BSON type, a deleted one
// and one that is not Extended JSON naming none); through the plugin binary as through the Go API.
func TestLiveVerify(t *testing.T) {
	srv := services.StartMongo(t)
	ctx := context.Background()
	client := connect(t, srv.URI)
	coll := client.Database("shop").Collection("orders")
	var docs []any
	for i := range 2500 {
		docs = append(docs, bson.D{{Key: "_id", Value: i}, {Key: "qty", Value: i}, {Key: "at", Value: bson.DateTime(1700000000000 + int64(i))}})
	}
	oid := bson.NewObjectID()
	docs = append(docs, bson.D{{Key: "_id", Value: "sku-1"}, {Key: "qty", Value: 1.5}}, bson.D{{Key: "_id", Value: oid}, {Key: "qty", Value: int64(1) << 40}})
	if _, err := coll.InsertMany(ctx, docs); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.UpdateMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$lt", Value: 10}}}}, bson.D{{Key: "$set", Value: bson.D{{Key: "qty", Value: -1}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coll.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$gte", Value: 2000}, {Key: "$lt", Value: 2100}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Database("shop").Collection("other").InsertOne(ctx, bson.D{{Key: "_id", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	settings := map[string]any{"uri": srv.URI, "database": "shop", "collection": "orders", "max_await": "200ms"}
	before := time.Now()
	v := runVerify(t, settings)

	if len(v.recs) != 2402 {
		t.Fatalf("Verify emitted %d records, want 2402 (2500 inserted, 100 deleted, 2 more)", len(v.recs))
	}
	if slices.Max(v.batches) > 1000 || len(v.batches) < 3 {
		t.Errorf("emitted in batches of %v, want at most 1000 each", v.batches)
	}
	byKey := map[string]record.Record{}
	for _, r := range v.recs {
		if _, dup := byKey[string(r.Key)]; dup {
			t.Fatalf("key %s emitted twice", r.Key)
		}
		byKey[string(r.Key)] = r
	}
	for i := range 2500 {
		r, ok := byKey[fmt.Sprintf(`{"$numberInt":"%d"}`, i)]
		if deleted := i >= 2000 && i < 2100; ok == deleted {
			t.Fatalf("_id %d: emitted %v, deleted %v", i, ok, deleted)
		}
		if !ok {
			continue
		}
		ev := payload(t, r)
		want := int64(i)
		if i < 10 {
			want = -1
		}
		if r.Op != record.OpSnapshot || ev.Lookup("operationType").StringValue() != "snapshot" ||
			ev.Lookup("ns", "coll").StringValue() != "orders" || ev.Lookup("documentKey", "_id").AsInt64() != int64(i) ||
			ev.Lookup("fullDocument", "qty").AsInt64() != want {
			t.Fatalf("_id %d: %v %s", i, r.Op, r.Payload)
		}
		if op, _ := r.Meta.Get("mongodb.operation"); op != "snapshot" {
			t.Fatalf("_id %d: mongodb.operation %q", i, op)
		}
	}
	if _, ok := byKey[fmt.Sprintf(`{"$oid":"%s"}`, oid.Hex())]; !ok {
		t.Error("the document with an ObjectId _id is missing")
	}
	text, err := (&mongodb.Source{}).FormatPosition(v.res.Position)
	if err != nil || len(v.res.Position) == 0 {
		t.Fatalf("position %x: %q, %v", []byte(v.res.Position), text, err)
	}
	if v.res.Time.Before(before.Add(-10*time.Second)) || v.res.Time.After(time.Now().Add(time.Second)) {
		t.Errorf("result time %v, want about %v", v.res.Time, before)
	}
	t.Logf("position %s at %v", text, v.res.Time)

	// The same records as the initial snapshot's, encoding included.
	for _, enc := range []string{"relaxed", "canonical", "bson"} {
		snapSettings := map[string]any{"snapshot": "initial", "encoding": enc}
		verifySettings := map[string]any{"encoding": enc}
		for k, val := range settings {
			snapSettings[k], verifySettings[k] = val, val
		}
		snap, _ := readSnapshot(t, open(t, snapSettings, nil, false))
		got := runVerify(t, verifySettings).recs
		if len(got) != len(snap) {
			t.Fatalf("%s: Verify emitted %d records, the initial snapshot %d", enc, len(got), len(snap))
		}
		for i := range snap {
			if err := sameRecord(snap[i], got[i]); err != nil {
				t.Fatalf("%s: record %d: %v", enc, i, err)
			}
		}
	}

	// Keys: those of existing documents of three BSON types; a deleted document; the number 5 as a
	// double (the query matches _id 5, whose key is not that one); a key that is not Extended JSON.
	only := runVerify(t, settings, `{"$numberInt":"5"}`, `{"$numberInt":"1500"}`, `"sku-1"`, fmt.Sprintf(`{"$oid":"%s"}`, oid.Hex()),
		`{"$numberInt":"2050"}`, `{"$numberDouble":"5.0"}`, `not json`, `{"$numberInt":"5"}`)
	want := []string{`snapshot shop.orders "sku-1"`, `snapshot shop.orders {"$numberInt":"1500"}`, `snapshot shop.orders {"$numberInt":"5"}`,
		fmt.Sprintf(`snapshot shop.orders {"$oid":"%s"}`, oid.Hex())}
	slices.Sort(want)
	if got := summaries(only.recs); !slices.Equal(got, want) {
		t.Fatalf("Verify with keys:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, r := range only.recs {
		if err := sameRecord(byKey[string(r.Key)], r); err != nil {
			t.Fatalf("Verify with keys: %v", err)
		}
	}
	if none := runVerify(t, settings, `{"$numberInt":"2050"}`); len(none.recs) != 0 || len(none.res.Position) == 0 {
		t.Fatalf("Verify of a deleted key: %d records, position %x", len(none.recs), []byte(none.res.Position))
	}

	// Through the plugin binary: settings as JSON, records and result over gRPC.
	c, err := protocol.Launch(protocol.LaunchConfig{Path: pluginBinary, Env: []string{"PATH=" + os.Getenv("PATH")}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	n := 0
	res, err := c.Source().Verify(ctx, protocol.VerifyRequest{Pipeline: "p", Settings: settings}, func(recs []record.Record) error {
		for _, r := range recs {
			if err := sameRecord(byKey[string(r.Key)], r); err != nil {
				return err
			}
		}
		n += len(recs)
		return nil
	})
	if err != nil || n != len(v.recs) || len(res.Position) == 0 || res.Time.IsZero() {
		t.Fatalf("Verify through the plugin binary: %d records, position %x, time %v, %v", n, []byte(res.Position), res.Time, err)
	}
}

// TestLiveVerifyCollections checks that Verify reads every collection collections and namespaces watch,
// and only those; that a key names documents in any of them; and that it writes nothing.
func TestLiveVerifyCollections(t *testing.T) {
	srv := services.StartMongo(t)
	ctx := context.Background()
	client := connect(t, srv.URI)
	insert := func(db, coll string, ids ...any) {
		t.Helper()
		var docs []any
		for _, id := range ids {
			docs = append(docs, bson.D{{Key: "_id", Value: id}, {Key: "in", Value: coll}})
		}
		if _, err := client.Database(db).Collection(coll).InsertMany(ctx, docs); err != nil {
			t.Fatal(err)
		}
	}
	insert("shop", "orders", 1, 2, 3)
	insert("shop", "carts", "c1", 1)
	insert("shop", "orders_tmp", 1)
	insert("shop", "users", 9)
	insert("billing", "invoices", 1)
	if _, err := client.Database("shop").Collection("orders").DeleteOne(ctx, bson.D{{Key: "_id", Value: 2}}); err != nil {
		t.Fatal(err)
	}
	base := map[string]any{"uri": srv.URI, "database": "shop", "max_await": "200ms"}
	with := func(k string, v any) map[string]any {
		m := map[string]any{k: v}
		for key, val := range base {
			m[key] = val
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		settings map[string]any
		keys     []string
		want     []string
	}{
		{"collections", with("collections", []any{"orders", "carts"}), nil, []string{
			`snapshot shop.carts "c1"`, `snapshot shop.carts {"$numberInt":"1"}`, `snapshot shop.orders {"$numberInt":"1"}`, `snapshot shop.orders {"$numberInt":"3"}`}},
		{"namespaces", with("namespaces", map[string]any{"exclude": []any{`_tmp$`, `^shop\.users$`}}), nil, []string{
			`snapshot shop.carts "c1"`, `snapshot shop.carts {"$numberInt":"1"}`, `snapshot shop.orders {"$numberInt":"1"}`, `snapshot shop.orders {"$numberInt":"3"}`}},
		{"keys in several collections", with("collections", []any{"orders", "carts"}), []string{`{"$numberInt":"1"}`, `"c1"`, `{"$numberInt":"9"}`}, []string{
			`snapshot shop.carts "c1"`, `snapshot shop.carts {"$numberInt":"1"}`, `snapshot shop.orders {"$numberInt":"1"}`}},
		{"database", base, []string{`{"$numberInt":"9"}`, `{"$numberInt":"3"}`}, []string{
			`snapshot shop.orders {"$numberInt":"3"}`, `snapshot shop.users {"$numberInt":"9"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := summaries(runVerify(t, tc.settings, tc.keys...).recs)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Verify:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
	// Nothing was written: the same collections, the same documents.
	names, err := client.Database("shop").ListCollectionNames(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"carts", "orders", "orders_tmp", "users"}) {
		t.Fatalf("collections of shop after Verify: %v", names)
	}
}

// TestVerifyErrors: settings Open refuses, Verify refuses too; a replay source has nothing to verify;
// an unreachable server is transient, a refused login permanent.
func TestVerifyErrors(t *testing.T) {
	refused := services.RefusedAddr(t)
	var v verified
	for _, settings := range []map[string]any{
		{"uri": "mongodb://x", "collection": "orders"},
		{"uri": "mongodb://x", "database": "shop", "collections": []any{"orders", "orders"}},
		{"replay_file": "testdata/events.jsonl"},
		{"database": "shop"},
	} {
		if _, err := verifyErr(settings, &v); !errors.Is(err, sdk.ErrInvalidSettings) {
			t.Errorf("Verify(%v) = %v, want ErrInvalidSettings", settings, err)
		}
	}
	_, err := verifyErr(map[string]any{"uri": "mongodb://" + refused + "/?serverSelectionTimeoutMS=300&connectTimeoutMS=300", "database": "shop"}, &v)
	if err == nil || !strings.Contains(err.Error(), "no MongoDB server could be used") || errors.Is(err, sdk.ErrPermanent) || errors.Is(err, sdk.ErrInvalidSettings) {
		t.Errorf("Verify of an unreachable server = %v, want a transient error saying so", err)
	}
	srv := services.StartMongo(t)
	_, err = verifyErr(map[string]any{"uri": strings.Replace(srv.URI, "mongodb://", "mongodb://sluice:wrong@", 1), "database": "shop"}, &v)
	if !errors.Is(err, sdk.ErrPermanent) {
		t.Errorf("Verify with refused credentials = %v, want a permanent error", err)
	}
	if len(v.recs) != 0 {
		t.Errorf("failed Verify calls emitted %d records", len(v.recs))
	}
}
