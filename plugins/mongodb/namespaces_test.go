package mongodb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/services"
)

func mustFilter(t *testing.T, cfg Config) *nsFilter {
	t.Helper()
	f, err := parseFilter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestFilterErrors: every combination that cannot work is refused as invalid settings, saying what and
// where.
func TestFilterErrors(t *testing.T) {
	inc := func(res ...any) map[string]any { return map[string]any{"include": res} }
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Collections: []string{"a"}}, "collections needs a database"},
		{Config{Database: "d", Collection: "c", Collections: []string{"a"}}, `collection "c" watches one collection and cannot be combined with collections or namespaces`},
		{Config{Database: "d", Collection: "c", Namespaces: inc("x")}, `collection "c" watches one collection`},
		{Config{Database: "d", Collections: []string{}}, "collections is empty"},
		{Config{Database: "d", Collections: []string{"a", ""}}, `collections[1] "" is empty`},
		{Config{Database: "d", Collections: []string{"a", "b", "a"}}, `collections[2] "a" is listed twice (also collections[0])`},
		{Config{Database: "d", Collections: []string{"system.profile"}}, `collections[0] "system.profile" is a system collection`},
		{Config{Database: "d", Collections: []string{"a$b"}}, `collections[0] "a$b" is not a collection name`},
		{Config{Database: "d", Namespaces: map[string]any{}}, "namespaces has neither include nor exclude"},
		{Config{Database: "d", Namespaces: map[string]any{"include": []any{}}}, "namespaces has neither include nor exclude"},
		{Config{Database: "d", Namespaces: map[string]any{"includes": []any{"x"}}}, "namespaces.includes is not a setting: namespaces takes include and exclude"},
		{Config{Database: "d", Namespaces: map[string]any{"include": "x"}}, "namespaces.include is a string, not a list of regular expressions"},
		{Config{Database: "d", Namespaces: inc("ok", 3.0)}, "namespaces.include[1] is a number, not a regular expression"},
		{Config{Database: "d", Namespaces: inc("a", "(b")}, `namespaces.include[1] "(b" is not a valid regular expression (RE2 syntax): missing closing ): ` + "`(b`"},
		{Config{Database: "d", Namespaces: map[string]any{"exclude": []any{`(?!x)`}}}, `namespaces.exclude[0] "(?!x)" is not a valid regular expression`},
		{Config{Database: "d", Namespaces: map[string]any{"exclude": []any{"^x", ".*"}}}, `namespaces.exclude[1] ".*" matches every namespace`},
		{Config{Namespaces: map[string]any{"exclude": []any{"^"}}}, `namespaces.exclude[0] "^" matches every namespace`},
		{Config{Database: "shop", Namespaces: inc(`^shop\.`, `^billing\.`)}, `namespaces.include[1] "^billing\\." can never match: namespaces are "db.coll" and the stream watches database shop only`},
		{Config{Database: "shop", Namespaces: inc(`\Ashopping`)}, `namespaces.include[0] "\\Ashopping" can never match`},
		{Config{Database: "shop", Collections: []string{"orders", "carts"}, Namespaces: inc(`orders`)}, `collections[1] "carts": shop.carts matches no expression of namespaces.include`},
		{Config{Database: "shop", Collections: []string{"orders", "carts"}, Namespaces: map[string]any{"exclude": []any{"x", `\.carts$`}}}, `collections[1] "carts": namespaces.exclude[1] "\\.carts$" excludes shop.carts`},
	} {
		_, err := parseFilter(c.cfg)
		if !errors.Is(err, sdk.ErrInvalidSettings) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want invalid settings with %q", c.cfg, err, c.want)
		}
	}
	// What can match is accepted: a prefix that the database extends or that extends it, a prefix that
	// is not literal, a case-insensitive one.
	for _, re := range []string{`^shop\.orders`, `^sh`, `^(shop|x)\.`, `(?i)^SHOP\.`, `orders$`} {
		if _, err := parseFilter(Config{Database: "shop", Namespaces: map[string]any{"include": []any{re}}}); err != nil {
			t.Errorf("include %s: %v", re, err)
		}
	}
	if f, err := parseFilter(Config{Database: "shop"}); f != nil || err != nil {
		t.Errorf("no collections and no namespaces: %v, %v; want no filter", f, err)
	}
}

