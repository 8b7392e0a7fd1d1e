package kafka_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/outbox-relay/outbox-relay/internal/content"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

func TestPoison(t *testing.T) {
	s, err := kafka.New(kafka.Config{Brokers: []string{"127.0.0.1:1"}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		name   string
		err    error
		reason string
		poison bool
	}{
		{"record error", &kafka.RecordError{Reason: kafka.ReasonHeaders, Err: errors.New("x")}, kafka.ReasonHeaders, true},
		{"wrapped record error", fmt.Errorf("publish: %w", &kafka.RecordError{Reason: kafka.ReasonTopic, Err: errors.New("x")}), kafka.ReasonTopic, true},
		{"too large", fmt.Errorf("produce: %w", kerr.MessageTooLarge), kafka.ReasonSize, true},
		// A refused topic is an outage the Sink holds through, never poison.
		{"unknown topic", kerr.UnknownTopicOrPartition, "", false},
		{"unauthorized topic", kerr.TopicAuthorizationFailed, "", false},
		{"policy violation", kerr.PolicyViolation, kafka.ReasonRejected, true},
		{"invalid record", kerr.InvalidRecord, kafka.ReasonRejected, true},
		{"retriable", kerr.NotLeaderForPartition, "", false},
		{"other", errors.New("client closed"), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, ok := s.Poison(tt.err)
			if reason != tt.reason || ok != tt.poison {
				t.Errorf("Poison(%v) = %q, %v; want %q, %v", tt.err, reason, ok, tt.reason, tt.poison)
			}
		})
	}
}

