package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/schema"
)

// TestInboxDeadLetterReplay follows a poison event from the outbox to the
// inbox's dead-letter topic and back: the relay binary publishes deposits,
// an inbox consumer applies them while its handler is broken for one of
// them; that one is dead-lettered after MaxAttempts and the later ones
// flow. After the "fix", `outbox-relay dlq replay` republishes it to its
// original topic and its effect is applied once; replaying it a second
// time applies nothing more (the inbox skips the duplicate).
func TestInboxDeadLetterReplay(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := inbox.Setup(ctx, pool, inbox.DefaultTable); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE deposits (account text PRIMARY KEY, cents bigint NOT NULL);
		CREATE TABLE applied (event_id text NOT NULL)`); err != nil {
		t.Fatal(err)
	}

	p := e.start()
	p.waitStreaming(30 * time.Second)
	ids := make([]string, 5)
	for i := range ids {
		msg := schema.Message{AggregateType: "account", AggregateID: "acct-1", EventType: "deposited", Payload: fmt.Appendf(nil, `{"cents": %d}`, 100*(i+1))}
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return schema.Insert(ctx, tx, msg) }); err != nil {
			t.Fatal(err)
		}
		var id string
		if err := pool.QueryRow(ctx, `SELECT id::text FROM outbox WHERE payload->>'cents' = $1`, fmt.Sprint(100*(i+1))).Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	poison := ids[2]

	var broken atomic.Bool
	broken.Store(true)
	handler := func(ctx context.Context, tx pgx.Tx, ev inbox.Event) error {
		if broken.Load() && ev.ID == poison {
			return errors.New("cannot apply this deposit yet")
		}
		var body struct{ Cents int64 }
		if err := json.Unmarshal(ev.Value, &body); err != nil {
			return inbox.Permanent(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO deposits VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET cents = deposits.cents + EXCLUDED.cents`, string(ev.Key), body.Cents); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO applied VALUES ($1)`, ev.ID)
		return err
	}
	reg := prometheus.NewRegistry()
	c, err := inbox.New(inbox.Config{
		Brokers: strings.Split(e.brokers, ","), Group: "deposits", Topics: []string{"outbox.account"}, DB: pool,
		MaxAttempts: 3, BackoffInitial: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, CommitInterval: 100 * time.Millisecond,
		ClientOptions: []kgo.Opt{kgo.FetchMaxWait(100 * time.Millisecond)},
	}, handler, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("inbox Run: %v", err)
		}
	})

	applied := func() (n int, cents int64) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM applied), coalesce((SELECT cents FROM deposits WHERE account = 'acct-1'), 0)`).Scan(&n, &cents); err != nil {
			t.Fatal(err)
		}
		return n, cents
	}
	// The poison event is set aside; the ones after it flow.
	eventually(t, time.Minute, "four deposits applied, the poison one dead-lettered", func() (bool, string) {
		n, cents := applied()
		return n == 4 && cents == 100+200+400+500, fmt.Sprintf("%d applied, %d cents", n, cents)
	})
	list := e.dlq(t, nil, "list", "--dlq-topic", inbox.DefaultDeadLetterTopic, "--json")
	if list.code != 0 || strings.Count(list.stdout, poison) == 0 {
		t.Fatalf("dlq list: exit %d, the poison event %s not listed:\n%s", list.code, poison, list.stdout)
	}
	for _, want := range []string{`"kind":"inbox"`, `"original_topic":"outbox.account"`, `"attempts":3`, "cannot apply this deposit yet"} {
		if !strings.Contains(list.stdout, want) {
			t.Errorf("dlq list lacks %s:\n%s", want, list.stdout)
		}
	}

	// The fix, then the replay: applied once, and once only.
	broken.Store(false)
	for round := 1; round <= 2; round++ {
		if r := e.dlq(t, nil, "replay", "--dlq-topic", inbox.DefaultDeadLetterTopic, "--id", poison); r.code != 0 {
			t.Fatalf("dlq replay, round %d: exit %d\n%s", round, r.code, r.stderr)
		}
		eventually(t, time.Minute, "the replayed deposit applied once", func() (bool, string) {
			n, cents := applied()
			return n == 5 && cents == 1500, fmt.Sprintf("%d applied, %d cents", n, cents)
		})
	}
	// The second replay reached the consumer too and was skipped as a
	// duplicate.
	eventually(t, 30*time.Second, "the second replay skipped as a duplicate", func() (bool, string) {
		d := counterSum(t, reg, "outbox_inbox_duplicates_total")
		return d == 1, fmt.Sprintf("outbox_inbox_duplicates_total = %v", d)
	})
	if n, cents := applied(); n != 5 || cents != 1500 {
		t.Errorf("after the second replay: %d applied, %d cents; want 5 and 1500", n, cents)
	}
	var inboxRows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+inbox.DefaultTable+` WHERE event_id = $1`, poison).Scan(&inboxRows); err != nil {
		t.Fatal(err)
	}
	if inboxRows != 1 {
		t.Errorf("inbox rows for the replayed event: %d, want 1", inboxRows)
	}
	if code := p.term(30 * time.Second); code != 0 {
		t.Errorf("relay exit code %d after SIGTERM", code)
	}
}

// counterSum is the sum of the counter name's series in reg.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
