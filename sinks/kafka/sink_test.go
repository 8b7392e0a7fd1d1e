package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	"go.uber.org/goleak"

	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var _ relay.Sink = (*kafka.Sink)(nil)

// testTimeout bounds every wait on the fake cluster, so a bug fails a test
// instead of hanging it.
const testTimeout = 30 * time.Second

func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// newSink returns a Sink on c's brokers, closed when the test ends.
func newSink(t *testing.T, c *kfake.Cluster, cfg kafka.Config, reg prometheus.Registerer) *kafka.Sink {
	t.Helper()
	cfg.Brokers = c.ListenAddrs()
	s, err := kafka.New(cfg, nil, reg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(s.Close)
	return s
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func event(aggregateType, aggregateID string, seq int) *schema.Event {
	return &schema.Event{
		ID:            fmt.Sprintf("%s-%s-%d", aggregateType, aggregateID, seq),
		AggregateType: aggregateType,
		AggregateID:   aggregateID,
		EventType:     "Changed",
		Payload:       []byte(`{"seq":` + strconv.Itoa(seq) + `}`),
		Position:      schema.Position{CommitLSN: pglogrepl.LSN(0x1000000 + seq), Index: uint32(seq % 3)},
	}
}

// acks records done calls and fails the test on a second call for one event.
type acks struct {
	t     *testing.T
	mu    sync.Mutex
	calls map[string]int
	order map[string][]string // by key: event IDs in done order
	errs  []error
}

func newAcks(t *testing.T) *acks {
	return &acks{t: t, calls: make(map[string]int), order: make(map[string][]string)}
}

func (a *acks) done(ev *schema.Event) func(error) {
	return func(err error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.calls[ev.ID]++
		if a.calls[ev.ID] > 1 {
			a.t.Errorf("done called %d times for event %s", a.calls[ev.ID], ev.ID)
		}
		a.order[ev.AggregateID] = append(a.order[ev.AggregateID], ev.ID)
		if err != nil {
			a.errs = append(a.errs, err)
		}
	}
}

func (a *acks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.calls)
}

func (a *acks) errors() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.errs)
}

// publishKeyed publishes perKey events for each of keys aggregates,
// interleaved, and returns each aggregate's event IDs in publish order.
func publishKeyed(ctx context.Context, s *kafka.Sink, a *acks, keys, perKey int) map[string][]string {
	want := make(map[string][]string)
	for seq := range perKey {
		for k := range keys {
			ev := event("order", "o-"+strconv.Itoa(k), seq)
			want[ev.AggregateID] = append(want[ev.AggregateID], ev.ID)
			s.Publish(ctx, ev, a.done(ev))
		}
	}
	return want
}

// consume reads n records from topics with an independent client. It also
// returns the sum of the partitions' high watermarks: more than n means the
// topics hold records that were not expected, such as duplicates.
func consume(t *testing.T, c *kfake.Cluster, n int, topics ...string) ([]*kgo.Record, int64) {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	defer cl.Close()
	ctx := testContext(t)
	var recs []*kgo.Record
	hwm := make(map[string]map[int32]int64)
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records from %v before the timeout", len(recs), n, topics)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Fatalf("consume %s/%d: %v", topic, p, err)
		})
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if hwm[p.Topic] == nil {
				hwm[p.Topic] = make(map[int32]int64)
			}
			hwm[p.Topic][p.Partition] = max(hwm[p.Topic][p.Partition], p.HighWatermark)
			recs = append(recs, p.Records...)
		})
	}
	var total int64
	for _, parts := range hwm {
		for _, w := range parts {
			total += w
		}
	}
	return recs, total
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// series counts the series named name in g, or all series if name is empty.
// (prometheus/testutil would do, but its diff dependency is not in go.sum.)
func series(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	n := 0
	for _, mf := range mfs {
		if name == "" || mf.GetName() == name {
			n += len(mf.GetMetric())
		}
	}
	return n
}