func TestDeadLetter(t *testing.T) {
	c := newCluster(t, kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1))
	s := newSink(t, c, kafka.Config{AllowAutoTopicCreation: true, DeadLetterTopic: "dead"}, nil)
	ctx := testContext(t)
	a := newAcks(t)
	ev := event("order", "o-1", 7)
	ev.Headers = []byte(`{"trace": "t1"}`)
	ev.Table = "public.outbox"
	big := event("order", "o-2", 8)
	cause := &kafka.RecordError{Reason: kafka.ReasonSize, Err: errors.New("too big")}
	s.DeadLetter(ctx, ev, kafka.ReasonTopic, errors.New("illegal topic"), 1, a.done(ev))
	s.DeadLetter(ctx, big, kafka.ReasonSize, cause, 1, a.done(big))
	illegal := event("bad type!", "o-3", 9)
	s.DeadLetter(ctx, illegal, kafka.ReasonTopic, errors.New("illegal topic"), 1, a.done(illegal))
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if errs := a.errors(); len(errs) > 0 {
		t.Fatalf("dead letters failed: %v", errs)
	}
	recs, _ := consume(t, c, 3, "dead")
	byID := map[string]int{}
	for i, r := range recs {
		byID[header(r, kafka.HeaderID)] = i
	}
	r := recs[byID[ev.ID]]
	if string(r.Key) != "o-1" || string(r.Value) != string(ev.Payload) {
		t.Errorf("dead letter key %q value %q, want the event's", r.Key, r.Value)
	}
	for k, want := range map[string]string{
		kafka.HeaderDLQReason:    kafka.ReasonTopic,
		kafka.HeaderDLQError:     "illegal topic",
		kafka.HeaderDLQAttempts:  "1",
		kafka.HeaderDLQSourceLSN: ev.Position.CommitLSN.String(),
		kafka.HeaderDLQTable:     "public.outbox",
		kafka.HeaderDLQHeaders:   `{"trace": "t1"}`,
		kafka.HeaderPosition:     ev.Position.String(),
		kafka.HeaderEventType:    ev.EventType,
		kafka.HeaderDLQTopic:     "outbox.order",
	} {
		if got := header(r, k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if ts, err := time.Parse(time.RFC3339Nano, header(r, kafka.HeaderDLQTime)); err != nil || time.Since(ts) > time.Minute {
		t.Errorf("header %s = %q, want a recent RFC 3339 time", kafka.HeaderDLQTime, header(r, kafka.HeaderDLQTime))
	}
	r = recs[byID[big.ID]]
	if r.Value != nil || header(r, kafka.HeaderDLQPayloadOmitted) != "true" {
		t.Errorf("oversized dead letter value %q omitted=%q, want no value and the omitted header", r.Value, header(r, kafka.HeaderDLQPayloadOmitted))
	}
	if got := header(r, kafka.HeaderDLQTopic); got != "outbox.order" {
		t.Errorf("oversized dead letter: header %s = %q, want outbox.order", kafka.HeaderDLQTopic, got)
	}
	for _, h := range recs[byID[illegal.ID]].Headers {
		if h.Key == kafka.HeaderDLQTopic {
			t.Errorf("dead letter of an illegal topic name carries %s %q, want none", h.Key, h.Value)
		}
	}
}

// TestBrokerRefusalIsPoison has the broker refuse one topic's records for
// good: done gets an error Poison recognises, other topics flow.
func TestBrokerRefusalIsPoison(t *testing.T) {
	// Kafka 3.0's produce requests name topics; newer ones may send IDs only.
	c := newCluster(t, kfake.SeedTopics(1, "outbox.order", "outbox.huge"), kfake.MaxVersions(kversion.V3_0_0()))
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		refuse := false
		for _, rt := range req.Topics {
			refuse = refuse || rt.Topic == "outbox.huge"
		}
		if !refuse {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				if rt.Topic == "outbox.huge" {
					sp.ErrorCode = kerr.MessageTooLarge.Code
				} else {
					sp.ErrorCode = kerr.NotLeaderForPartition.Code
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	s := newSink(t, c, kafka.Config{}, nil)
	ctx := testContext(t)
	a := newAcks(t)
	good, bad := event("order", "o-1", 1), event("huge", "h-1", 2)
	s.Publish(ctx, bad, a.done(bad))
	s.Publish(ctx, good, a.done(good))
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	errs := a.errors()
	if len(errs) != 1 {
		t.Fatalf("errors %v, want one for the refused record", errs)
	}
	if reason, ok := s.Poison(errs[0]); !ok || reason != kafka.ReasonSize {
		t.Errorf("Poison(%v) = %q, %v; want %q, true", errs[0], reason, ok, kafka.ReasonSize)
	}
}

// TestDeadLetterMessage sets aside events from malformed logical decoding
// messages: the content is the value, the prefix a header, and content too
// large for a batch is left out rather than the event not set aside.
func TestDeadLetterMessage(t *testing.T) {
	c := newCluster(t, kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(1))
	s := newSink(t, c, kafka.Config{AllowAutoTopicCreation: true, DeadLetterTopic: "dead"}, nil)
	ctx := testContext(t)
	a := newAcks(t)
	var small, huge schema.Event
	_ = content.Decode([]byte(`{"id":"0190f1e2-7c1a-7d2b-9e3f-4a5b6c7d8e9f","aggregate_id":"o-1","payload":{}}`), &small)
	_ = content.Decode([]byte(`{"id":"`+strings.Repeat("x", 2<<20)+`"}`), &huge)
	for _, ev := range []*schema.Event{&small, &huge} {
		if ev.Malformed == nil {
			t.Fatalf("DecodeContent left %q well-formed", ev.Payload[:40])
		}
		ev.Prefix = "outbox"
		s.DeadLetter(ctx, ev, kafka.ReasonContent, ev.Malformed, 1, a.done(ev))
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if errs := a.errors(); len(errs) > 0 {
		t.Fatalf("dead letters failed: %v", errs)
	}
	recs, _ := consume(t, c, 2, "dead")
	for i, want := range []struct {
		key, value, omitted string
	}{{"o-1", string(small.Payload), ""}, {"", "", "true"}} {
		r := recs[i]
		if string(r.Key) != want.key || string(r.Value) != want.value || header(r, kafka.HeaderDLQPayloadOmitted) != want.omitted {
			t.Errorf("dead letter %d: key %q, %d value bytes, omitted %q; want key %q, %d bytes, omitted %q",
				i, r.Key, len(r.Value), header(r, kafka.HeaderDLQPayloadOmitted), want.key, len(want.value), want.omitted)
		}
		if header(r, kafka.HeaderDLQMessagePrefix) != "outbox" || header(r, kafka.HeaderDLQReason) != kafka.ReasonContent || header(r, kafka.HeaderDLQTable) != "" {
			t.Errorf("dead letter %d: prefix %q reason %q table %q, want outbox, content and none", i,
				header(r, kafka.HeaderDLQMessagePrefix), header(r, kafka.HeaderDLQReason), header(r, kafka.HeaderDLQTable))
		}
	}
}
