package kafka_test

// These tests check that kfake, the broker every Kafka test here runs
// against, keeps the transaction promises exactly-once delivery (issue 10)
// relies on: read_committed consumers never see aborted or open
// transactions, the last stable offset stops at the first open transaction,
// and a second producer with the same transactional ID fences the first.
// They live here, not in e2e, because the e2e TestMain builds the relay
// binary and starts PostgreSQL, neither of which these tests need.

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const txnTopic = "txn-check"

// newTxnCluster returns a one-broker cluster with txnTopic on one
// partition, so offsets and order are those of a single log.
func newTxnCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	return newCluster(t, kfake.SeedTopics(1, txnTopic))
}

// txnProducer returns a transactional producer for txid on c.
func txnProducer(t *testing.T, c *kfake.Cluster, txid string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.TransactionalID(txid),
		kgo.DefaultProduceTopic(txnTopic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produceIn begins a transaction on cl and produces one record per value,
// keyed k<value>, waiting for each acknowledgement.
func produceIn(ctx context.Context, t *testing.T, cl *kgo.Client, values ...string) {
	t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatalf("BeginTransaction: %v", err)
	}
	for _, v := range values {
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte("k" + v), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("produce %q in transaction: %v", v, err)
		}
	}
}

func endTxn(ctx context.Context, t *testing.T, cl *kgo.Client, commit kgo.TransactionEndTry) {
	t.Helper()
	if err := cl.EndTransaction(ctx, commit); err != nil {
		t.Fatalf("EndTransaction(%v): %v", commit, err)
	}
}

