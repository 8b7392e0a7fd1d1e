package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

const txnEventTopic = "outbox.order"

func newTxnSinkCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	return newCluster(t, kfake.SeedTopics(3, txnEventTopic, kafka.DefaultDeadLetterTopic))
}

// newTxnSink returns a Sink in exactly-once mode with txid on c, with the
// checkpoint topic created.
func newTxnSink(ctx context.Context, t *testing.T, c *kfake.Cluster, txid string, reg prometheus.Registerer) *kafka.Sink {
	t.Helper()
	s := newSink(t, c, kafka.Config{TransactionalID: txid, CheckpointKey: "slot_" + txid}, reg)
	if err := s.CreateCheckpointTopic(ctx); err != nil {
		t.Fatalf("CreateCheckpointTopic: %v", err)
	}
	return s
}

// committedRecords reads every committed record of topics from the start
// until it has n, and fails the test if more than n arrive within a short
// while after.
func committedRecords(ctx context.Context, t *testing.T, c *kfake.Cluster, n int, topics ...string) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeTopics(topics...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d committed records of %v, want %d: %v", len(got), topics, n, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, r) })
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	cl.PollFetches(short).EachRecord(func(r *kgo.Record) { got = append(got, r) })
	if len(got) != n {
		t.Errorf("read %d committed records of %v, want %d", len(got), topics, n)
	}
	return got
}

// publishTxn publishes evs in one Kafka transaction and commits it with
// fence, failing the test on any error; it returns CommitTxn's error.
func publishTxn(ctx context.Context, t *testing.T, s *kafka.Sink, a *acks, fence pglogrepl.LSN, evs ...*schema.Event) error {
	t.Helper()
	if err := s.BeginTxn(); err != nil {
		t.Fatalf("BeginTxn: %v", err)
	}
	for _, ev := range evs {
		s.Publish(ctx, ev, a.done(ev))
	}
	return s.CommitTxn(ctx, fence)
}

func TestTxnCommitsEventsWithFence(t *testing.T) {
	ctx := testContext(t)
	c := newTxnSinkCluster(t)
	reg := prometheus.NewRegistry()
	s := newTxnSink(ctx, t, c, "eos", reg)

	if fence, err := s.ReadFence(ctx); err != nil || fence != 0 {
		t.Fatalf("ReadFence before any commit = %s, %v; want 0/0 and no error", fence, err)
	}
	a := newAcks(t)
	var evs []*schema.Event
	for i := range 100 {
		evs = append(evs, event("order", fmt.Sprint(i%7), i))
	}
	fences := []pglogrepl.LSN{0x16B3748, 0x16B4000, 0x1_0000_0010}
	for i, part := range [][]*schema.Event{evs[:34], evs[34:67], evs[67:]} {
		if err := publishTxn(ctx, t, s, a, fences[i], part...); err != nil {
			t.Fatalf("CommitTxn(%s) of transaction %d: %v", fences[i], i, err)
		}
	}
	if errs := a.errors(); len(errs) != 0 || a.count() != 100 {
		t.Fatalf("done called for %d events with errors %v; want 100 without", a.count(), errs)
	}

	got := committedRecords(ctx, t, c, 100, txnEventTopic)
	seen := make(map[string]int)
	for _, r := range got {
		seen[string(r.Headers[0].Value)]++
	}
	for _, ev := range evs {
		if seen[ev.ID] != 1 {
			t.Errorf("event %s read %d times, want once", ev.ID, seen[ev.ID])
		}
	}
	if fence, err := s.ReadFence(ctx); err != nil || fence != fences[2] {
		t.Errorf("ReadFence = %s, %v; want %s", fence, err, fences[2])
	}
	// The checkpoint topic holds one fence per transaction, all keyed by
	// the slot.
	for _, r := range committedRecords(ctx, t, c, 3, kafka.CheckpointTopic) {
		if string(r.Key) != "slot_eos" {
			t.Errorf("fence record key %q, want slot_eos", r.Key)
		}
	}
	if got := metricValue(t, reg, "outbox_relay_kafka_transactions_committed_total", nil); got != 3 {
		t.Errorf("transactions committed = %v, want 3", got)
	}
	if got := gaugeValue(t, reg, "outbox_relay_kafka_fence_lsn"); got != float64(fences[2]) {
		t.Errorf("fence gauge = %v, want %v", got, float64(fences[2]))
	}
}

