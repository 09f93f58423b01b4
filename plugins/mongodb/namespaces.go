package mongodb

import (
	"cmp"
	"context"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/sluicehq/sluice/sdk"
)

// namespace is a collection: its database and its name.
type namespace struct{ db, coll string }

func (n namespace) String() string { return n.db + "." + n.coll }

// compareNS orders namespaces by database, then collection: the order an initial snapshot copies them in.
func compareNS(a, b namespace) int {
	return cmp.Or(strings.Compare(a.db, b.db), strings.Compare(a.coll, b.coll))
}

// passThrough are the events a namespace filter lets through whatever their namespace: a dropped
// database (its ns has no collection) and the end of the stream (no ns at all).
var passThrough = []string{"invalidate", "dropDatabase"}

// skippedDatabases are the databases a deployment-wide stream never reports and a snapshot never copies.
var skippedDatabases = []string{"admin", "local", "config"}

// nsFilter selects the collections of a database- or deployment-wide stream: those in collections (when
// set), matching one include expression (when any) and no exclude expression. The server applies it as a
// $match stage in front of the pipeline; the source applies it itself to replayed events and to the
// collections an initial snapshot copies.
type nsFilter struct {
	db               string   // the watched database; "" for the whole deployment
	colls            []string // the collections setting, in the order written; nil: any collection
	include, exclude []*regexp.Regexp
}

// parseFilter reads collections and namespaces. It returns nil when neither is set: the stream is
// unfiltered. Every mistake is an sdk.ErrInvalidSettings error that names the setting at fault.
func parseFilter(cfg Config) (*nsFilter, error) {
	if cfg.Collections == nil && cfg.Namespaces == nil {
		return nil, nil
	}
	if cfg.Collection != "" {
		return nil, invalid("collection %q watches one collection and cannot be combined with collections or namespaces: list every collection in collections (or filter with namespaces) and remove collection", cfg.Collection)
	}
	f := &nsFilter{db: cfg.Database}
	if cfg.Collections != nil {
		if cfg.Database == "" {
			return nil, invalid("collections needs a database: set database (collections are names in it), or use namespaces to filter the whole deployment by \"db.coll\"")
		}
		if len(cfg.Collections) == 0 {
			return nil, invalid("collections is empty: list the collections to watch, or remove it to watch every collection of database %s", cfg.Database)
		}
		for i, c := range cfg.Collections {
			if err := collectionName(c); err != nil {
				return nil, invalid("collections[%d] %q %v", i, c, err)
			}
			if j := slices.Index(cfg.Collections[:i], c); j >= 0 {
				return nil, invalid("collections[%d] %q is listed twice (also collections[%d])", i, c, j)
			}
		}
		f.colls = cfg.Collections
	}
	if cfg.Namespaces != nil {
		if err := f.parseNamespaces(cfg.Namespaces); err != nil {
			return nil, err
		}
	}
	return f, f.check()
}

// collectionName says what is wrong with the name of a collection a change stream can watch.
func collectionName(c string) error {
	switch {
	case c == "":
		return fmt.Errorf("is empty")
	case strings.HasPrefix(c, "system."):
		return fmt.Errorf("is a system collection, which change streams do not report")
	case strings.ContainsAny(c, "$\x00"):
		return fmt.Errorf("is not a collection name: it holds $ or a NUL character")
	}
	return nil
}