// metricValue returns a counter's value or a histogram's sample count from g.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue metrics
				}
			}
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestPublish(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3))
	reg := prometheus.NewRegistry()
	s := newSink(t, c, kafka.Config{AllowAutoTopicCreation: true}, reg)
	ctx := testContext(t)

	a := newAcks(t)
	var events []*schema.Event
	payloadBytes := make(map[string]int)
	published := time.Now().Truncate(time.Millisecond) // Kafka keeps milliseconds
	for i, typ := range []string{"order", "invoice", "order", "customer", "order", "invoice"} {
		ev := event(typ, typ+"-1", i)
		ev.CommitTime = published.Add(-time.Hour)
		if i%2 == 0 {
			ev.Headers = []byte(`{"trace_id": "t` + strconv.Itoa(i) + `", "attempt": 2, "id": "forged"}`)
		}
		events = append(events, ev)
		payloadBytes["outbox."+typ] += len(ev.Payload)
		s.Publish(ctx, ev, a.done(ev))
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	flushed := time.Now()
	if got := a.count(); got != len(events) {
		t.Fatalf("after Flush, done called for %d events, want %d", got, len(events))
	}
	if errs := a.errors(); len(errs) > 0 {
		t.Fatalf("done errors: %v", errs)
	}

	recs, hwm := consume(t, c, len(events), "outbox.order", "outbox.invoice", "outbox.customer")
	for _, r := range recs {
		// The time of publishing, not the commit an hour earlier: retention
		// counts from publishing.
		if r.Timestamp.Before(published) || r.Timestamp.After(flushed) {
			t.Errorf("record %s has timestamp %v, want the time of Publish, %v to %v", header(r, "id"), r.Timestamp, published, flushed)
		}
	}
	if hwm != int64(len(events)) {
		t.Errorf("topics hold %d records, want %d", hwm, len(events))
	}
	type kv struct{ Key, Value string }
	type rec struct {
		Topic, Key, Value string
		Headers           []kv
	}
	got := make(map[string]rec)
	for _, r := range recs {
		var hs []kv
		for _, h := range r.Headers {
			hs = append(hs, kv{h.Key, string(h.Value)})
		}
		got[header(r, "id")] = rec{Topic: r.Topic, Key: string(r.Key), Value: string(r.Value), Headers: hs}
	}
	for i, ev := range events {
		want := rec{Topic: "outbox." + ev.AggregateType, Key: ev.AggregateID, Value: string(ev.Payload), Headers: []kv{
			{"id", ev.ID}, {"event_type", ev.EventType}, {"aggregate_type", ev.AggregateType}, {"position", ev.Position.String()},
		}}
		if i%2 == 0 {
			want.Headers = append(want.Headers, kv{"trace_id", "t" + strconv.Itoa(i)}, kv{"attempt", "2"})
		}
		if diff := cmp.Diff(want, got[ev.ID]); diff != "" {
			t.Errorf("record for %+v = %+v, want %+v\ndiff (-want +got):\n%s", ev, got[ev.ID], want, diff)
		}
	}

	for topic, n := range map[string]float64{"outbox.order": 3, "outbox.invoice": 2, "outbox.customer": 1} {
		labels := map[string]string{"topic": topic}
		if got := metricValue(t, reg, "outbox_relay_events_published_total", labels); got != n {
			t.Errorf("outbox_relay_events_published_total{topic=%q} = %v, want %v", topic, got, n)
		}
		if got, want := metricValue(t, reg, "outbox_relay_published_bytes_total", labels), float64(payloadBytes[topic]); got != want {
			t.Errorf("outbox_relay_published_bytes_total{topic=%q} = %v, want %v", topic, got, want)
		}
	}
	if got := metricValue(t, reg, "outbox_relay_publish_duration_seconds", nil); got != float64(len(events)) {
		t.Errorf("outbox_relay_publish_duration_seconds count = %v, want %d", got, len(events))
	}
	if n := series(t, reg, "outbox_relay_kafka_produce_bytes_total"); n == 0 {
		t.Errorf("franz-go metrics: no outbox_relay_kafka_produce_bytes_total series, want some")
	}
}

