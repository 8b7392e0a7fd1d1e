package inbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestSetupIdempotent(t *testing.T) {
	db := newDB(t) // ran Setup once
	if err := Setup(t.Context(), db, DefaultTable); err != nil {
		t.Fatalf("Setup again: %v", err)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM pg_indexes WHERE tablename = 'outbox_inbox'`); n != 2 {
		t.Errorf("outbox_inbox has %d indexes, want 2 (primary key, processed_at)", n)
	}
}

func TestDedupe(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	id := uuid.NewString()
	// The same event twice (a relay redelivery), then another.
	produce(t, c, eventWithID(id, "acct-1", 100, 0), eventWithID(id, "acct-1", 100, 0), event("acct-1", 5, 0))
	r := start(t, testConfig(c, db, "dedupe"), balanceHandler, nil)
	waitFor(t, "3 records finished", func() bool {
		return testutil.ToFloat64(r.c.metrics.processed)+testutil.ToFloat64(r.c.metrics.duplicates) == 3
	})
	if got := queryInt(t, db, `SELECT cents FROM balances WHERE id = 'acct-1'`); got != 105 {
		t.Errorf("balance = %d, want 105 (the duplicate applied once)", got)
	}
	if got := testutil.ToFloat64(r.c.metrics.duplicates); got != 1 {
		t.Errorf("duplicates = %v, want 1", got)
	}
	var (
		topic, position string
		partition       int32
		offset          int64
	)
	if err := db.QueryRow(t.Context(), `SELECT topic, "partition", "offset", position FROM outbox_inbox
		WHERE consumer = 'dedupe' AND event_id = $1`, id).Scan(&topic, &partition, &offset, &position); err != nil {
		t.Fatalf("read inbox row: %v", err)
	}
	if topic != testTopic || partition != 0 || offset != 0 || position != "0000000001000000000000ff" {
		t.Errorf("inbox row = %s/%d@%d position %s, want %s/0@0 position 0000000001000000000000ff", topic, partition, offset, position, testTopic)
	}
	waitFor(t, "offset 3 committed", func() bool { return committed(t, newClient(t, c), "dedupe", 1)[0] == 3 })
	waitFor(t, "lag 0", func() bool {
		return testutil.ToFloat64(r.c.metrics.lag.WithLabelValues("dedupe", testTopic, "0")) == 0
	})
}

// TestCrashBeforeOffsetCommit kills a consumer after its transactions
// commit and before any offset commit: a restarted consumer of the group
// reads every record again and the inbox skips them all.
func TestCrashBeforeOffsetCommit(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	admin := newClient(t, c)
	for i := range 5 {
		produce(t, c, event("acct-"+strconv.Itoa(i%2), 10, 0))
	}
	cfg := testConfig(c, db, "crash")
	var applied sync.WaitGroup
	applied.Add(5)
	// A handler may never see its own record's offset committed: it runs
	// before the transaction commits.
	var early []int64
	var mu sync.Mutex
	checked := func(ctx context.Context, tx pgx.Tx, ev Event) error {
		if got := committed(t, admin, "crash", 1)[0]; got > ev.Offset {
			mu.Lock()
			early = append(early, ev.Offset)
			mu.Unlock()
		}
		return balanceHandler(ctx, tx, ev)
	}
	cfg.CommitInterval = time.Hour
	r := start(t, cfg, checked, func(c *Consumer) {
		c.hooks.crash = true
		c.hooks.onApplied = func(Event) { applied.Done() }
	})
	applied.Wait()
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := committed(t, admin, "crash", 1)[0]; got != -1 {
		t.Fatalf("after the crash the committed offset is %d, want none", got)
	}

	cfg.CommitInterval = 20 * time.Millisecond
	r2 := start(t, cfg, checked, nil)
	waitFor(t, "5 duplicates", func() bool { return testutil.ToFloat64(r2.c.metrics.duplicates) == 5 })
	waitFor(t, "offset 5 committed", func() bool { return committed(t, admin, "crash", 1)[0] == 5 })
	if got := testutil.ToFloat64(r2.c.metrics.processed); got != 0 {
		t.Errorf("restarted consumer applied %v events, want 0", got)
	}
	if got := queryInt(t, db, `SELECT sum(cents) FROM balances`); got != 50 {
		t.Errorf("sum of balances = %d, want 50", got)
	}
	produce(t, c, event("acct-0", 1, 0))
	waitFor(t, "the new event applied", func() bool { return testutil.ToFloat64(r2.c.metrics.processed) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(early) > 0 {
		t.Errorf("offsets committed past records still in their handler: %v", early)
	}
}

func TestRetryBackoff(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	produce(t, c, event("acct-1", 7, 0))
	cfg := testConfig(c, db, "retry")
	cfg.MaxAttempts = 5
	cfg.BackoffInitial = 40 * time.Millisecond
	cfg.BackoffMax = 2 * time.Second
	var mu sync.Mutex
	var at []time.Time
	var attempts []int
	h := func(ctx context.Context, tx pgx.Tx, ev Event) error {
		mu.Lock()
		at = append(at, time.Now())
		attempts = append(attempts, ev.Attempt)
		n := len(at)
		mu.Unlock()
		if n < cfg.MaxAttempts {
			return Retryable(errors.New("downstream unavailable"))
		}
		return balanceHandler(ctx, tx, ev)
	}
	r := start(t, cfg, h, nil)
	waitFor(t, "the event applied", func() bool { return testutil.ToFloat64(r.c.metrics.processed) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if want := []int{1, 2, 3, 4, 5}; !slices.Equal(attempts, want) {
		t.Fatalf("Event.Attempt of the calls = %v, want %v", attempts, want)
	}
	// Waits of 40, 80, 160, 320 ms, each ±50%: check each gap against half
	// its nominal value and the growth from the first to the last.
	var gaps []time.Duration
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]))
	}
	for i, g := range gaps {
		nominal := cfg.BackoffInitial << i
		if g < nominal/2 || g > 10*nominal+time.Second {
			t.Errorf("wait before attempt %d = %s, want about %s (±50%% jitter)", i+2, g, nominal)
		}
	}
	if gaps[3] <= gaps[0] {
		t.Errorf("waits %v do not grow", gaps)
	}
	if got := testutil.ToFloat64(r.c.metrics.retries); got != 4 {
		t.Errorf("retries = %v, want 4", got)
	}
	if got := testutil.ToFloat64(r.c.metrics.dead); got != 0 {
		t.Errorf("dead letters = %v, want 0", got)
	}
	if got := queryInt(t, db, `SELECT cents FROM balances WHERE id = 'acct-1'`); got != 7 {
		t.Errorf("balance = %d, want 7", got)
	}
}

func TestPoisonRecord(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	poison := event("acct-1", 13, 0)
	poison.Headers = append(poison.Headers, kgo.RecordHeader{Key: "traceparent", Value: []byte("00-abc-def-01")})
	noID := &kgo.Record{Topic: testTopic, Key: []byte("acct-1"), Value: []byte("1000")}
	permanent := event("acct-2", 17, 0)
	produce(t, c, event("acct-1", 1, 0), poison, noID, permanent, event("acct-1", 2, 0), event("acct-2", 3, 0))
	cfg := testConfig(c, db, "poison")
	cfg.Name = "billing"
	cfg.MaxAttempts = 3
	calls := map[string]int{}
	var mu sync.Mutex
	h := func(ctx context.Context, tx pgx.Tx, ev Event) error {
		mu.Lock()
		calls[ev.ID]++
		mu.Unlock()
		switch ev.ID {
		case header(poison, HeaderID):
			return errors.New("cannot parse payload")
		case header(permanent, HeaderID):
			return Permanent(errors.New("account closed"))
		}
		return balanceHandler(ctx, tx, ev)
	}
	before := time.Now()
	r := start(t, cfg, h, nil)
	waitFor(t, "6 records finished", func() bool { return committed(t, newClient(t, c), "poison", 1)[0] == 6 })

	if got := testutil.ToFloat64(r.c.metrics.dead); got != 3 {
		t.Errorf("dead letters = %v, want 3", got)
	}
	if got := queryInt(t, db, `SELECT sum(cents) FROM balances`); got != 6 {
		t.Errorf("sum of balances = %d, want 6 (the later records flowed)", got)
	}
	if got := queryInt(t, db, `SELECT count(*) FROM outbox_inbox WHERE event_id IN ($1, $2)`,
		header(poison, HeaderID), header(permanent, HeaderID)); got != 0 {
		t.Errorf("%d inbox rows for dead-lettered events, want 0", got)
	}
	mu.Lock()
	if calls[header(poison, HeaderID)] != 3 || calls[header(permanent, HeaderID)] != 1 {
		t.Errorf("handler calls: poison %d, permanent %d; want 3 and 1", calls[header(poison, HeaderID)], calls[header(permanent, HeaderID)])
	}
	mu.Unlock()

	dlq := readAll(t, c, testDLQ, 3)
	source := readAll(t, c, testTopic, 6)
	for i, want := range []struct {
		rec      *kgo.Record
		offset   string
		attempts string
		err      string
	}{
		{poison, "1", "3", "cannot parse payload"},
		{noID, "2", "0", `deduplication key: inbox: record has no "id" header`},
		{permanent, "3", "1", "account closed"},
	} {
		got := dlq[i]
		if string(got.Key) != string(want.rec.Key) || string(got.Value) != string(want.rec.Value) {
			t.Errorf("dead letter %d: key %q value %q, want %q %q", i, got.Key, got.Value, want.rec.Key, want.rec.Value)
		}
		if !slices.EqualFunc(got.Headers[:len(want.rec.Headers)], want.rec.Headers, func(a, b kgo.RecordHeader) bool {
			return a.Key == b.Key && string(a.Value) == string(b.Value)
		}) {
			t.Errorf("dead letter %d: headers %v do not start with the original %v", i, got.Headers, want.rec.Headers)
		}
		for k, v := range map[string]string{
			HeaderDLQTopic: testTopic, HeaderDLQPartition: "0", HeaderDLQOffset: want.offset,
			HeaderDLQConsumer: "billing", HeaderDLQGroup: "poison", HeaderDLQError: want.err, HeaderDLQAttempts: want.attempts,
		} {
			if h := header(got, k); h != v {
				t.Errorf("dead letter %d: %s = %q, want %q", i, k, h, v)
			}
		}
		first, err1 := time.Parse(time.RFC3339Nano, header(got, HeaderDLQFirstAttempt))
		last, err2 := time.Parse(time.RFC3339Nano, header(got, HeaderDLQLastAttempt))
		recTime, err3 := time.Parse(time.RFC3339Nano, header(got, HeaderDLQRecordTime))
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Errorf("dead letter %d: times: %v", i, err)
			continue
		}
		off, _ := strconv.Atoi(want.offset)
		if first.Before(before) || last.Before(first) || !recTime.Equal(source[off].Timestamp) {
			t.Errorf("dead letter %d: first attempt %s, last %s, record time %s; want after %s, in order, record time %s",
				i, first, last, recTime, before, source[off].Timestamp)
		}
		if want.attempts == "3" && last.Sub(first) < cfg.BackoffInitial {
			t.Errorf("dead letter %d: attempts from %s to %s, shorter than two backoffs", i, first, last)
		}
		if v := header(got, HeaderDLQLastAttempt); v[len(v)-1] != 'Z' {
			t.Errorf("dead letter %d: last attempt %q is not in UTC", i, v)
		}
	}
}

// TestDeadLetterTopicCreated runs a consumer on a broker that has no
// dead-letter topic and creates none on its own: Run creates it, and a
// record without an id lands there.
func TestDeadLetterTopicCreated(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	db := newDB(t)
	rec := event("acct-1", 100, 0)
	rec.Headers = rec.Headers[1:] // no id header: a permanent failure
	produce(t, c, rec)
	start(t, testConfig(c, db, "created-dlq"), balanceHandler, nil)
	dlq := readAll(t, c, testDLQ, 1)
	if len(dlq) != 1 || string(dlq[0].Key) != "acct-1" {
		t.Fatalf("dead-letter topic holds %d records, want the one without an id", len(dlq))
	}
}

// TestRecordErrorsAreNotOutages gives the handler errors that look like a
// network's but are the record's (a truncated payload marked Permanent, an
// unmarked net.Error of a call elsewhere), and an id the inbox table
// cannot store: each is dead-lettered after its attempts, not retried
// forever as a database outage, and the records after them flow.
func TestRecordErrorsAreNotOutages(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	truncated := event("acct-1", 5, 0)
	remote := event("acct-1", 7, 0)
	badID := eventWithID("bad\x00id", "acct-1", 11, 0)
	produce(t, c, truncated, remote, badID, event("acct-1", 1, 0))
	cfg := testConfig(c, db, "record-errors")
	cfg.MaxAttempts = 2
	h := func(ctx context.Context, tx pgx.Tx, ev Event) error {
		switch ev.ID {
		case header(truncated, HeaderID):
			return Permanent(fmt.Errorf("decode payload: %w", io.ErrUnexpectedEOF))
		case header(remote, HeaderID):
			return &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
		}
		return balanceHandler(ctx, tx, ev)
	}
	r := start(t, cfg, h, nil)
	waitFor(t, "4 records finished", func() bool { return committed(t, newClient(t, c), "record-errors", 1)[0] == 4 })
	if got := testutil.ToFloat64(r.c.metrics.dead); got != 3 {
		t.Errorf("dead letters = %v, want 3", got)
	}
	if got := queryInt(t, db, `SELECT sum(cents) FROM balances`); got != 1 {
		t.Errorf("sum of balances = %d, want 1 (the record after them applied)", got)
	}
	dlq := readAll(t, c, testDLQ, 3)
	for i, want := range []string{"1", "2", "1"} {
		if got := header(dlq[i], HeaderDLQAttempts); got != want {
			t.Errorf("dead letter %d: %s attempts counted, want %s", i, got, want)
		}
	}
}
