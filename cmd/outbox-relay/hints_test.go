package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

func TestWithHint(t *testing.T) {
	poison := fmt.Errorf("relay stopped: %w", &relay.PoisonError{Reason: "size", Err: errors.New("too large")})
	other := errors.New("connection refused")
	tests := []struct {
		name string
		err  error
		cfg  Config
		want string // "" means err unchanged
	}{
		{"poison on kafka", poison, Config{Sink: sinkKafka}, `raise --kafka-max-message-bytes if the broker takes larger messages, or restart once with --poison-policy=dlq to set it aside in the dead-letter topic "outbox-relay-dlq"`},
		{"poison on nats", poison, Config{Sink: sinkNATS}, `raise --nats-max-message-bytes if the broker takes larger messages, or restart once with --poison-policy=dlq to set it aside in the dead-letter subject "outbox-relay-dlq"`},
		{"poison of another reason", fmt.Errorf("relay stopped: %w", &relay.PoisonError{Reason: "headers", Err: errors.New("not an object")}), Config{Sink: sinkKafka}, `to go on, restart once with --poison-policy=dlq to set it aside in the dead-letter topic "outbox-relay-dlq"`},
		{"other error", other, Config{Sink: sinkKafka}, ""},
		{"invalidated slot", fmt.Errorf("stream: %w", cdc.ErrSlotInvalidated), Config{CDC: cdc.Config{Slot: "s1"}}, "SELECT pg_drop_replication_slot('s1')"},
		{"no table", fmt.Errorf("check: %w", cdc.ErrNoTable), Config{}, "run `outbox-relay setup` or set --table"},
		{"table not published", fmt.Errorf("check: %w", cdc.ErrNotPublished), Config{CDC: cdc.Config{Publication: "p", Table: schema.Table{Schema: "public", Name: "outbox"}}},
			"run `outbox-relay setup`, or ALTER PUBLICATION p ADD TABLE public.outbox; if the table was created again or left the publication since the relay last ran, republish what was written to it meanwhile with `outbox-relay replay --since`"},
		{"rows of an earlier shape", fmt.Errorf("stream: %w: the first at 0/1", cdc.ErrRowColumns), Config{CDC: cdc.Config{Slot: "s1"}},
			"move the slot past them (SELECT pg_replication_slot_advance('s1', pg_current_wal_lsn())), republish them with `outbox-relay replay --since` a time minutes before the first rename"},
		{"columns at start", fmt.Errorf("check: %w", cdc.ErrColumns), Config{}, ""},
		{"no DSN", cdc.ErrNoDSN, Config{}, "set --pg-dsn or OUTBOX_RELAY_PG_DSN"},
		{"already hinted", hinted{fmt.Errorf("slot gone; fix: this: %w", cdc.ErrSlotLost)}, Config{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Kafka.DeadLetterTopic, tt.cfg.NATS.DeadLetterSubject = "outbox-relay-dlq", "outbox-relay-dlq"
			got := withHint(tt.err, tt.cfg)
			if !errors.Is(got, tt.err) {
				t.Errorf("withHint(%v) = %v, which no longer wraps it", tt.err, got)
			}
			if tt.want == "" && got != tt.err {
				t.Errorf("withHint(%v) = %v, want it unchanged", tt.err, got)
			}
			if tt.want != "" && !strings.Contains(got.Error(), tt.want) {
				t.Errorf("withHint(%v) = %q, want it to contain %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestDeadLetterHints(t *testing.T) {
	tests := []struct {
		name string
		l    kafka.Letter
		want string
	}{
		{"no topic", kafka.Letter{ID: "e1", Refused: kafka.RefusedNoTopic, Refusal: "no legal topic"}, "no legal topic: fix the template (--topic)"},
		{"payload omitted", kafka.Letter{ID: "e1", Refused: kafka.RefusedPayloadOmitted, Refusal: "too large"}, "raise --kafka-max-message-bytes and the topic's max.message.bytes if it is too large, then run `outbox-relay replay --since e1 --until e1`"},
		{"no aggregate id", kafka.Letter{ID: "e2", Refused: kafka.RefusedNoAggregateID, Refusal: "no key"}, "no key: fix the row and run `outbox-relay replay --since e2 --until e2`"},
		{"message", kafka.Letter{ID: "e3", Refused: kafka.RefusedMessagePayloadOmitted, Refusal: "only the WAL held it"}, "only the WAL held it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := refusalText(&tt.l); !strings.Contains(got, tt.want) {
				t.Errorf("refusalText = %q, want it to contain %q", got, tt.want)
			}
		})
	}
	big := fmt.Errorf("produce: %w", kerr.MessageTooLarge)
	if got := replayHint(big); !errors.Is(got, kerr.MessageTooLarge) || !strings.Contains(got.Error(), "--kafka-max-message-bytes") {
		t.Errorf("replayHint(%v) = %v, want the size flag named", big, got)
	}
	other := errors.New("closed")
	if got := replayHint(other); got != other {
		t.Errorf("replayHint(%v) = %v, want it unchanged", other, got)
	}
}
