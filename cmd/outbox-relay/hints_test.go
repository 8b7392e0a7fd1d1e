package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/outbox-relay/outbox-relay/relay"
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
		{"poison on kafka", poison, Config{Sink: sinkKafka}, `--poison-policy=dlq to set it aside in the dead-letter topic "outbox-relay-dlq"`},
		{"poison on nats", poison, Config{Sink: sinkNATS}, `dead-letter subject "outbox-relay-dlq"`},
		{"other error", other, Config{Sink: sinkKafka}, ""},
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