// TestFilterMatch: which namespaces and events a filter lets through.
func TestFilterMatch(t *testing.T) {
	f := mustFilter(t, Config{Database: "shop", Namespaces: map[string]any{"exclude": []any{`\.archive$`}, "include": []any{`^shop\.(orders|carts)`}}})
	for n, want := range map[namespace]bool{
		{"shop", "orders"}: true, {"shop", "carts"}: true, {"shop", "orders.archive"}: false, // excluded
		{"shop", "users"}: false, {"other", "orders"}: false, {"shop", ""}: false,
	} {
		if got := f.match(n); got != want {
			t.Errorf("match(%s) = %v", n, got)
		}
	}
	c := mustFilter(t, Config{Database: "shop", Collections: []string{"orders", "carts"}, Namespaces: map[string]any{"exclude": []any{`^shop\.orders\.`}}})
	for n, want := range map[namespace]bool{
		{"shop", "orders"}: true, {"shop", "carts"}: true, {"shop", "orders.archive"}: false, {"shop", "users"}: false, {"other", "carts"}: false,
	} {
		if got := c.match(n); got != want {
			t.Errorf("collections match(%s) = %v", n, got)
		}
	}
	// Deployment-wide: include and exclude only.
	d := mustFilter(t, Config{Namespaces: map[string]any{"include": []any{`^(shop|billing)\.`}, "exclude": []any{`^billing\.tmp_`}}})
	for n, want := range map[namespace]bool{
		{"shop", "orders"}: true, {"billing", "invoices"}: true, {"billing", "tmp_1"}: false, {"crm", "orders"}: false, {"shopx", "a"}: false,
	} {
		if got := d.match(n); got != want {
			t.Errorf("deployment match(%s) = %v", n, got)
		}
	}
	ev := func(op, db, coll string) bson.Raw {
		doc := bson.D{{Key: "operationType", Value: op}}
		if db != "" {
			ns := bson.D{{Key: "db", Value: db}}
			if coll != "" {
				ns = append(ns, bson.E{Key: "coll", Value: coll})
			}
			doc = append(doc, bson.E{Key: "ns", Value: ns})
		}
		b, err := bson.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		ev   bson.Raw
		want bool
	}{
		{ev("insert", "shop", "orders"), true},
		{ev("insert", "shop", "users"), false},
		{ev("insert", "", ""), false}, // no ns: the server's $match drops it too
		{ev("drop", "shop", "carts"), true},
		{ev("dropDatabase", "shop", ""), true},
		{ev("invalidate", "", ""), true},
	} {
		if got := f.passes(c.ev); got != c.want {
			t.Errorf("passes(%s) = %v", c.ev, got)
		}
	}
}