// parseNamespaces reads namespaces: {include: [regex…], exclude: [regex…]}.
func (f *nsFilter) parseNamespaces(ns map[string]any) error {
	for k, v := range ns {
		var list *[]*regexp.Regexp
		switch k {
		case "include":
			list = &f.include
		case "exclude":
			list = &f.exclude
		default:
			return invalid("namespaces.%s is not a setting: namespaces takes include and exclude, lists of regular expressions matched against \"db.coll\"", k)
		}
		items, ok := v.([]any)
		if !ok {
			return invalid("namespaces.%s is a %s, not a list of regular expressions", k, jsonKind(v))
		}
		for i, item := range items {
			src, ok := item.(string)
			if !ok {
				return invalid("namespaces.%s[%d] is a %s, not a regular expression (a string)", k, i, jsonKind(item))
			}
			re, err := regexp.Compile(src)
			if err != nil {
				return invalid("namespaces.%s[%d] %q is not a valid regular expression (RE2 syntax): %v", k, i, src, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			}
			*list = append(*list, re)
		}
	}
	if len(f.include) == 0 && len(f.exclude) == 0 {
		return invalid("namespaces has neither include nor exclude: give regular expressions matched against \"db.coll\", or remove namespaces")
	}
	return nil
}

// check refuses a filter that can never let a change through.
func (f *nsFilter) check() error {
	for i, re := range f.exclude {
		// A pattern that matches the empty string and a string no namespace resembles matches them all.
		if re.MatchString("") && re.MatchString("\x00\n\x00") {
			return invalid("namespaces.exclude[%d] %q matches every namespace, so nothing would be watched", i, re.String())
		}
	}
	if f.db != "" {
		for i, re := range f.include {
			if p, ok := anchoredPrefix(re); ok && !strings.HasPrefix(p, f.db+".") && !strings.HasPrefix(f.db+".", p) {
				return invalid("namespaces.include[%d] %q can never match: namespaces are \"db.coll\" and the stream watches database %s only (it matches names starting with %q)", i, re.String(), f.db, p)
			}
		}
	}
	for i, c := range f.colls {
		ns := f.db + "." + c
		if len(f.include) > 0 && !matchAny(f.include, ns) {
			return invalid("collections[%d] %q: %s matches no expression of namespaces.include, so it would never be watched", i, c, ns)
		}
		if j := matchIndex(f.exclude, ns); j >= 0 {
			return invalid("collections[%d] %q: namespaces.exclude[%d] %q excludes %s, so it would never be watched", i, c, j, f.exclude[j].String(), ns)
		}
	}
	return nil
}

// anchoredPrefix returns the literal text that every match of re must start the string with, when re
// is anchored at the start (^ or \A) and goes on with case-sensitive literal text.
func anchoredPrefix(re *regexp.Regexp) (string, bool) {
	t, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return "", false
	}
	t = t.Simplify()
	if t.Op != syntax.OpConcat || len(t.Sub) < 2 || t.Sub[0].Op != syntax.OpBeginText ||
		t.Sub[1].Op != syntax.OpLiteral || t.Sub[1].Flags&syntax.FoldCase != 0 {
		return "", false
	}
	return string(t.Sub[1].Rune), true
}

func matchIndex(res []*regexp.Regexp, s string) int {
	return slices.IndexFunc(res, func(re *regexp.Regexp) bool { return re.MatchString(s) })
}

func matchAny(res []*regexp.Regexp, s string) bool { return matchIndex(res, s) >= 0 }

// match reports whether the collection db.coll is watched.
func (f *nsFilter) match(n namespace) bool {
	if f.db != "" && n.db != f.db || n.coll == "" {
		return false
	}
	if f.colls != nil && !slices.Contains(f.colls, n.coll) {
		return false
	}
	s := n.String()
	return (len(f.include) == 0 || matchAny(f.include, s)) && !matchAny(f.exclude, s)
}

// passes reports whether the filter lets a change event through, as the server's $match stage does.
func (f *nsFilter) passes(ev bson.Raw) bool {
	if op, _ := ev.Lookup("operationType").StringValueOK(); slices.Contains(passThrough, op) {
		return true
	}
	var n namespace
	n.db, _ = ev.Lookup("ns", "db").StringValueOK()
	n.coll, _ = ev.Lookup("ns", "coll").StringValueOK()
	return f.match(n)
}

