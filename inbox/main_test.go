package inbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

const (
	testTopic = "orders"
	testDLQ   = "orders-dlq"
)

// newBroker returns a kfake cluster with testTopic on partitions partitions
// and testDLQ on one, closed when t ends.
func newBroker(t *testing.T, partitions int32) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, testTopic), kfake.SeedTopics(1, testDLQ))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// newDB returns a pool on a fresh database holding the inbox table and the
// tables balanceHandler writes.
func newDB(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := Setup(t.Context(), pool, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(t.Context(), `
		CREATE TABLE balances (id text PRIMARY KEY, cents bigint NOT NULL);
		CREATE TABLE effects (event_id text NOT NULL, key text NOT NULL, seq bigserial);`); err != nil {
		t.Fatalf("create test tables: %v", err)
	}
	return pool
}

// balanceHandler adds the record value (decimal cents) to the balance of
// the record key and notes the effect.
func balanceHandler(ctx context.Context, tx pgx.Tx, ev Event) error {
	cents, err := strconv.ParseInt(string(ev.Value), 10, 64)
	if err != nil {
		return Permanent(fmt.Errorf("value %q: %w", ev.Value, err))
	}
	if _, err := tx.Exec(ctx, `INSERT INTO balances (id, cents) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET cents = balances.cents + EXCLUDED.cents`, string(ev.Key), cents); err != nil {
		return fmt.Errorf("add to balance: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO effects (event_id, key) VALUES ($1, $2)`, ev.ID, string(ev.Key)); err != nil {
		return fmt.Errorf("note effect: %w", err)
	}
	return nil
}

// event returns a record as the relay writes it.
func event(key string, cents int, partition int32) *kgo.Record {
	return eventWithID(uuid.NewString(), key, cents, partition)
}

func eventWithID(id, key string, cents int, partition int32) *kgo.Record {
	return &kgo.Record{
		Topic: testTopic, Partition: partition, Key: []byte(key), Value: []byte(strconv.Itoa(cents)),
		Headers: []kgo.RecordHeader{
			{Key: HeaderID, Value: []byte(id)},
			{Key: HeaderPosition, Value: []byte("0000000001000000000000ff")},
			{Key: HeaderEventType, Value: []byte("deposited")},
			{Key: HeaderAggregateType, Value: []byte("account")},
		},
	}
}

// newClient returns a plain client of c, closed when t ends.
func newClient(t *testing.T, c *kfake.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produce writes recs to c and waits for their acknowledgement.
func produce(t *testing.T, c *kfake.Cluster, recs ...*kgo.Record) {
	t.Helper()
	if err := newClient(t, c).ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// testConfig returns a config for group on c and db, with fast timings.
func testConfig(c *kfake.Cluster, db *pgxpool.Pool, group string) Config {
	return Config{
		Brokers: c.ListenAddrs(), Group: group, Topics: []string{testTopic}, DB: db,
		DeadLetterTopic: testDLQ, BackoffInitial: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond,
		CommitInterval: 50 * time.Millisecond, ShutdownTimeout: 2 * time.Second,
		ClientOptions: []kgo.Opt{kgo.FetchMaxWait(100 * time.Millisecond), kgo.HeartbeatInterval(100 * time.Millisecond)},
	}
}

// running is a Consumer whose Run runs in a goroutine of the test.
type running struct {
	c      *Consumer
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start makes a Consumer of cfg and h (with hooks set up by setup, if not
// nil) and runs it until stop or the end of t.
func start(t *testing.T, cfg Config, h Handler, setup func(*Consumer)) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(cfg, h, nil, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if setup != nil {
		setup(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// stop ends Run and returns its error.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			r.err = errors.New("Run did not return within 30s of cancel")
		}
	})
	return r.err
}

// waitFor polls cond until it holds or 20 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// queryInt returns the single integer sql selects.
func queryInt(t *testing.T, db *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// committed returns the committed offsets of group on testTopic's
// partitions, -1 for none.
func committed(t *testing.T, cl *kgo.Client, group string, partitions int32) []int64 {
	t.Helper()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic = testTopic
	for p := range partitions {
		rt.Partitions = append(rt.Partitions, p)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatalf("fetch offsets of group %s: %v", group, err)
	}
	out := make([]int64, partitions)
	for i := range out {
		out[i] = -1
	}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			out[rp.Partition] = rp.Offset
		}
	}
	return out
}

// readAll reads n records of topic from the start, with a plain consumer.
func readAll(t *testing.T, c *kfake.Cluster, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := newClient(t, c, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d records of %s, want %d", len(recs), topic, n)
		}
		recs = append(recs, fs.Records()...)
	}
	return recs
}

// header returns the last value of header k of rec.
func header(rec *kgo.Record, k string) string {
	v := ""
	for _, h := range rec.Headers {
		if h.Key == k {
			v = string(h.Value)
		}
	}
	return v
}