// consumer returns a client reading txnTopic from the start at level.
func consumer(t *testing.T, c *kfake.Cluster, level kgo.IsolationLevel) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.FetchIsolationLevel(level),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{txnTopic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// readUntil polls cl until it has read a record with value last, and
// returns the values read in order.
func readUntil(ctx context.Context, t *testing.T, cl *kgo.Client, last string) []string {
	t.Helper()
	var got []string
	for !slices.Contains(got, last) {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %v, still waiting for %q: %v", got, last, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Errorf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

// endOffset returns the partition's end offset as a consumer at level sees
// it: the high watermark for read_uncommitted, the last stable offset for
// read_committed.
func endOffset(ctx context.Context, t *testing.T, cl *kgo.Client, level int8) int64 {
	t.Helper()
	req := kmsg.NewPtrListOffsetsRequest()
	req.IsolationLevel = level
	rt := kmsg.NewListOffsetsRequestTopic()
	rt.Topic = txnTopic
	rp := kmsg.NewListOffsetsRequestTopicPartition()
	rp.Partition, rp.Timestamp = 0, -1 // latest
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("list offsets: %v", err)
	}
	p := resp.Topics[0].Partitions[0]
	if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
		t.Fatalf("list offsets: %v", err)
	}
	return p.Offset
}

const (
	readUncommitted int8 = 0
	readCommitted   int8 = 1
)

func TestKfakeAbortedInvisibleToReadCommitted(t *testing.T) {
	ctx := testContext(t)
	c := newTxnCluster(t)
	p := txnProducer(t, c, "aborts")
	produceIn(ctx, t, p, "a1", "a2", "a3")
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	endTxn(ctx, t, p, kgo.TryAbort)
	// A committed transaction after the aborted one: a reader that sees
	// c2 has read past every aborted record.
	produceIn(ctx, t, p, "c1", "c2")
	endTxn(ctx, t, p, kgo.TryCommit)

	committed := readUntil(ctx, t, consumer(t, c, kgo.ReadCommitted()), "c2")
	if diff := cmp.Diff([]string{"c1", "c2"}, committed); diff != "" {
		t.Errorf("read_committed read (-want +got):\n%s", diff)
	}
	uncommitted := readUntil(ctx, t, consumer(t, c, kgo.ReadUncommitted()), "c2")
	if diff := cmp.Diff([]string{"a1", "a2", "a3", "c1", "c2"}, uncommitted); diff != "" {
		t.Errorf("read_uncommitted read (-want +got):\n%s", diff)
	}
}

func TestKfakeOpenTxnHiddenUntilCommit(t *testing.T) {
	ctx := testContext(t)
	c := newTxnCluster(t)
	admin := consumer(t, c, kgo.ReadUncommitted())

	// One committed record first, so that the last stable offset has
	// something to stop after.
	p := txnProducer(t, c, "opens")
	produceIn(ctx, t, p, "c0")
	endTxn(ctx, t, p, kgo.TryCommit)
	// c0 at offset 0, its commit marker at 1.
	if hwm, lso := endOffset(ctx, t, admin, readUncommitted), endOffset(ctx, t, admin, readCommitted); hwm != 2 || lso != 2 {
		t.Fatalf("after one committed record: high watermark %d, last stable offset %d; want 2 and 2", hwm, lso)
	}

	produceIn(ctx, t, p, "o1", "o2", "o3")
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The open transaction's records sit at 2..4: the high watermark
	// passes them, the last stable offset stops at the first.
	if hwm, lso := endOffset(ctx, t, admin, readUncommitted), endOffset(ctx, t, admin, readCommitted); hwm != 5 || lso != 2 {
		t.Errorf("with a transaction open: high watermark %d, last stable offset %d; want 5 and 2", hwm, lso)
	}

	rc := consumer(t, c, kgo.ReadCommitted())
	if got := readUntil(ctx, t, rc, "c0"); !slices.Equal(got, []string{"c0"}) {
		t.Errorf("read_committed read %v before the commit, want [c0]", got)
	}
	// Nothing more while the transaction is open: a few fetches that
	// each wait up to FetchMaxWait return no record.
	for range 3 {
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		fs := rc.PollFetches(short)
		cancel()
		fs.EachRecord(func(r *kgo.Record) { t.Errorf("read_committed read %q of an open transaction", r.Value) })
	}
	if got := readUntil(ctx, t, consumer(t, c, kgo.ReadUncommitted()), "o3"); !slices.Equal(got, []string{"c0", "o1", "o2", "o3"}) {
		t.Errorf("read_uncommitted read %v, want [c0 o1 o2 o3]", got)
	}

	endTxn(ctx, t, p, kgo.TryCommit)
	if got := readUntil(ctx, t, rc, "o3"); !slices.Equal(got, []string{"o1", "o2", "o3"}) {
		t.Errorf("read_committed read %v after the commit, want [o1 o2 o3] in order", got)
	}
	if hwm, lso := endOffset(ctx, t, admin, readUncommitted), endOffset(ctx, t, admin, readCommitted); hwm != 6 || lso != 6 {
		t.Errorf("after the commit: high watermark %d, last stable offset %d; want 6 and 6", hwm, lso)
	}
}

// TestKfakeSameTransactionalIDFences checks both ways a fenced producer
// learns of it: committing at once (the broker answers EndTxn), and
// producing first (the broker refuses the batch; franz-go then fails its
// producer ID and does not send the commit at all).
func TestKfakeSameTransactionalIDFences(t *testing.T) {
	for _, tc := range []struct {
		name          string
		produceAfter  bool
		wantProduce   error
		wantCommit    error
		wantAbort     error // nil: the abort succeeds
		wantBeginNext error // nil: any error
	}{
		// The broker's EndTxn answer; the abort is then a no-op, and
		// franz-go keeps the producer ID failed.
		{name: "commit", wantCommit: kerr.ProducerFenced, wantBeginNext: kerr.ProducerFenced},
		// franz-go fails its producer ID on the refused batch and does
		// not send the commit; the abort it does send is fenced, and it
		// then stays in the transaction.
		{name: "produce then commit", produceAfter: true, wantProduce: kerr.InvalidProducerEpoch,
			wantCommit: kerr.OperationNotAttempted, wantAbort: kerr.ProducerFenced},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			c := newTxnCluster(t)
			old := txnProducer(t, c, "shared")
			produceIn(ctx, t, old, "old1")

			// The new producer's InitProducerID bumps the epoch and
			// aborts the old producer's open transaction.
			newer := txnProducer(t, c, "shared")
			produceIn(ctx, t, newer, "new1")
			endTxn(ctx, t, newer, kgo.TryCommit)

			if tc.produceAfter {
				err := old.ProduceSync(ctx, &kgo.Record{Key: []byte("kold2"), Value: []byte("old2")}).FirstErr()
				t.Logf("old producer's produce after the takeover: %v", err)
				if !errors.Is(err, tc.wantProduce) {
					t.Errorf("old producer's produce after the takeover: %v, want %v", err, tc.wantProduce)
				}
			}
			err := old.EndTransaction(ctx, kgo.TryCommit)
			t.Logf("old producer's commit: %v", err)
			if !errors.Is(err, tc.wantCommit) {
				t.Errorf("old producer's commit after the takeover: %v, want %v", err, tc.wantCommit)
			}
			if err := old.EndTransaction(ctx, kgo.TryAbort); !errors.Is(err, tc.wantAbort) {
				t.Errorf("old producer's abort after the failed commit: %v, want %v", err, tc.wantAbort)
			}
			err = old.BeginTransaction()
			t.Logf("old producer's next BeginTransaction: %v", err)
			if err == nil || tc.wantBeginNext != nil && !errors.Is(err, tc.wantBeginNext) {
				t.Errorf("old producer's next BeginTransaction: %v, want %v", err, tc.wantBeginNext)
			}

			got := readUntil(ctx, t, consumer(t, c, kgo.ReadCommitted()), "new1")
			if !slices.Equal(got, []string{"new1"}) {
				t.Errorf("read_committed read %v, want only [new1]: the old producer's transaction must be aborted", got)
			}
		})
	}
}