func TestPublishNilRegistryAndLogger(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.SeedTopics(1, "outbox.order"))
	s := newSink(t, c, kafka.Config{}, nil)
	ctx := testContext(t)
	a := newAcks(t)
	ev := event("order", "o-1", 1)
	s.Publish(ctx, ev, a.done(ev))
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if a.count() != 1 || len(a.errors()) != 0 {
		t.Fatalf("done calls %d, errors %v; want 1 call, no error", a.count(), a.errors())
	}
}

func TestNewRegistryInUse(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	reg := prometheus.NewRegistry()
	cfg := kafka.Config{Brokers: c.ListenAddrs()}
	first, err := kafka.New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	if second, err := kafka.New(cfg, nil, reg); err == nil {
		second.Close()
		first.Close()
		t.Fatal("New with a registry another open Sink uses = nil error, want an error")
	}
	first.Close()
	again, err := kafka.New(cfg, nil, reg)
	if err != nil {
		t.Fatalf("New after the first Sink closed: %v", err)
	}
	again.Close()
}

func TestNewInvalidConfig(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := kafka.New(kafka.Config{Topic: "outbox.{table}"}, nil, reg); err == nil {
		t.Fatal("New with no brokers and a bad template = nil error, want an error")
	}
	if n := series(t, reg, ""); n != 0 {
		t.Errorf("failed New left %d series registered, want none", n)
	}
}

// TestPublishOrder publishes interleaved events for many keys and checks
// that done runs in Publish order per key, and that each key's records sit
// in one partition in Publish order.
func TestPublishOrder(t *testing.T) {
	t.Parallel()
	const (
		keys      = 40
		perKey    = 50
		topicName = "outbox.order"
	)
	c := newCluster(t, kfake.SeedTopics(8, topicName))
	s := newSink(t, c, kafka.Config{}, prometheus.NewRegistry())
	ctx := testContext(t)

	a := newAcks(t)
	want := publishKeyed(ctx, s, a, keys, perKey)
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if errs := a.errors(); len(errs) > 0 {
		t.Fatalf("done errors: %v", errs)
	}
	a.mu.Lock()
	if diff := cmp.Diff(want, a.order); diff != "" {
		t.Errorf("done order per key (-publish order +done order):\n%s", diff)
	}
	a.mu.Unlock()

	recs, hwm := consume(t, c, keys*perKey, topicName)
	if hwm != keys*perKey {
		t.Errorf("topic holds %d records, want %d", hwm, keys*perKey)
	}
	got := make(map[string][]string)
	partition := make(map[string]int32)
	slices.SortStableFunc(recs, func(x, y *kgo.Record) int { return int(x.Offset - y.Offset) })
	for _, r := range recs {
		key := string(r.Key)
		if p, ok := partition[key]; ok && p != r.Partition {
			t.Errorf("key %s in partitions %d and %d, want one", key, p, r.Partition)
		}
		partition[key] = r.Partition
		got[key] = append(got[key], header(r, "id"))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record order per key (-publish order +offset order):\n%s", diff)
	}
}

// javaMurmur2 is Kafka's Utils.murmur2, transcribed from the Java with its
// signed ints and unsigned shifts.
func javaMurmur2(data []byte) int32 {
	const (
		seed = int32(-1756908916) // 0x9747b28c
		m    = int32(0x5bd1e995)
		r    = 24
	)
	ushr := func(x int32, n uint) int32 { return int32(uint32(x) >> n) }
	length := len(data)
	h := seed ^ int32(length)
	for i := 0; i < length/4; i++ {
		i4 := i * 4
		k := int32(data[i4]) + int32(data[i4+1])<<8 + int32(data[i4+2])<<16 + int32(data[i4+3])<<24
		k *= m
		k ^= ushr(k, r)
		k *= m
		h *= m
		h ^= k
	}
	tail := length &^ 3
	switch length % 4 {
	case 3:
		h ^= int32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= int32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= int32(data[tail])
		h *= m
	}
	h ^= ushr(h, 13)
	h *= m
	h ^= ushr(h, 15)
	return h
}