// stage is the $match stage the source puts in front of the pipeline: the events of the watched
// collections, and those about no collection (invalidate, dropDatabase). Collection names are compared
// with $in; the regular expressions run on "db.coll" with $regexMatch (MongoDB 4.2+).
func (f *nsFilter) stage() bson.D {
	var conds bson.A
	if f.colls != nil {
		conds = append(conds, bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$in", Value: f.colls}}}})
	}
	ns := bson.D{{Key: "$concat", Value: bson.A{"$ns.db", ".", "$ns.coll"}}}
	regexes := func(res []*regexp.Regexp) bson.D {
		var or bson.A
		for _, re := range res {
			or = append(or, bson.D{{Key: "$regexMatch", Value: bson.D{{Key: "input", Value: ns}, {Key: "regex", Value: re.String()}}}})
		}
		return bson.D{{Key: "$or", Value: or}}
	}
	if len(f.include) > 0 {
		conds = append(conds, bson.D{{Key: "$expr", Value: regexes(f.include)}})
	}
	if len(f.exclude) > 0 {
		conds = append(conds, bson.D{{Key: "$expr", Value: bson.D{{Key: "$not", Value: bson.A{regexes(f.exclude)}}}}})
	}
	watched := bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$exists", Value: true}}}}
	if len(conds) > 0 {
		watched = bson.D{{Key: "$and", Value: append(bson.A{watched}, conds...)}}
	}
	return bson.D{{Key: "$match", Value: bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "operationType", Value: bson.D{{Key: "$in", Value: passThrough}}}},
		watched,
	}}}}}
}

// String describes the filter for logs and errors.
func (f *nsFilter) String() string {
	var parts []string
	if f.colls != nil {
		parts = append(parts, "collections "+strings.Join(f.colls, ", "))
	}
	for _, l := range []struct {
		name string
		res  []*regexp.Regexp
	}{{"include", f.include}, {"exclude", f.exclude}} {
		if len(l.res) > 0 {
			var srcs []string
			for _, re := range l.res {
				srcs = append(srcs, re.String())
			}
			parts = append(parts, "namespaces "+l.name+" "+strings.Join(srcs, " | "))
		}
	}
	return strings.Join(parts, "; ")
}

// collections lists the collections an initial snapshot copies, in copy order: the configured
// collection, or the collections of the watched database (or of every database but admin, local and
// config) that the filter lets through. Views, time series and system collections are left out:
// change streams do not report them.
func (s *Source) collections(ctx context.Context) ([]namespace, error) {
	if s.cfg.Collection != "" {
		return []namespace{{s.cfg.Database, s.cfg.Collection}}, nil
	}
	dbs := []string{s.cfg.Database}
	if s.cfg.Database == "" {
		names, err := s.client.ListDatabaseNames(ctx, bson.D{}, options.ListDatabases().SetAuthorizedDatabases(true))
		if err != nil {
			return nil, fmt.Errorf("mongodb: listing the databases to copy: %w", unreachable(ctx, err, s.selectTimeout))
		}
		dbs = slices.DeleteFunc(names, func(db string) bool { return slices.Contains(skippedDatabases, db) })
	}
	var out []namespace
	for _, db := range dbs {
		cur, err := s.client.Database(db).ListCollections(ctx, bson.D{},
			options.ListCollections().SetNameOnly(true).SetAuthorizedCollections(true))
		if err != nil {
			return nil, fmt.Errorf("mongodb: listing the collections of database %s to copy: %w", db, unreachable(ctx, err, s.selectTimeout))
		}
		for cur.Next(ctx) {
			name, _ := cur.Current.Lookup("name").StringValueOK()
			typ, ok := cur.Current.Lookup("type").StringValueOK()
			n := namespace{db, name}
			if ok && typ != "collection" || collectionName(name) != nil || s.filter != nil && !s.filter.match(n) {
				continue
			}
			out = append(out, n)
		}
		err = cur.Err()
		_ = cur.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("mongodb: listing the collections of database %s to copy: %w", db, err)
		}
	}
	slices.SortFunc(out, compareNS)
	return out, nil
}

// errPositionScope is the error for a stored mid-snapshot position whose collection the settings no
// longer watch.
func errPositionScope(n namespace) error {
	return fmt.Errorf("mongodb: the stored position is in the middle of the initial snapshot of %s, which the settings (collection, collections, namespaces) no longer watch: restore the settings until the snapshot is done, or run `sluice reset PIPELINE` to start again: %w", n, sdk.ErrInvalidSettings)
}