func TestTxnDeadLetterInTransaction(t *testing.T) {
	ctx := testContext(t)
	c := newTxnSinkCluster(t)
	s := newTxnSink(ctx, t, c, "dlq", nil)
	if err := s.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	bad := event("order", "", 1) // no aggregate ID: a RecordError
	var dlqErr atomic.Pointer[error]
	s.Publish(ctx, bad, func(err error) {
		reason, ok := s.Poison(err)
		if !ok {
			t.Errorf("Poison(%v) = false, want true", err)
			return
		}
		s.DeadLetter(ctx, bad, reason, err, 1, func(err error) { dlqErr.Store(&err) })
	})
	good := event("order", "a", 2)
	a := newAcks(t)
	s.Publish(ctx, good, a.done(good))
	if err := s.CommitTxn(ctx, 0x2000); err != nil {
		t.Fatalf("CommitTxn: %v", err)
	}
	if p := dlqErr.Load(); p == nil || *p != nil {
		t.Fatalf("dead letter done: %v, want nil before CommitTxn returns", p)
	}
	got := committedRecords(ctx, t, c, 2, txnEventTopic, kafka.DefaultDeadLetterTopic)
	topics := map[string]int{}
	for _, r := range got {
		topics[r.Topic]++
	}
	if topics[txnEventTopic] != 1 || topics[kafka.DefaultDeadLetterTopic] != 1 {
		t.Errorf("committed records by topic %v, want one in each", topics)
	}
}

func TestTxnFailedCommitAborts(t *testing.T) {
	ctx := testContext(t)
	c := newTxnSinkCluster(t)
	reg := prometheus.NewRegistry()
	s := newTxnSink(ctx, t, c, "aborts", reg)
	a := newAcks(t)
	if err := publishTxn(ctx, t, s, a, 0x1000, event("order", "a", 1), event("order", "b", 2)); err != nil {
		t.Fatalf("first CommitTxn: %v", err)
	}

	// The broker refuses the next commit once, for good.
	var refused atomic.Int32
	c.ControlKey(int16(kmsg.EndTxn), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.EndTxnRequest)
		if !req.Commit {
			c.KeepControl()
			return nil, nil, false
		}
		refused.Add(1)
		resp := req.ResponseKind().(*kmsg.EndTxnResponse)
		resp.ErrorCode = kerr.InvalidTxnState.Code
		return resp, nil, true
	})
	err := publishTxn(ctx, t, s, a, 0x2000, event("order", "a", 3), event("order", "c", 4))
	if !errors.Is(err, kafka.ErrTxnAborted) {
		t.Fatalf("CommitTxn with the commit refused: %v, want ErrTxnAborted", err)
	}
	if got := metricValue(t, reg, "outbox_relay_kafka_transactions_aborted_total", nil); got != 1 {
		t.Errorf("transactions aborted = %v, want 1", got)
	}
	t.Logf("CommitTxn with the commit refused: %v", err)
	if refused.Load() != 1 {
		t.Errorf("broker refused %d commits, want 1", refused.Load())
	}
	if err := s.BeginTxn(); !errors.Is(err, kafka.ErrTxnAborted) {
		t.Errorf("BeginTxn after a failed CommitTxn: %v, want an error wrapping ErrTxnAborted", err)
	}
	// Recovery as the relay does it: a new Sink, resuming from its fence.
	// (The old one is closed when the test ends.)
	s = newTxnSink(ctx, t, c, "aborts", prometheus.NewRegistry())
	if fence, err := s.ReadFence(ctx); err != nil || fence != 0x1000 {
		t.Errorf("ReadFence after the abort = %s, %v; want 0/1000", fence, err)
	}
	got := committedRecords(ctx, t, c, 2, txnEventTopic)
	for _, r := range got {
		if id := string(r.Headers[0].Value); id != "order-a-1" && id != "order-b-2" {
			t.Errorf("read_committed read %s of the aborted transaction", id)
		}
	}

	// The Sink goes on: the same events again, from the fence.
	if err := publishTxn(ctx, t, s, a, 0x2000, event("order", "a", 5), event("order", "c", 6)); err != nil {
		t.Fatalf("CommitTxn after the abort: %v", err)
	}
	if fence, err := s.ReadFence(ctx); err != nil || fence != 0x2000 {
		t.Errorf("ReadFence after the retry = %s, %v; want 0/2000", fence, err)
	}
	committedRecords(ctx, t, c, 4, txnEventTopic)
}

