package kafka_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// headers makes record headers of key, value pairs.
func headers(kv ...string) []kgo.RecordHeader {
	var hs []kgo.RecordHeader
	for i := 0; i < len(kv); i += 2 {
		hs = append(hs, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return hs
}

// relayLetter is a relay dead letter of event e-1 at dead/2/7, with extra
// headers after the relay's; an extra header of a name it has already
// replaces its value.
func relayLetter(extra ...string) *kgo.Record {
	r := relayBase()
	for i := 0; i < len(extra); i += 2 {
		found := false
		for j := range r.Headers {
			if r.Headers[j].Key == extra[i] {
				r.Headers[j].Value, found = []byte(extra[i+1]), true
			}
		}
		if !found {
			r.Headers = append(r.Headers, headers(extra[i], extra[i+1])...)
		}
	}
	return r
}

func relayBase() *kgo.Record {
	return &kgo.Record{Topic: "dead", Partition: 2, Offset: 7, Key: []byte("o-1"), Value: []byte(`{"n":1}`),
		Timestamp: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC),
		Headers: headers(
			"id", "e-1", "event_type", "created", "aggregate_type", "order", "position", "000000000000016b00000003",
			"dlq_reason", "rejected", "dlq_error", "policy violation", "dlq_attempts", "2",
			"dlq_source_lsn", "0/16B", "dlq_time", "2026-05-01T12:00:01.5Z", "dlq_table", "public.outbox")}
}

func TestParseLetter(t *testing.T) {
	defaultTopic, err := kafka.TopicNamer("")
	if err != nil {
		t.Fatal(err)
	}
	byEventType, err := kafka.TopicNamer("fixed.{event_type}")
	if err != nil {
		t.Fatal(err)
	}
	eventHeaders := []string{"id", "e-1", "event_type", "created", "aggregate_type", "order", "position", "000000000000016b00000003"}
	from := []string{kafka.HeaderDLQReplayedFrom, "dead/2/7"}
	type want struct {
		kind, topic, refusal string // refusal: a part of it; empty for none
		refused              kafka.Refused
		headers              []string
		at                   time.Time
		attempts             int
	}
	relayAt := time.Date(2026, 5, 1, 12, 0, 1, 5e8, time.UTC)
	tests := []struct {
		name  string
		rec   *kgo.Record
		topic string // the topic template; empty for the default
		want  want
	}{
		{"relay with dlq_topic", relayLetter("dlq_topic", "outbox.order", "dlq_headers", `{"trace": "t1", "n": 1, "id": "forged", "nil": null}`), "",
			want{kind: kafka.KindRelay, topic: "outbox.order", at: relayAt, attempts: 2,
				headers: append(append(eventHeaders[:8:8], "trace", "t1", "n", "1", "nil", ""), from...)}},
		{"dlq_topic wins over the template", relayLetter("dlq_topic", "outbox.order"), "fixed.{event_type}",
			want{kind: kafka.KindRelay, topic: "outbox.order", at: relayAt, attempts: 2, headers: append(eventHeaders[:8:8], from...)}},
		{"older relay letter: topic from the template", relayLetter(), "",
			want{kind: kafka.KindRelay, topic: "outbox.order", at: relayAt, attempts: 2, headers: append(eventHeaders[:8:8], from...)}},
		{"illegal topic under a changed template", func() *kgo.Record {
			r := relayLetter("dlq_reason", "topic")
			r.Headers[2].Value = []byte("bad type!")
			return r
		}(), "fixed.{event_type}",
			want{kind: kafka.KindRelay, topic: "fixed.created", at: relayAt, attempts: 2,
				headers: append([]string{"id", "e-1", "event_type", "created", "aggregate_type", "bad type!", "position", "000000000000016b00000003"}, from...)}},
		{"illegal topic under the same template", func() *kgo.Record {
			r := relayLetter()
			r.Headers[2].Value = []byte("bad type!")
			return r
		}(), "", want{kind: kafka.KindRelay, refusal: "names no legal topic", refused: kafka.RefusedNoTopic, at: relayAt, attempts: 2}},
		{"payload omitted", relayLetter("dlq_topic", "outbox.order", "dlq_payload_omitted", "true"), "",
			want{kind: kafka.KindRelay, topic: "outbox.order", refusal: "the row is in the outbox table", refused: kafka.RefusedPayloadOmitted, at: relayAt, attempts: 2}},
		{"payload of a message omitted", relayLetter("dlq_message_prefix", "outbox", "dlq_payload_omitted", "true"), "",
			want{kind: kafka.KindRelay, topic: "outbox.order", refusal: "only the WAL held", refused: kafka.RefusedMessagePayloadOmitted, at: relayAt, attempts: 2}},
		{"no aggregate ID", func() *kgo.Record {
			r := relayLetter("dlq_reason", "aggregate_id", "dlq_topic", "outbox.order")
			r.Key = nil
			return r
		}(), "", want{kind: kafka.KindRelay, topic: "outbox.order", refusal: "no aggregate ID", refused: kafka.RefusedNoAggregateID, at: relayAt, attempts: 2}},
		{"headers not an object", relayLetter("dlq_reason", "headers", "dlq_headers", `[1]`), "",
			want{kind: kafka.KindRelay, topic: "outbox.order", refusal: "not the JSON object", refused: kafka.RefusedHeaders, at: relayAt, attempts: 2}},
		{"inbox", &kgo.Record{Topic: "dead", Partition: 2, Offset: 7, Key: []byte("k"), Value: []byte("v"),
			Headers: headers("id", "e-9", "traceparent", "00-ab", "dlq_replayed_from", "dead/0/1",
				"inbox_dlq_topic", "orders", "inbox_dlq_partition", "3", "inbox_dlq_offset", "41",
				"inbox_dlq_consumer", "billing", "inbox_dlq_group", "billing-g", "inbox_dlq_error", "boom",
				"inbox_dlq_attempts", "5", "inbox_dlq_first_attempt", "2026-05-01T11:00:00Z",
				"inbox_dlq_last_attempt", "2026-05-01T11:05:00Z", "inbox_dlq_record_time", "2026-05-01T10:59:59Z")}, "",
			want{kind: kafka.KindInbox, topic: "orders", at: time.Date(2026, 5, 1, 11, 5, 0, 0, time.UTC), attempts: 5,
				headers: append([]string{"id", "e-9", "traceparent", "00-ab"}, from...)}},
		{"inbox without a topic", &kgo.Record{Topic: "dead", Partition: 2, Offset: 7, Headers: headers("inbox_dlq_topic", "")}, "",
			want{kind: kafka.KindInbox, refusal: "not a topic name"}},
		{"neither kind", &kgo.Record{Topic: "dead", Partition: 2, Offset: 7, Headers: headers("id", "x")}, "",
			want{kind: kafka.KindUnknown, refusal: "no dead letter of the relay or of an inbox consumer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			namer := defaultTopic
			if tt.topic != "" {
				namer = byEventType
			}
			l := kafka.ParseLetter(tt.rec, namer)
			if l.Kind != tt.want.kind || l.Original.Topic != tt.want.topic {
				t.Errorf("ParseLetter: kind %q, original topic %q; want %q, %q", l.Kind, l.Original.Topic, tt.want.kind, tt.want.topic)
			}
			if tt.want.refusal == "" && l.Refusal != "" || !strings.Contains(l.Refusal, tt.want.refusal) {
				t.Errorf("ParseLetter: refusal %q, want one containing %q", l.Refusal, tt.want.refusal)
			}
			if tt.want.refused != "" && l.Refused != tt.want.refused {
				t.Errorf("ParseLetter: refused %q, want %q", l.Refused, tt.want.refused)
			}
			if tt.want.refusal != "" {
				return
			}
			if string(l.Original.Key) != string(tt.rec.Key) || string(l.Original.Value) != string(tt.rec.Value) {
				t.Errorf("original key %q value %q, want the dead letter's %q, %q", l.Original.Key, l.Original.Value, tt.rec.Key, tt.rec.Value)
			}
			var got []string
			for _, h := range l.Original.Headers {
				got = append(got, h.Key, string(h.Value))
			}
			if diff := cmp.Diff(tt.want.headers, got); diff != "" {
				t.Errorf("original headers (-want +got):\n%s", diff)
			}
			if !l.Time.Equal(tt.want.at) || l.Attempts != tt.want.attempts {
				t.Errorf("time %s, attempts %d; want %s, %d", l.Time, l.Attempts, tt.want.at, tt.want.attempts)
			}
			if l.Where() != "2/7" {
				t.Errorf("Where() = %q, want 2/7", l.Where())
			}
		})
	}
}
