package kafka_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// brokerLimit is the broker's message.max.bytes in the refusal tests: well
// below the Sink's own batch limit, as when --kafka-max-message-bytes is
// set above a topic's max.message.bytes.
const brokerLimit = 4096

// relayTxn publishes evs through a Relay on s as one transaction and drains
// it, returning the Relay's failure, if any.
func relayTxn(t *testing.T, s *kafka.Sink, policy relay.Policy, evs ...*schema.Event) error {
	t.Helper()
	ctx := testContext(t)
	r, err := relay.New(relay.Config{PoisonPolicy: policy}, s, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Begin(pglogrepl.LSN(0x2000000), time.Now())
	for _, ev := range evs {
		if err := r.Insert(ctx, ev); err != nil {
			break // the relay failed; Run reports it
		}
	}
	r.Commit(pglogrepl.LSN(0x2000100))
	if err := r.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	return r.Run(rctx)
}

// refusalEvents returns small events of several aggregates with one event
// larger than brokerLimit in their middle, all for the topic outbox.order.
func refusalEvents() (small []*schema.Event, big *schema.Event) {
	var evs []*schema.Event
	for seq := range 3 {
		for k := range 4 {
			evs = append(evs, event("order", "o-"+strconv.Itoa(k), seq))
		}
	}
	big = event("order", "big-1", 99)
	// Random bytes, so that compression cannot bring it under the limit.
	pad := make([]byte, 2*brokerLimit)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(pad)
	big.Payload = []byte(`{"pad":"` + base64.StdEncoding.EncodeToString(pad) + `"}`)
	return evs, big
}

// TestBatchRefusalDeadLettersOnlyTheGuilty: one event over the broker's
// message.max.bytes shares a batch with events of other aggregates (the
// producer lingers until the relay's Drain flushes, so that the batch holds
// them all however slowly the test runs). The broker refuses the whole batch; only the oversized event
// may reach the dead-letter topic, the others reach their topic with their
// payloads, in order, once each.
func TestBatchRefusalDeadLettersOnlyTheGuilty(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.SeedTopics(1, "outbox.order"), kfake.AllowAutoTopicCreation(),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(brokerLimit)}))
	reg := prometheus.NewRegistry()
	s := newSink(t, c, kafka.Config{Linger: time.Minute, AllowAutoTopicCreation: true}, reg)

	small, big := refusalEvents()
	evs := slices.Insert(slices.Clone(small), len(small)/2, big)
	if err := relayTxn(t, s, relay.PolicyDLQ, evs...); err != nil {
		t.Fatalf("relay failed: %v", err)
	}

	dlq, _ := consume(t, c, 1, kafka.DefaultDeadLetterTopic)
	if len(dlq) != 1 || header(dlq[0], kafka.HeaderID) != big.ID {
		var ids []string
		for _, r := range dlq {
			ids = append(ids, header(r, kafka.HeaderID))
		}
		t.Errorf("dead letters %v, want only the oversized event %s", ids, big.ID)
	}
	recs, hwm := consume(t, c, len(small), "outbox.order")
	if hwm != int64(len(small)) {
		t.Errorf("outbox.order holds %d records, want %d", hwm, len(small))
	}
	want, got := make(map[string][]string), make(map[string][]string)
	for _, ev := range small {
		want[ev.AggregateID] = append(want[ev.AggregateID], ev.ID+" "+string(ev.Payload))
	}
	for _, r := range recs {
		got[string(r.Key)] = append(got[string(r.Key)], header(r, kafka.HeaderID)+" "+string(r.Value))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records of outbox.order per key (-want +got):\n%s", diff)
	}
	// Every event of the refused batch is sent again alone: all of them
	// when the batch held them all, fewer when the client had sent a first
	// part before (seen under load), never none.
	if n := metricValue(t, reg, "outbox_relay_kafka_resent_alone_total", nil); n < 1 || n > float64(len(evs)) {
		t.Errorf("outbox_relay_kafka_resent_alone_total = %v, want between 1 and %d", n, len(evs))
	}
}

