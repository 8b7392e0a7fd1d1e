package delivery_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// BenchmarkPublish measures the Sink's own cost per event: mapping, the
// lanes, the senders and the done calls, with a broker that acknowledges
// every message at once, over 1,000 aggregates.
func BenchmarkPublish(b *testing.B) {
	br := newBroker()
	br.send = func(context.Context, []msg, []error) {}
	s, err := delivery.New[msg](delivery.Config{Name: "bench"}, br, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	events := make([]*schema.Event, 1000)
	for i := range events {
		events[i] = event(fmt.Sprint(i), fmt.Sprintf("agg-%d", i))
	}
	done := func(err error) {
		if err != nil {
			b.Error(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		s.Publish(context.Background(), events[i%len(events)], done)
		if i%1000 == 999 {
			if err := s.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := s.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
}