// javaPartition is the Java client's partition for a keyed record:
// Utils.toPositive(Utils.murmur2(key)) % numPartitions.
func javaPartition(key []byte, partitions int) int32 {
	return (javaMurmur2(key) & 0x7fffffff) % int32(partitions)
}

func TestJavaMurmur2(t *testing.T) {
	// Kafka's UtilsTest.testMurmur2.
	tests := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
		"abc": 479470107,
	}
	for key, want := range tests {
		if got := javaMurmur2([]byte(key)); got != want {
			t.Errorf("javaMurmur2(%q) = %d, want %d", key, got, want)
		}
	}
}

// TestPartitionMatchesJava produces keyed records to topics of several
// partition counts and checks each landed where the Java client puts it.
func TestPartitionMatchesJava(t *testing.T) {
	t.Parallel()
	counts := []int{1, 2, 3, 7, 16, 100}
	var opts []kfake.Opt
	var topics []string
	for _, n := range counts {
		topic := "outbox.p" + strconv.Itoa(n)
		topics = append(topics, topic)
		opts = append(opts, kfake.SeedTopics(int32(n), topic))
	}
	c := newCluster(t, opts...)
	s := newSink(t, c, kafka.Config{}, nil)
	ctx := testContext(t)

	keys := []string{"21", "foobar", "a-little-bit-long-string", "a-little-bit-longer-string",
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", "abc", "a", "ab", "x", "ü", "日本語", "\x00\xff", "order-0"}
	for i := range 300 {
		keys = append(keys, fmt.Sprintf("order-%d", i*7919), strings.Repeat("k", i%37+1)+strconv.Itoa(i))
	}
	a := newAcks(t)
	for _, n := range counts {
		for i, key := range keys {
			ev := event("p"+strconv.Itoa(n), key, i)
			s.Publish(ctx, ev, a.done(ev))
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if errs := a.errors(); len(errs) > 0 {
		t.Fatalf("done errors: %v", errs)
	}
	recs, _ := consume(t, c, len(keys)*len(counts), topics...)
	seen := make(map[int]bool)
	for _, r := range recs {
		n, _ := strconv.Atoi(strings.TrimPrefix(r.Topic, "outbox.p"))
		if want := javaPartition(r.Key, n); r.Partition != want {
			t.Errorf("key %q in a %d-partition topic went to partition %d, want %d (Java)", r.Key, n, r.Partition, want)
		}
		seen[n] = true
	}
	if len(seen) != len(counts) {
		t.Errorf("records from %d topics, want %d", len(seen), len(counts))
	}
}

// TestRetriableProduceError fails the first produce requests with
// NOT_ENOUGH_REPLICAS: the records must still arrive once each, in order,
// with no error for the caller. Each retry waits for a metadata refresh,
// which franz-go spaces 5s apart, so this takes about 15s.
func TestRetriableProduceError(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("slow: franz-go paces partition retries by its 5s metadata minimum age")
	}
	const (
		failures  = 3
		keys      = 4
		perKey    = 30
		topicName = "outbox.order"
	)
	if kerr.NotEnoughReplicas.Code != 19 || !kerr.IsRetriable(kerr.NotEnoughReplicas) {
		t.Fatalf("kerr.NotEnoughReplicas = %d, retriable %v; want 19, retriable", kerr.NotEnoughReplicas.Code, kerr.IsRetriable(kerr.NotEnoughReplicas))
	}
	c := newCluster(t, kfake.SeedTopics(4, topicName))
	var failed, records atomic.Int32
	c.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		if failed.Load() >= failures {
			c.DropControl()
			return nil, nil, false
		}
		c.KeepControl()
		failed.Add(1)
		req := kreq.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				var b kmsg.RecordBatch
				if err := b.ReadFrom(rp.Records); err == nil {
					records.Add(b.NumRecords)
				}
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})

	s := newSink(t, c, kafka.Config{}, nil)
	ctx := testContext(t)
	a := newAcks(t)
	want := publishKeyed(ctx, s, a, keys, perKey)
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := failed.Load(); got != failures {
		t.Fatalf("failed %d produce requests, want %d", got, failures)
	}
	if records.Load() == 0 {
		t.Fatal("the failed produce requests carried no records")
	}
	if errs := a.errors(); len(errs) > 0 {
		t.Fatalf("done errors: %v", errs)
	}
	a.mu.Lock()
	if diff := cmp.Diff(want, a.order); diff != "" {
		t.Errorf("done order per key (-publish order +done order):\n%s", diff)
	}
	a.mu.Unlock()

	recs, hwm := consume(t, c, keys*perKey, topicName)
	if hwm != keys*perKey {
		t.Errorf("topic holds %d records, want %d: retries duplicated records", hwm, keys*perKey)
	}
	slices.SortStableFunc(recs, func(x, y *kgo.Record) int { return int(x.Offset - y.Offset) })
	got := make(map[string][]string)
	for _, r := range recs {
		got[string(r.Key)] = append(got[string(r.Key)], header(r, "id"))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record order per key (-publish order +offset order):\n%s", diff)
	}
}