// TestBatchRefusalHaltSendsNothingAfter: under the halt policy, once the
// oversized event is judged, the events of its refused batch behind it are
// not sent, so no later position of its partition lands before it.
func TestBatchRefusalHaltSendsNothingAfter(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.SeedTopics(1, "outbox.order"), kfake.AllowAutoTopicCreation(),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(brokerLimit)}))
	s := newSink(t, c, kafka.Config{Linger: time.Minute, AllowAutoTopicCreation: true}, nil)

	small, big := refusalEvents()
	before, after := small[:4], small[4:]
	evs := append(append(slices.Clone(before), big), after...)
	err := relayTxn(t, s, relay.PolicyHalt, evs...)
	if err == nil || !strings.Contains(err.Error(), big.ID) {
		t.Fatalf("relay error %v, want a halt on %s", err, big.ID)
	}

	recs, hwm := consume(t, c, len(before), "outbox.order")
	var ids []string
	for _, r := range recs {
		ids = append(ids, header(r, kafka.HeaderID))
	}
	var wantIDs []string
	for _, ev := range before {
		wantIDs = append(wantIDs, ev.ID)
	}
	slices.Sort(ids)
	slices.Sort(wantIDs)
	if hwm != int64(len(before)) || !slices.Equal(ids, wantIDs) {
		t.Errorf("outbox.order holds %d records %v, want only the %d events before the refused one %v", hwm, ids, len(before), wantIDs)
	}
	// After the halt the Sink sends nothing new.
	a := newAcks(t)
	late := event("order", "o-0", 100)
	s.Publish(testContext(t), late, a.done(late))
	if errs := a.errors(); len(errs) != 1 || !errors.Is(errs[0], kafka.ErrHalted) {
		t.Errorf("Publish after the halt: errors %v, want one wrapping ErrHalted", errs)
	}
}

// TestTopicRefusalHolds: a topic the broker refuses (not authorized) is an
// outage: its events are held and retried, never failed or dead-lettered,
// and they arrive in order once the broker accepts them; other topics'
// events queue behind them.
func TestTopicRefusalHolds(t *testing.T) {
	t.Parallel()
	// Kafka 3.0's produce requests name topics; newer ones may send IDs only.
	c := newCluster(t, kfake.SeedTopics(2, "outbox.order", "outbox.secret"), kfake.MaxVersions(kversion.V3_0_0()))
	var refused atomic.Int32
	refuseUntil := time.Now().Add(2 * time.Second)
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		if time.Now().After(refuseUntil) || !slices.ContainsFunc(req.Topics, func(rt kmsg.ProduceRequestTopic) bool { return rt.Topic == "outbox.secret" }) {
			return nil, nil, false
		}
		refused.Add(1)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				if rt.Topic != "outbox.secret" {
					sp.ErrorCode = kerr.NotLeaderForPartition.Code // retried by the client
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	reg := prometheus.NewRegistry()
	s := newSink(t, c, kafka.Config{}, reg)
	ctx := testContext(t)
	a := newAcks(t)
	want := make(map[string][]string)
	for seq := range 20 {
		for _, typ := range []string{"secret", "order"} {
			ev := event(typ, typ+"-"+strconv.Itoa(seq%3), seq)
			want[ev.AggregateID] = append(want[ev.AggregateID], ev.ID)
			s.Publish(ctx, ev, a.done(ev))
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if errs := a.errors(); len(errs) > 0 {
		t.Fatalf("done errors %v, want none: a refused topic holds its events", errs)
	}
	if refused.Load() == 0 {
		t.Fatal("the broker refused no request: the test proves nothing")
	}
	if n := metricValue(t, reg, "outbox_relay_kafka_topic_refusals_total", map[string]string{"topic": "outbox.secret"}); n == 0 {
		t.Error("outbox_relay_kafka_topic_refusals_total{topic=outbox.secret} = 0, want refusals counted")
	}
	a.mu.Lock()
	if diff := cmp.Diff(want, a.order); diff != "" {
		t.Errorf("done order per key (-publish order +done order):\n%s", diff)
	}
	a.mu.Unlock()
	recs, hwm := consume(t, c, 40, "outbox.order", "outbox.secret")
	if hwm != 40 {
		t.Errorf("topics hold %d records, want 40", hwm)
	}
	slices.SortStableFunc(recs, func(x, y *kgo.Record) int { return int(x.Offset - y.Offset) })
	got := make(map[string][]string)
	for _, r := range recs {
		got[string(r.Key)] = append(got[string(r.Key)], header(r, kafka.HeaderID))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record order per key (-publish order +offset order):\n%s", diff)
	}
}

// TestDeadLettersKeepOrder: dead letters of one aggregate reach the
// dead-letter topic in the order DeadLetter was called.
func TestDeadLettersKeepOrder(t *testing.T) {
	t.Parallel()
	const n = 500
	c := newCluster(t, kfake.SeedTopics(3, kafka.DefaultDeadLetterTopic))
	s := newSink(t, c, kafka.Config{}, nil)
	ctx := testContext(t)
	a := newAcks(t)
	var want []string
	for seq := range n {
		ev := event("order", "o-1", seq)
		want = append(want, ev.ID)
		s.DeadLetter(ctx, ev, kafka.ReasonHeaders, fmt.Errorf("bad headers %d", seq), 1, a.done(ev))
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if errs := a.errors(); len(errs) > 0 {
		t.Fatalf("done errors: %v", errs)
	}
	recs, _ := consume(t, c, n, kafka.DefaultDeadLetterTopic)
	slices.SortStableFunc(recs, func(x, y *kgo.Record) int { return int(x.Offset - y.Offset) })
	var got []string
	for _, r := range recs {
		got = append(got, header(r, kafka.HeaderID))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dead letters of one aggregate (-DeadLetter order +offset order):\n%s", diff)
	}
}
