package kafka

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/protocol"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
	"github.com/sluicehq/sluice/services"
)

// verifyRun calls Verify and returns its records (copied) by "topic key" (topic being the route, or "-"
// for the sink's own), its result and its log.
func verifyRun(t *testing.T, pipeline string, settings map[string]any, routes []string, keys ...string) (map[string]record.Record, sdk.VerifyResult, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var log sdktest.Output
	var ks [][]byte
	for _, k := range keys {
		ks = append(ks, []byte(k))
	}
	got := map[string]record.Record{}
	res, err := (&Sink{}).Verify(ctx, sdk.VerifyRequest{Pipeline: pipeline, Settings: sdk.Settings(settings), Routes: routes, Keys: ks,
		Logger: slog.New(slog.NewTextHandler(&log, nil))},
		func(recs []record.Record) error {
			if len(recs) > verifyBatch {
				t.Errorf("emit of %d records, more than %d", len(recs), verifyBatch)
			}
			for _, r := range recs {
				topic, ok := r.Meta.Get(record.MetaRoute)
				if !ok {
					topic = "-"
				}
				id := topic + " " + string(r.Key)
				if _, dup := got[id]; dup {
					t.Errorf("%s emitted twice", id)
				}
				r.Key, r.Payload, r.Meta = bytes.Clone(r.Key), bytes.Clone(r.Payload), slices.Clone(r.Meta)
				got[id] = r
			}
			return nil
		})
	return got, res, log.String(), err
}

