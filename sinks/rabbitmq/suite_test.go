package rabbitmq_test

import (
	"context"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/sinks/rabbitmq"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

var (
	_ sinktest.Sink      = (*rabbitmq.Sink)(nil)
	_ relay.Sink         = (*rabbitmq.Sink)(nil)
	_ relay.DeadLetterer = (*rabbitmq.Sink)(nil)
	_ relay.Halter       = (*rabbitmq.Sink)(nil)
)

// TestConformance runs the sink conformance suite against the package's
// node: one exchange and routing key per aggregate type, read back from a
// durable queue bound with "#" before any event is published.
func TestConformance(t *testing.T) {
	node := rabbitmq.ServerFor(t)
	exchange, queue, dlq := rabbitmq.Unique("conformance"), rabbitmq.Unique("conformance-reader"), rabbitmq.Unique("conformance-dlq")
	sinktest.Run(t, sinktest.Broker{
		NewSink: func(t *testing.T) sinktest.Sink {
			s, err := rabbitmq.New(rabbitmq.Config{
				URL:             node.URL,
				Exchange:        exchange,
				RoutingKey:      "{aggregate_type}",
				DeadLetterQueue: dlq,
				Delivery:        rabbitmq.TestDelivery,
			}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := s.Setup(ctx); err != nil {
				t.Fatal(err)
			}
			node.Bind(t, exchange, queue)
			return s
		},
		Read:            func(t *testing.T) []sinktest.Message { return node.Read(t, queue) },
		ReadDeadLetters: func(t *testing.T) []sinktest.Message { return node.ReadDeadLetters(t, dlq) },
		Stop:            func(t *testing.T) { node.Stop(t) },
		Start:           func(t *testing.T) { node.Start(t) },
	})
}