// TestFlush lingers for a minute, so only Flush sends the records.
func TestFlush(t *testing.T) {
	t.Parallel()
	const n = 50
	c := newCluster(t, kfake.SeedTopics(2, "outbox.order"))
	s := newSink(t, c, kafka.Config{Linger: time.Minute}, nil)
	ctx := testContext(t)

	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush with nothing published: %v", err)
	}
	a := newAcks(t)
	for i := range n {
		ev := event("order", "o-"+strconv.Itoa(i%5), i)
		s.Publish(ctx, ev, a.done(ev))
	}
	if got := a.count(); got != 0 {
		t.Fatalf("before Flush, done called for %d events while lingering, want 0", got)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Flush(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("Flush(canceled context) = %v, want context.Canceled", err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if got := a.count(); got != n {
		t.Errorf("after Flush, done called for %d events, want %d", got, n)
	}
	if errs := a.errors(); len(errs) > 0 {
		t.Errorf("done errors: %v", errs)
	}
}

// TestPublishRejects checks that an event that cannot become a record
// fails at once and leaves nothing in Kafka.
func TestPublishRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		edit   func(ev *schema.Event)
		reason string
	}{
		{name: "no aggregate id", edit: func(ev *schema.Event) { ev.AggregateID = "" }, reason: kafka.ReasonAggregateID},
		{name: "illegal topic", edit: func(ev *schema.Event) { ev.AggregateType = "order/eu" }, reason: kafka.ReasonTopic},
		{name: "headers not an object", edit: func(ev *schema.Event) { ev.Headers = []byte(`["a"]`) }, reason: kafka.ReasonHeaders},
		{name: "headers invalid", edit: func(ev *schema.Event) { ev.Headers = []byte(`{"a":}`) }, reason: kafka.ReasonHeaders},
		{name: "too large", edit: func(ev *schema.Event) { ev.Payload = bytes.Repeat([]byte("x"), 1024) }, reason: kafka.ReasonSize},
	}
	c := newCluster(t, kfake.SeedTopics(1, "outbox.order"))
	reg := prometheus.NewRegistry()
	s := newSink(t, c, kafka.Config{MaxMessageBytes: 1024}, reg)
	ctx := testContext(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := event("order", "o-1", i)
			tt.edit(ev)
			var calls int
			var got error
			s.Publish(ctx, ev, func(err error) { calls++; got = err })
			if calls != 1 {
				t.Fatalf("Publish(%+v) returned after %d done calls, want 1", ev, calls)
			}
			var rerr *kafka.RecordError
			if !errors.As(got, &rerr) || rerr.Reason != tt.reason {
				t.Errorf("Publish(%+v) done(%v), want a *RecordError with reason %q", ev, got, tt.reason)
			}
		})
	}
	a := newAcks(t)
	ev := event("order", "o-1", 99)
	s.Publish(ctx, ev, a.done(ev))
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if errs := a.errors(); len(errs) > 0 {
		t.Fatalf("done errors for a good event: %v", errs)
	}
	recs, hwm := consume(t, c, 1, "outbox.order")
	if hwm != 1 || header(recs[0], "id") != ev.ID {
		t.Errorf("topic holds %d records, the first %s; want only %s", hwm, header(recs[0], "id"), ev.ID)
	}
	if got := metricValue(t, reg, "outbox_relay_events_published_total", map[string]string{"topic": "outbox.order"}); got != 1 {
		t.Errorf("outbox_relay_events_published_total = %v, want 1", got)
	}
}

