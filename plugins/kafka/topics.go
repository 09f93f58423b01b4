package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// How the sink looks topics up when auto_create_topics is false. A topic found missing is looked up
// again after confirmAfter (a topic created a moment ago may not have reached the metadata of every
// broker yet) before the sink says so; once confirmed, records routed to it are refused without asking
// the cluster for missingRecheck, then it is looked up again: a topic someone creates later is written
// to from then on.
var (
	confirmAfter   = []time.Duration{200 * time.Millisecond, 500 * time.Millisecond}
	missingRecheck = 10 * time.Second
)

// topicInfo is what the cluster's metadata says about a topic: err is nil when it exists
// (kerr.UnknownTopicOrPartition when it does not, kerr.TopicAuthorizationFailed when the sink may not
// describe it).
type topicInfo struct {
	err        error
	partitions int
}

// lookupTopics asks the cluster about topics in one metadata request, never asking brokers to create
// them.
func lookupTopics(ctx context.Context, cl *kgo.Client, topics []string) (map[string]topicInfo, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	// The client may keep dialling a broker that accepts no connection for its dial timeout (10s),
	// whatever ctx says: return when ctx ends.
	type answer struct {
		resp *kmsg.MetadataResponse
		err  error
	}
	done := make(chan answer, 1)
	go func() {
		resp, err := req.RequestWith(ctx, cl)
		done <- answer{resp, err}
	}()
	var resp *kmsg.MetadataResponse
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case a := <-done:
		if a.err != nil {
			return nil, a.err
		}
		resp = a.resp
	}
	out := make(map[string]topicInfo, len(topics))
	for _, t := range resp.Topics {
		if t.Topic != nil {
			out[*t.Topic] = topicInfo{err: kerr.ErrorForCode(t.ErrorCode), partitions: len(t.Partitions)}
		}
	}
	for _, t := range topics {
		if _, ok := out[t]; !ok { // a broker leaves out what it does not know
			out[t] = topicInfo{err: kerr.UnknownTopicOrPartition}
		}
	}
	return out, nil
}

// confirmMissing asks again about the topics infos reports missing and confirm accepts, after each
// pause of confirmAfter, and updates infos with the answers.
func confirmMissing(ctx context.Context, cl *kgo.Client, infos map[string]topicInfo, confirm func(string) bool) error {
	for _, wait := range confirmAfter {
		var again []string
		for t, i := range infos {
			if errors.Is(i.err, kerr.UnknownTopicOrPartition) && confirm(t) {
				again = append(again, t)
			}
		}
		if len(again) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		more, err := lookupTopics(ctx, cl, again)
		if err != nil {
			return err
		}
		maps.Copy(infos, more)
	}
	return nil
}

// topicCache remembers which topics exist and which were found missing, so that a Write asks the
// cluster only about a route it has not seen before. Known topics are forgotten when a write fails (one
// may have been deleted). Only the goroutine calling Open, Checkpoint and Write uses it.
type topicCache struct {
	known   map[string]bool
	missing map[string]time.Time // when it was last found missing
}

func (c *topicCache) isKnown(t string) bool { return c.known[t] }

func (c *topicCache) forgetKnown() { clear(c.known) }

// update records what a lookup found.
func (c *topicCache) update(infos map[string]topicInfo, now time.Time) {
	if c.known == nil {
		c.known, c.missing = map[string]bool{}, map[string]time.Time{}
	}
	for t, i := range infos {
		switch {
		case i.err == nil:
			c.known[t] = true
			delete(c.missing, t)
		case errors.Is(i.err, kerr.UnknownTopicOrPartition):
			c.missing[t] = now
		}
	}
}

// recentlyMissing reports whether t was found missing less than missingRecheck before now.
func (c *topicCache) recentlyMissing(t string, now time.Time) bool {
	at, ok := c.missing[t]
	return ok && now.Sub(at) < missingRecheck
}

// missingTopicError is the error for a topic the sink needs at Open that the cluster does not have.
func (c *Config) missingTopicError(topic string) error {
	return fmt.Errorf("kafka: topic %q does not exist on the cluster at %s and auto_create_topics is false; create it or set auto_create_topics: true",
		topic, c.brokerList())
}

// routeProblem says why records routed to a topic the lookup did not find cannot be written.
func (c *Config) routeProblem(topic string, info topicInfo) string {
	if errors.Is(info.err, kerr.TopicAuthorizationFailed) {
		return fmt.Sprintf("routed to topic %q, which %s is not authorized to describe on the cluster at %s", topic, c.principal(), c.brokerList())
	}
	return fmt.Sprintf("routed to topic %q, which does not exist on the cluster at %s, and auto_create_topics is false: create the topic or set auto_create_topics: true",
		topic, c.brokerList())
}