// TestKfakeReadCommittedWithKcat reads aborted, committed and open
// transactions with kcat (librdkafka), a client independent of franz-go.
func TestKfakeReadCommittedWithKcat(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat is not installed (make test installs it): apt-get install -y kcat")
	}
	ctx := testContext(t)
	c := newTxnCluster(t)
	p := txnProducer(t, c, "kcat")
	produceIn(ctx, t, p, "a1", "a2")
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	endTxn(ctx, t, p, kgo.TryAbort)
	produceIn(ctx, t, p, "c1", "c2")
	endTxn(ctx, t, p, kgo.TryCommit)
	produceIn(ctx, t, p, "o1") // left open
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	read := func(level string) []string {
		t.Helper()
		cmd := exec.CommandContext(ctx, kcat, "-C", "-b", strings.Join(c.ListenAddrs(), ","), "-t", txnTopic,
			"-X", "isolation.level="+level, "-o", "beginning", "-e", "-q", "-f", `%k %s\n`)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("kcat %s: %v\n%s", level, err, stderr.String())
		}
		return strings.Fields(strings.ReplaceAll(string(out), "\n", " "))
	}
	pairs := func(vs ...string) []string {
		var out []string
		for _, v := range vs {
			out = append(out, "k"+v, v)
		}
		return out
	}
	if diff := cmp.Diff(pairs("c1", "c2"), read("read_committed")); diff != "" {
		t.Errorf("kcat read_committed with a transaction open (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(pairs("a1", "a2", "c1", "c2", "o1"), read("read_uncommitted")); diff != "" {
		t.Errorf("kcat read_uncommitted (-want +got):\n%s", diff)
	}
	endTxn(ctx, t, p, kgo.TryCommit)
	if diff := cmp.Diff(pairs("c1", "c2", "o1"), read("read_committed")); diff != "" {
		t.Errorf("kcat read_committed after the commit (-want +got):\n%s", diff)
	}
}