func TestTxnSameIDFencesOlderSink(t *testing.T) {
	ctx := testContext(t)
	c := newTxnSinkCluster(t)
	old := newTxnSink(ctx, t, c, "shared", nil)
	if _, err := old.ReadFence(ctx); err != nil {
		t.Fatal(err)
	}
	a := newAcks(t)
	if err := publishTxn(ctx, t, old, a, 0x1000, event("order", "a", 1)); err != nil {
		t.Fatalf("old Sink's first CommitTxn: %v", err)
	}
	if err := old.BeginTxn(); err != nil {
		t.Fatal(err)
	}
	ev := event("order", "a", 2)
	old.Publish(ctx, ev, a.done(ev))
	if err := old.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// A second relay on the same slot starts: it takes over the ID.
	newer := newSink(t, c, kafka.Config{TransactionalID: "shared", CheckpointKey: "slot_shared"}, prometheus.NewRegistry())
	fence, err := newer.ReadFence(ctx)
	if err != nil || fence != 0x1000 {
		t.Fatalf("new Sink's ReadFence = %s, %v; want 0/1000", fence, err)
	}

	err = old.CommitTxn(ctx, 0x2000)
	if !errors.Is(err, kafka.ErrFenced) {
		t.Fatalf("old Sink's CommitTxn after the takeover: %v, want ErrFenced", err)
	}
	t.Logf("old Sink's CommitTxn after the takeover: %v", err)
	if err := old.BeginTxn(); !errors.Is(err, kafka.ErrFenced) {
		t.Errorf("old Sink's BeginTxn after being fenced: %v, want ErrFenced", err)
	}
	late := event("order", "z", 9)
	var lateErr error
	old.Publish(ctx, late, func(err error) { lateErr = err })
	if !errors.Is(lateErr, kafka.ErrFenced) {
		t.Errorf("old Sink's Publish after being fenced: done(%v), want ErrFenced", lateErr)
	}

	if err := publishTxn(ctx, t, newer, a, 0x3000, event("order", "b", 3)); err != nil {
		t.Fatalf("new Sink's CommitTxn: %v", err)
	}
	for _, r := range committedRecords(ctx, t, c, 2, txnEventTopic) {
		if id := string(r.Headers[0].Value); id == "order-a-2" {
			t.Errorf("read_committed read %s, which the fenced Sink produced", id)
		}
	}
	if fence, err := newer.ReadFence(ctx); err != nil || fence != 0x3000 {
		t.Errorf("ReadFence = %s, %v; want 0/3000", fence, err)
	}
}

func TestTxnMethodsNeedTransactionalID(t *testing.T) {
	ctx := testContext(t)
	c := newTxnSinkCluster(t)
	s := newSink(t, c, kafka.Config{}, nil)
	if err := s.BeginTxn(); err == nil {
		t.Error("BeginTxn in at-least-once mode: nil error")
	}
	if err := s.CommitTxn(ctx, 1); err == nil {
		t.Error("CommitTxn in at-least-once mode: nil error")
	}
}

func TestTxnConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     kafka.Config
		wantErr bool
	}{
		{"at-least-once ignores the timeout", kafka.Config{Brokers: []string{"b:9092"}, TransactionTimeout: -1}, false},
		{"default timeout", kafka.Config{Brokers: []string{"b:9092"}, TransactionalID: "x"}, false},
		{"too short", kafka.Config{Brokers: []string{"b:9092"}, TransactionalID: "x", TransactionTimeout: time.Millisecond}, true},
		{"too long", kafka.Config{Brokers: []string{"b:9092"}, TransactionalID: "x", TransactionTimeout: time.Hour}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err != nil) != tc.wantErr {
				t.Errorf("Validate() = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

// gaugeValue returns the value of the unlabelled gauge name in g.
func gaugeValue(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

func TestCreateCheckpointTopic(t *testing.T) {
	ctx := testContext(t)
	c := newTxnSinkCluster(t)
	s := newTxnSink(ctx, t, c, "create", nil) // creates it once
	if err := s.CreateCheckpointTopic(ctx); err != nil {
		t.Fatalf("CreateCheckpointTopic again: %v", err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDescribeConfigsRequest()
	r := kmsg.NewDescribeConfigsRequestResource()
	r.ResourceType, r.ResourceName = kmsg.ConfigResourceTypeTopic, kafka.CheckpointTopic
	r.ConfigNames = []string{"cleanup.policy"}
	req.Resources = append(req.Resources, r)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Resources) != 1 || len(resp.Resources[0].Configs) != 1 {
		t.Fatalf("describe configs of %s: %+v, %v", kafka.CheckpointTopic, resp, err)
	}
	if v := resp.Resources[0].Configs[0].Value; v == nil || *v != "compact" {
		t.Errorf("cleanup.policy of %s = %v, want compact", kafka.CheckpointTopic, v)
	}
	meta := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(kafka.CheckpointTopic)
	meta.Topics = append(meta.Topics, mt)
	mresp, err := meta.RequestWith(ctx, cl)
	if err != nil || len(mresp.Topics) != 1 || len(mresp.Topics[0].Partitions) != 1 {
		t.Errorf("metadata of %s: %+v, %v; want one partition", kafka.CheckpointTopic, mresp, err)
	}
}