func TestPublishAfterClose(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.SeedTopics(1, "outbox.order"))
	s, err := kafka.New(kafka.Config{Brokers: c.ListenAddrs()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	got := make(chan error, 1)
	s.Publish(testContext(t), event("order", "o-1", 1), func(err error) { got <- err })
	select {
	case err := <-got:
		if !errors.Is(err, kgo.ErrClientClosed) {
			t.Errorf("Publish after Close: done(%v), want kgo.ErrClientClosed", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Publish after Close: done not called")
	}
}

// TestCloseFailsBuffered lingers so records are still buffered at Close:
// each done must have run, with kgo.ErrClientClosed, when Close returns.
func TestCloseFailsBuffered(t *testing.T) {
	t.Parallel()
	const n = 20
	c := newCluster(t, kfake.SeedTopics(2, "outbox.order"))
	s, err := kafka.New(kafka.Config{Brokers: c.ListenAddrs(), Linger: time.Minute}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := newAcks(t)
	for i := range n {
		ev := event("order", "o-"+strconv.Itoa(i%3), i)
		s.Publish(testContext(t), ev, a.done(ev))
	}
	s.Close()
	if got := a.count(); got != n {
		t.Fatalf("after Close, done called for %d events, want %d", got, n)
	}
	for _, err := range a.errors() {
		if !errors.Is(err, kgo.ErrClientClosed) {
			t.Errorf("done(%v) after Close, want kgo.ErrClientClosed", err)
		}
	}
	if got := len(a.errors()); got != n {
		t.Errorf("%d of %d events failed at Close, want all", got, n)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	live := newSink(t, c, kafka.Config{}, nil)
	if err := live.Ping(testContext(t)); err != nil {
		t.Errorf("Ping(live cluster) = %v, want nil", err)
	}

	// A closed port refuses connections; a listener that never accepts
	// lets the dial succeed but never answers.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	for name, addr := range map[string]string{"refused": closedAddr, "silent": silent.Addr().String()} {
		t.Run(name, func(t *testing.T) {
			s, err := kafka.New(kafka.Config{Brokers: []string{addr}}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			err = s.Ping(ctx)
			if err == nil || !strings.Contains(err.Error(), addr) {
				t.Errorf("Ping(%s) = %v, want an error naming the broker", addr, err)
			}
		})
	}
}

func TestLogger(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	var buf syncBuffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := kafka.New(kafka.Config{Brokers: c.ListenAddrs()}, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(testContext(t)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if !strings.Contains(buf.String(), "component=kafka") {
		t.Errorf("franz-go logs = %q, want them scoped with component=kafka", buf.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

var _ relay.Halter = (*kafka.Sink)(nil)
