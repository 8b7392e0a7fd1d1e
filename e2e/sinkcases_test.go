package e2e

import (
	"testing"

	"github.com/outbox-relay/outbox-relay/sinks/nats"
	"github.com/outbox-relay/outbox-relay/sinks/nats/natstest"
	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

// sinkCases are the brokers TestSinks runs the relay against.
var sinkCases = []sinkCase{
	{"nats", startNATS},
	{"redis", startRedis},
}

// startNATS starts a NATS server with JetStream in the test process; the
// relay makes its stream at start. JetStream's duplicate window drops the
// relay's re-sends by their Nats-Msg-Id.
func startNATS(t *testing.T) *sinkBroker {
	s := natstest.Start(t)
	return &sinkBroker{
		env:     []string{"OUTBOX_RELAY_SINK=nats", "OUTBOX_RELAY_NATS_URL=" + s.URL},
		read:    func(t *testing.T) []sinktest.Message { return s.Read(t, nats.DefaultStream) },
		dest:    func(typ, key string) string { return "outbox." + typ + "." + key },
		stop:    s.Stop,
		start:   s.Start,
		dropped: "outbox_relay_nats_duplicates_total",
	}
}

// startRedis starts a redis-server with appendfsync always.
func startRedis(t *testing.T) *sinkBroker {
	s := redistest.Start(t)
	return &sinkBroker{
		env:   []string{"OUTBOX_RELAY_SINK=redis", "OUTBOX_RELAY_REDIS_URL=" + s.URL},
		read:  func(t *testing.T) []sinktest.Message { return s.Read(t, "outbox.*") },
		dest:  func(typ, _ string) string { return "outbox." + typ },
		stop:  s.Stop,
		start: s.Start,
	}
}