// describe renders records as sorted "topic key op payload [metadata]" lines.
func describe(recs map[string]record.Record) string {
	var lines []string
	for id, r := range recs {
		lines = append(lines, fmt.Sprintf("%s %v %s %v", id, r.Op, r.Payload, r.Meta))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func rec(key, payload string, meta ...string) record.Record {
	r := record.Record{Op: record.OpUpdate, Key: []byte(key), Payload: []byte(payload), Encoding: record.EncodingJSON}
	if payload == "" {
		r.Op = record.OpDelete
	}
	for i := 0; i+1 < len(meta); i += 2 {
		r.Meta = r.Meta.Set(meta[i], meta[i+1])
	}
	return r
}

// TestVerify writes keys several times, tombstones, a routed topic, a message without a key and an
// aborted transaction, then checks that Verify gives the last committed record per topic and key, the
// tombstones as deletes, the headers as metadata and the message time; the checkpoint Checkpoint gives;
// only the keys asked for; a route topic that does not exist logged and empty; the topic setting naming
// no topic an invalid-settings error; and the same over the plugin binary.
func TestVerify(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		topic := newTopic(t, b.brokers, 2)
		routed := newTopic(t, b.brokers, 1)
		missing := routed + "-missing"
		settings := settingsFor(b, topic, map[string]any{"headers": []any{"mongodb.coll"}})
		s := openSink(t, "verify", settings, false)
		before := time.Now().Add(-time.Second)

		var first record.Batch
		for i := range 10 {
			first.Records = append(first.Records, rec(fmt.Sprintf("k%d", i), fmt.Sprintf(`{"v":1,"i":%d}`, i), "mongodb.coll", "orders", "other", "not a header"))
		}
		for i := range 3 {
			first.Records = append(first.Records, rec(fmt.Sprintf("r%d", i), fmt.Sprintf(`{"v":1,"r":%d}`, i), record.MetaRoute, routed))
		}
		first.Records = append(first.Records, rec("", `{"keyless":true}`))
		first.Position = record.Position("pos-1")
		second := record.Batch{Position: record.Position("pos-2")}
		for i := range 5 {
			second.Records = append(second.Records, rec(fmt.Sprintf("k%d", i), fmt.Sprintf(`{"v":2,"i":%d}`, i), "mongodb.coll", "orders"))
		}
		second.Records = append(second.Records, rec("k5", "", "mongodb.coll", "orders"), rec("r0", "", record.MetaRoute, routed))
		for _, batch := range []record.Batch{first, second} {
			if err := s.Write(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		// A transaction of another producer, aborted: read_committed never shows it.
		aborter, err := kgo.NewClient(kgo.SeedBrokers(b.brokers...), kgo.TransactionalID("verify-aborter-"+topic), kgo.DefaultProduceTopic(topic))
		if err != nil {
			t.Fatal(err)
		}
		defer aborter.Close()
		if err := aborter.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"k6", "k99"} {
			if err := aborter.ProduceSync(ctx, &kgo.Record{Key: []byte(k), Value: []byte("aborted")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := aborter.EndTransaction(ctx, kgo.TryAbort); err != nil {
			t.Fatal(err)
		}
		third := record.Batch{Records: []record.Record{rec("k7", `{"v":3}`, "mongodb.coll", "orders")}, Position: record.Position("pos-3")}
		if err := s.Write(ctx, third); err != nil {
			t.Fatal(err)
		}

		got, res, log, err := verifyRun(t, "verify", settings, []string{routed, missing, topic, "not a topic!"})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]record.Record{}
		add := func(topic string, r record.Record) {
			r.Op = map[record.Op]record.Op{record.OpUpdate: record.OpSnapshot, record.OpDelete: record.OpDelete}[r.Op]
			r.Meta = slices.DeleteFunc(slices.Clone(r.Meta), func(f record.Field) bool { return f.Key == "other" || f.Key == record.MetaRoute })
			if topic != "-" {
				r.Meta = r.Meta.Set(record.MetaRoute, topic)
			}
			want[topic+" "+string(r.Key)] = r
		}
		for _, batch := range []record.Batch{first, second, third} {
			for _, r := range batch.Records {
				if len(r.Key) == 0 {
					continue
				}
				if route, ok := r.Meta.Get(record.MetaRoute); ok {
					add(route, r)
				} else {
					add("-", r)
				}
			}
		}
		if describe(got) != describe(want) {
			t.Fatalf("Verify gave:\n%s\nwant:\n%s", describe(got), describe(want))
		}
		for id, r := range got {
			if r.Time.Before(before) || r.Time.After(time.Now()) || r.Time.After(res.Time) {
				t.Fatalf("%s: time %v, want the time it was written, at most the result's %v", id, r.Time, res.Time)
			}
		}
		if cp := checkpoint(t, s); !res.Position.Equal(cp) || !cp.Equal(third.Position) {
			t.Fatalf("Verify position %q, Checkpoint %q, want %q", res.Position, cp, third.Position)
		}
		if res.Destination != topic || res.Time.Before(before) {
			t.Fatalf("result destination %q time %v", res.Destination, res.Time)
		}
		for _, w := range []string{"topic=" + missing, "does not exist", `route="not a topic!"`, "messages=1"} {
			if !strings.Contains(log, w) {
				t.Errorf("the log does not say %q:\n%s", w, log)
			}
		}

		// Only some keys; without routes, only the topic setting's topic.
		only, res2, _, err := verifyRun(t, "verify", settings, []string{routed}, "k0", "k5", "r1", "k99")
		if err != nil {
			t.Fatal(err)
		}
		for id := range want {
			if id != "- k0" && id != "- k5" && id != routed+" r1" {
				delete(want, id)
			}
		}
		if describe(only) != describe(want) || !res2.Position.Equal(third.Position) {
			t.Fatalf("Verify of keys k0 k5 r1 k99 gave (position %q):\n%s\nwant:\n%s", res2.Position, describe(only), describe(want))
		}
		if own, _, _, err := verifyRun(t, "verify", settings, nil); err != nil || len(own) != 10 {
			t.Fatalf("Verify without routes: %d records, %v; want the 10 keys of the topic setting", len(own), err)
		}

		// Another pipeline id has no checkpoint; transactional: false none either.
		if _, res, _, err := verifyRun(t, "verify-other", settings, nil); err != nil || res.Position != nil {
			t.Fatalf("Verify of a pipeline that wrote nothing: position %q, %v", res.Position, err)
		}
		idem := settingsFor(b, topic, map[string]any{"transactional": false})
		if recs, res, _, err := verifyRun(t, "verify", idem, nil); err != nil || res.Position != nil || len(recs) != 10 {
			t.Fatalf("Verify with transactional: false: %d records, position %q, %v", len(recs), res.Position, err)
		}

		// The topic setting names no topic: invalid settings, unless the sink would create it.
		gone := settingsFor(b, topic+"-gone", nil)
		_, _, _, err = verifyRun(t, "verify", gone, nil)
		wantClass(t, err, sdk.ErrInvalidSettings, `topic "`+topic+`-gone"`, "does not exist")
		gone["auto_create_topics"] = true
		if recs, _, log, err := verifyRun(t, "verify", gone, nil); err != nil || len(recs) != 0 || !strings.Contains(log, "does not exist yet") {
			t.Fatalf("Verify of a topic not created yet: %d records, %v\n%s", len(recs), err, log)
		}

		// Over the plugin binary: a process started for Verify, the stage never opened.
		c, err := protocol.Launch(protocol.LaunchConfig{Path: pluginBinary, Env: []string{"PATH=" + os.Getenv("PATH")}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Kill()
		n := 0
		pres, err := c.Sink().Verify(ctx, protocol.VerifyRequest{Pipeline: "verify", Settings: settings, Routes: []string{routed}}, func(recs []record.Record) error {
			n += len(recs)
			return nil
		})
		if err != nil || n != len(got) || !pres.Position.Equal(third.Position) || pres.Destination != topic || !pres.Time.Equal(res.Time) {
			t.Fatalf("Verify through the plugin: %d records (want %d), position %q, destination %q, time %v (want %v): %v",
				n, len(got), pres.Position, pres.Destination, pres.Time, res.Time, err)
		}
	})
}

// TestVerifyBesideRunningSink runs Verify again and again while a transactional sink writes: the sink is
// not disturbed (no write fails, nothing is fenced), and each Verify holds at least what its position
// accounts for: every key's record is the one written at or after the last batch the checkpoint covers.
func TestVerifyBesideRunningSink(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		topic := newTopic(t, b.brokers, 3)
		settings := settingsFor(b, topic, nil)
		s := openSink(t, "beside", settings, false)
		const batches, perBatch, keys = 60, 25, 40
		// Record n (from 0) has key "key-(n % keys)", payload n; batch i's position is "b" + i.
		batch := func(i int) record.Batch {
			var bt record.Batch
			for n := i * perBatch; n < (i+1)*perBatch; n++ {
				bt.Records = append(bt.Records, record.Record{Op: record.OpInsert, Key: []byte(fmt.Sprintf("key-%d", n%keys)), Payload: []byte(strconv.Itoa(n))})
			}
			bt.Position = record.Position(fmt.Sprintf("b%03d", i))
			return bt
		}
		// lastAt is the payload of key's last record written by batch i included.
		lastAt := func(key, i int) int {
			last := (i+1)*perBatch - 1
			return last - ((last-key)%keys+keys)%keys
		}
		done := make(chan error, 1)
		go func() {
			for i := range batches {
				if err := s.Write(ctx, batch(i)); err != nil {
					done <- fmt.Errorf("write %d beside Verify: %w", i, err)
					return
				}
				time.Sleep(10 * time.Millisecond) // a pipeline's pace, so that the Verify calls overlap many writes

			}
			done <- nil
		}()
		verifies := 0
		for finished := false; !finished; {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				finished = true
			default:
			}
			got, res, _, err := verifyRun(t, "beside", settings, nil)
			if err != nil {
				t.Fatal(err)
			}
			verifies++
			if res.Position == nil {
				continue // before the first commit
			}
			i, err := strconv.Atoi(strings.TrimPrefix(string(res.Position), "b"))
			if err != nil {
				t.Fatalf("position %q", res.Position)
			}
			for k := range keys {
				if lastAt(k, i) < 0 {
					continue // not written yet by batch i
				}
				r, ok := got["- key-"+strconv.Itoa(k)]
				n, _ := strconv.Atoi(string(r.Payload))
				if !ok || n < lastAt(k, i) {
					t.Fatalf("Verify at %q: key-%d holds %q (present %v), want at least %d", res.Position, k, r.Payload, ok, lastAt(k, i))
				}
			}
		}
		t.Logf("%d Verify calls while the sink wrote %d batches", verifies, batches)
		got, res, _, err := verifyRun(t, "beside", settings, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("b%03d", batches-1); string(res.Position) != want || string(checkpoint(t, s)) != want {
			t.Fatalf("final Verify position %q, want %q", res.Position, want)
		}
		for k := range keys {
			if r := got["- key-"+strconv.Itoa(k)]; string(r.Payload) != strconv.Itoa(lastAt(k, batches-1)) {
				t.Fatalf("key-%d holds %q, want %d", k, r.Payload, lastAt(k, batches-1))
			}
		}
		// The sink still writes: it was never fenced.
		if err := s.Write(ctx, batch(batches)); err != nil {
			t.Fatalf("a write after the Verify calls: %v", err)
		}
	})
}

// TestVerifyErrors: brokers that are down are a transient error naming them; a topic or a progress topic
// the user may not describe, a permanent one saying so; a wrong password, permanent (real Kafka only).
func TestVerifyErrors(t *testing.T) {
	t.Run("brokers down", func(t *testing.T) {
		addr := services.RefusedAddr(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := (&Sink{}).Verify(ctx, sdk.VerifyRequest{Pipeline: "down", Settings: sdk.Settings(settingsFor(backend{brokers: []string{addr}}, "orders", nil))},
			func([]record.Record) error { return nil })
		wantClass(t, err, nil, addr)
	})
	eachAuthCluster(t, func(t *testing.T, a authCluster) {
		n := topicSeq.Add(1)
		ok := fmt.Sprintf("ok-%d-%d", time.Now().UnixNano()%1e9, n)
		createTopic(t, ok, 1, a.admin...)
		progress := ok + "-progress"
		createTopic(t, progress, 1, a.admin...)
		_, _, _, err := verifyRun(t, "ok-1", a.settings("denied-"+ok, progress, nil), nil)
		wantClass(t, err, sdk.ErrPermanent, fmt.Sprintf("kafka: not authorized: user %q may not read or describe", a.user), "TOPIC_AUTHORIZATION_FAILED")
		_, _, _, err = verifyRun(t, "ok-1", a.settings(ok, "denied-"+progress, nil), nil)
		wantClass(t, err, sdk.ErrPermanent, "progress topic", "TOPIC_AUTHORIZATION_FAILED")
		if recs, res, _, err := verifyRun(t, "ok-1", a.settings(ok, progress, nil), nil); err != nil || len(recs) != 0 || res.Position != nil {
			t.Fatalf("Verify with permitted names: %d records, position %q, %v", len(recs), res.Position, err)
		}
		if strings.HasSuffix(t.Name(), "/kafka") { // kfake closes the connection instead of answering SASL_AUTHENTICATION_FAILED
			wrong := a.settings(ok, progress, nil)
			wrong["sasl_password"] = "wrong"
			_, _, _, err = verifyRun(t, "ok-1", wrong, nil)
			wantClass(t, err, sdk.ErrPermanent, "authentication failed")
		}
	})
}

// TestVerifyWaitsForOpenTransaction starts Verify while the sink's transaction is open (its records and
// its progress message produced, not committed): Verify waits for it to end, and then holds its records
// and reports its position; it never returns the checkpoint before.
func TestVerifyWaitsForOpenTransaction(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		topic := newTopic(t, b.brokers, 2)
		settings := settingsFor(b, topic, nil)
		s := openSink(t, "open-txn", settings, false)
		if err := s.Write(ctx, record.Batch{Records: []record.Record{rec("a", `1`), rec("b", `1`)}, Position: record.Position("pos-1")}); err != nil {
			t.Fatal(err)
		}
		type result struct {
			recs     map[string]record.Record
			res      sdk.VerifyResult
			err      error
			returned time.Time
		}
		done := make(chan result, 1)
		var released time.Time
		s.beforeCommit = func() {
			go func() {
				recs, res, _, err := verifyRun(t, "open-txn", settings, nil)
				done <- result{recs, res, err, time.Now()}
			}()
			time.Sleep(2 * time.Second) // Verify is reading meanwhile
			released = time.Now()
		}
		if err := s.Write(ctx, record.Batch{Records: []record.Record{rec("a", `2`), rec("c", `2`)}, Position: record.Position("pos-2")}); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.returned.Before(released) {
			t.Fatalf("Verify returned %v before the transaction was committed", released.Sub(r.returned))
		}
		if string(r.res.Position) != "pos-2" || string(r.recs["- a"].Payload) != "2" || string(r.recs["- b"].Payload) != "1" || string(r.recs["- c"].Payload) != "2" {
			t.Fatalf("Verify beside the open transaction: position %q, records:\n%s", r.res.Position, describe(r.recs))
		}
	})
}
