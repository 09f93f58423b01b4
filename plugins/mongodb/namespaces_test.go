package mongodb

import (
	"errors"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/sluicehq/sluice/sdk"
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
