package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// writer makes changes in a MongoDB collection — inserts of new documents, updates and deletes of live
// ones — at a steady rate, and remembers, per document, the sequence of versions its change events must
// arrive in: "0" for the insert, "1", "2", … for each update, "del" for the delete. Every document holds
// its own key in k and its version in v, and updates $set both, so that a change event carries them even
// on a server that reports updates without the document's _id (mongo-java-server).
type writer struct {
	coll    *mongo.Collection
	rng     *rand.Rand
	total   int
	rate    float64
	written atomic.Int64
	retried atomic.Int64 // writes whose first attempt failed (the server stalled)

	// versions is, per key, the versions in the order they were written. Read it only after run returned.
	versions map[string][]string
	live     []string
	next     int
}

func newWriter(coll *mongo.Collection, seed uint64, total int, rate float64) *writer {
	return &writer{coll: coll, rng: rand.New(rand.NewPCG(seed, 0x6d6f6e676f)), total: total, rate: rate,
		versions: map[string][]string{}}
}

// run makes total changes, one every 1/rate seconds (as fast as the server answers when it falls behind).
// Half are inserts, a third updates, the rest deletes, each picked at random.
func (w *writer) run(ctx context.Context) error {
	start := time.Now()
	for i := range w.total {
		if d := time.Until(start.Add(time.Duration(float64(i) / w.rate * float64(time.Second)))); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
		if err := w.change(ctx); err != nil {
			return fmt.Errorf("mongodb writer, change %d of %d: %w", i+1, w.total, err)
		}
		w.written.Add(1)
	}
	return nil
}

// change makes one change and records the version it wrote.
func (w *writer) change(ctx context.Context) error {
	r := w.rng.Float64()
	switch {
	case len(w.live) == 0 || r < 0.5:
		k := fmt.Sprintf("m%07d", w.next)
		w.next++
		err := w.write(ctx, k, "inserting", func(ctx context.Context) error {
			_, err := w.coll.InsertOne(ctx, bson.D{{Key: "_id", Value: k}, {Key: "k", Value: k}, {Key: "v", Value: 0}})
			if mongo.IsDuplicateKeyError(err) {
				return nil // a retry of an insert that had happened
			}
			return err
		}, func(doc bson.Raw, found bool) bool { return found })
		if err != nil {
			return err
		}
		w.versions[k] = []string{"0"}
		w.live = append(w.live, k)
	case r < 0.85:
		k := w.live[w.rng.IntN(len(w.live))]
		v := len(w.versions[k])
		err := w.write(ctx, k, fmt.Sprintf("updating to v %d", v), func(ctx context.Context) error {
			_, err := w.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: k}},
				bson.D{{Key: "$set", Value: bson.D{{Key: "k", Value: k}, {Key: "v", Value: v}}}})
			return err
		}, func(doc bson.Raw, found bool) bool {
			got, ok := doc.Lookup("v").AsInt64OK()
			return found && ok && got == int64(v)
		})
		if err != nil {
			return err
		}
		w.versions[k] = append(w.versions[k], fmt.Sprint(v))
	default:
		i := w.rng.IntN(len(w.live))
		k := w.live[i]
		err := w.write(ctx, k, "deleting", func(ctx context.Context) error {
			_, err := w.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: k}})
			return err
		}, func(doc bson.Raw, found bool) bool { return !found })
		if err != nil {
			return err
		}
		w.versions[k] = append(w.versions[k], "del")
		w.live[i] = w.live[len(w.live)-1]
		w.live = w.live[:len(w.live)-1]
	}
	return nil
}

// writeTimeout bounds one attempt at a write, or at reading a document back; writeGiveUp bounds a change.
// mongo-java-server holds a lock while it scans its oplog for a change stream opened after an old
// position, so every (re)start of the mongodb source stalls writes for a while; under load, for more than
// a minute.
const (
	writeTimeout = time.Minute
	writeGiveUp  = 10 * time.Minute
)

// write does one change to the document k. When an attempt fails (usually a timeout) it cannot tell
// whether the change was made, so it reads the document back and asks applied; it tries again only if the
// change was not made.
func (w *writer) write(ctx context.Context, k, what string, do func(context.Context) error, applied func(doc bson.Raw, found bool) bool) error {
	deadline := time.Now().Add(writeGiveUp)
	for {
		actx, cancel := context.WithTimeout(ctx, writeTimeout)
		err := do(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.retried.Add(1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		for {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s %s: no answer for %s (last: %w)", what, k, writeGiveUp, err)
			}
			rctx, cancel := context.WithTimeout(ctx, writeTimeout)
			doc, rerr := w.coll.FindOne(rctx, bson.D{{Key: "_id", Value: k}}).Raw()
			cancel()
			if rerr == nil || errors.Is(rerr, mongo.ErrNoDocuments) {
				if applied(doc, rerr == nil) {
					return nil
				}
				break // not made: try again
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
}
