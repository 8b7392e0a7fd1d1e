package kafka_test

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

var (
	_ sinktest.Sink      = (*kafka.Sink)(nil)
	_ relay.DeadLetterer = (*kafka.Sink)(nil)
	_ relay.Transactor   = (*kafka.Sink)(nil)
)

// TestConformance runs the sink conformance suite against kfake. kfake
// keeps its records in memory and cannot restart, so in the outage it
// refuses every produce request with a retriable error, as a broker short
// of in-sync replicas does, and closes the connection of a ping (a
// metadata request for no topic), until it is back.
func TestConformance(t *testing.T) {
	c := newCluster(t, kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	var down atomic.Bool
	c.ControlKey(int16(kmsg.Metadata), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if down.Load() && len(kreq.(*kmsg.MetadataRequest).Topics) == 0 {
			return nil, errors.New("broker down"), true // a ping
		}
		return nil, nil, false
	})
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		req := kreq.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	events := newTopicReader(t, c, `^outbox\..*`)
	letters := newTopicReader(t, c, "^"+kafka.DefaultDeadLetterTopic+"$")
	sinktest.Run(t, sinktest.Broker{
		NewSink: func(t *testing.T) sinktest.Sink {
			return newSink(t, c, kafka.Config{AllowAutoTopicCreation: true}, nil)
		},
		Read:            events.read,
		ReadDeadLetters: letters.read,
		Stop:            func(*testing.T) { down.Store(true) },
		Start:           func(*testing.T) { down.Store(false) },
	})
}

// topicReader consumes every topic matching a pattern from the start, in
// the background, and keeps the records per topic and partition.
type topicReader struct {
	mu   sync.Mutex
	recs map[string][]*kgo.Record // per topic, by partition then offset
}

func newTopicReader(t *testing.T, c *kfake.Cluster, pattern string) *topicReader {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumeRegex(),
		kgo.ConsumeTopics(pattern),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(10*time.Millisecond),
		kgo.MetadataMaxAge(100*time.Millisecond),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	r := &topicReader{recs: make(map[string][]*kgo.Record)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			r.mu.Lock()
			fs.EachRecord(func(rec *kgo.Record) { r.recs[rec.Topic] = append(r.recs[rec.Topic], rec) })
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		cl.Close()
	})
	return r
}

// read returns the records so far as sinktest messages, each topic's in
// partition order.
func (r *topicReader) read(*testing.T) []sinktest.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []sinktest.Message
	for topic, recs := range r.recs {
		recs = slices.Clone(recs)
		slices.SortStableFunc(recs, func(a, b *kgo.Record) int {
			return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
		})
		for _, rec := range recs {
			m := sinktest.Message{Destination: topic, Key: string(rec.Key), Payload: rec.Value}
			for _, h := range rec.Headers {
				m.Headers = append(m.Headers, delivery.Header{Key: h.Key, Value: h.Value})
			}
			out = append(out, m)
		}
	}
	return out
}