// TestFilterStage: the $match stage the server runs, exactly.
func TestFilterStage(t *testing.T) {
	f := mustFilter(t, Config{Database: "shop", Collections: []string{"orders", "carts"},
		Namespaces: map[string]any{"include": []any{`^shop\.`}, "exclude": []any{`tmp`, `\.old$`}}})
	got, err := bson.MarshalExtJSON(f.stage(), false, false)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"$match":{"$or":[{"operationType":{"$in":["invalidate","dropDatabase"]}},{"$and":[` +
		`{"ns.coll":{"$exists":true}},` +
		`{"ns.coll":{"$in":["orders","carts"]}},` +
		`{"$expr":{"$or":[{"$regexMatch":{"input":{"$concat":["$ns.db",".","$ns.coll"]},"regex":"^shop\\."}}]}},` +
		`{"$expr":{"$not":[{"$or":[{"$regexMatch":{"input":{"$concat":["$ns.db",".","$ns.coll"]},"regex":"tmp"}},` +
		`{"$regexMatch":{"input":{"$concat":["$ns.db",".","$ns.coll"]},"regex":"\\.old$"}}]}]}}]}]}}`
	if string(got) != want {
		t.Fatalf("stage\n%s\nwant\n%s", got, want)
	}
	// The stage goes first, before the user's stages and $changeStreamSplitLargeEvent.
	s := &Source{filter: f, cfg: Config{Pipeline: []any{`{"$match": {"operationType": "insert"}}`}, Oversize: "split"}}
	p, err := s.pipeline()
	if err != nil {
		t.Fatal(err)
	}
	if len(p) != 3 || p[0][0].Key != "$match" || p[1][0].Key != "$match" || p[2][0].Key != "$changeStreamSplitLargeEvent" {
		t.Fatalf("pipeline %v", p)
	}
	if first, _ := bson.MarshalExtJSON(p[0], false, false); string(first) != want {
		t.Fatalf("first stage %s", first)
	}
}

// TestLiveCollectionsListing lists the collections an initial snapshot copies, on mongo-java-server:
// deployment-wide (its databases, local and config never; the test server has no admin database to write to), database-wide, filtered by
// collections and namespaces, in database then name order (the test server refuses to create system
// collections, so leaving those out is checked by TestFilterErrors only). (The test
// server opens no deployment-wide change stream, so a deployment-wide snapshot cannot run there end to
// end; the copy itself is the database-wide one of TestLiveSnapshotCollections.)
func TestLiveCollectionsListing(t *testing.T) {
	srv := services.StartMongo(t)
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(srv.URI))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Disconnect(ctx) }()
	for _, n := range []namespace{{"shop", "orders"}, {"shop", "carts"}, {"shop", "orders_tmp"}, {"billing", "invoices"},
		{"crm", "leads"}, {"local", "mine"}, {"config", "mine"}} {
		if _, err := client.Database(n.db).Collection(n.coll).InsertOne(ctx, bson.D{{Key: "x", Value: 1}}); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "billing.invoices crm.leads shop.carts shop.orders shop.orders_tmp"},
		{Config{Namespaces: map[string]any{"include": []any{`^(shop|billing)\.`}, "exclude": []any{`_tmp$`}}}, "billing.invoices shop.carts shop.orders"},
		{Config{Database: "shop"}, "shop.carts shop.orders shop.orders_tmp"},
		{Config{Database: "shop", Collections: []string{"orders_tmp", "orders", "gone"}}, "shop.orders shop.orders_tmp"},
		{Config{Database: "shop", Collection: "orders"}, "shop.orders"},
	} {
		s := &Source{cfg: c.cfg, client: client, filter: mustFilter(t, c.cfg)}
		list, err := s.collections(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, n := range list {
			got = append(got, n.String())
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%+v: %s, want %s", c.cfg, strings.Join(got, " "), c.want)
		}
	}
}

// TestLiveFilterStage runs the $match stage of a collections filter as an aggregation over documents
// shaped like change events, on mongo-java-server: the server lets through exactly the events passes
// accepts. (The test server has no $regexMatch, so the stage of namespaces is checked by TestFilterStage
// alone.)
func TestLiveFilterStage(t *testing.T) {
	srv := services.StartMongo(t)
	ctx := context.Background()
	client, err := mongo.Connect(options.Client().ApplyURI(srv.URI))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Disconnect(ctx) }()
	coll := client.Database("test").Collection("events")
	events := []bson.D{
		{{Key: "operationType", Value: "insert"}, {Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "orders"}}}},
		{{Key: "operationType", Value: "insert"}, {Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "users"}}}},
		{{Key: "operationType", Value: "drop"}, {Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}, {Key: "coll", Value: "carts"}}}},
		{{Key: "operationType", Value: "dropDatabase"}, {Key: "ns", Value: bson.D{{Key: "db", Value: "shop"}}}},
		{{Key: "operationType", Value: "invalidate"}},
		{{Key: "operationType", Value: "insert"}},
	}
	f := mustFilter(t, Config{Database: "shop", Collections: []string{"orders", "carts"}})
	var want []int
	for i, ev := range events {
		ev = append(bson.D{{Key: "_id", Value: i}}, ev...)
		if _, err := coll.InsertOne(ctx, ev); err != nil {
			t.Fatal(err)
		}
		raw, err := bson.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if f.passes(raw) {
			want = append(want, i)
		}
	}
	cur, err := coll.Aggregate(ctx, mongo.Pipeline{f.stage(), {{Key: "$sort", Value: bson.D{{Key: "_id", Value: 1}}}}})
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for cur.Next(ctx) {
		got = append(got, int(cur.Current.Lookup("_id").Int32()))
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(want) != "[0 2 3 4]" {
		t.Fatalf("the server let through events %v, passes %v; want [0 2 3 4]", got, want)
	}
}
