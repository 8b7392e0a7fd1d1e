package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/schema"
)

// TestMessagesMixedWithRows runs writers that emit about half their events
// as logical decoding messages, in their place among the rows of the same
// transactions, some of them rolled back; before them, one transaction
// holds a row, an outbox_emit call, an Emit, and messages the relay must
// ignore (non-transactional, another prefix). Everything committed arrives
// once, in commit order per aggregate, and the position header counts rows
// and messages of a transaction as one sequence (ledger.check); nothing
// rolled back or ignored arrives.
func TestMessagesMixedWithRows(t *testing.T) {
	e := newEnv(t)
	p := e.start()
	p.waitStreaming(time.Minute)
	c := newCollector(e.consumer())

	w := &workload{Writers: 4, Rows: 2000, RollbackRatio: 0.2, HeaderRatio: 0.2, MessageRatio: 0.5}
	w.defaults()
	var l ledger
	l.init(w)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	msg := func(evType string, n int) schema.Message {
		return schema.Message{ID: uuid.NewString(), AggregateType: "order", AggregateID: "order-9999", EventType: evType,
			Payload: []byte(`{"seq":` + string(rune('0'+n)) + `}`)}
	}
	row, emitted := msg("row", 0), msg("emitted", 2)
	fn := schema.Message{AggregateType: "order", AggregateID: "order-9999", EventType: "function", Payload: []byte(`{"seq": 1}`),
		Headers: map[string]string{"lang": "de"}}
	ignored := []schema.Message{msg("non-transactional", 8), msg("other-prefix", 9)}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := schema.Insert(ctx, tx, row); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT outbox_emit('order', 'order-9999', 'function', '{"seq": 1}', '{"lang": "de"}')::text`).Scan(&fn.ID); err != nil {
			return err
		}
		if err := schema.Emit(ctx, tx, emitted); err != nil {
			return err
		}
		if err := (schema.Outbox{MessagePrefix: "other"}).Emit(ctx, tx, ignored[1]); err != nil {
			return err
		}
		content, _ := json.Marshal(map[string]any{"id": ignored[0].ID, "aggregate_type": "order", "aggregate_id": "order-9999",
			"event_type": ignored[0].EventType, "payload": json.RawMessage(ignored[0].Payload)})
		_, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(false, 'outbox', $1::text)`, string(content))
		return err
	})
	if err != nil {
		t.Fatalf("first transaction: %v", err)
	}
	l.commit(0, []schema.Message{row, fn, emitted}, nil)
	l.rolledBack(ignored) // they must never arrive

	start := time.Now()
	if err := w.run(ctx, e.dsn, &l); err != nil {
		t.Fatalf("workload: %v", err)
	}
	committed, rolled, txns := l.counts()
	t.Logf("wrote %d committed events in %d transactions and %d rolled-back ones in %s (seed %d)",
		committed, txns, rolled, time.Since(start).Round(time.Millisecond), w.Seed)
	rep := l.drain(t, c, time.Minute, 2*time.Second)
	t.Logf("delivered: %s", rep)
	rep.assert(t, false)

	// The first transaction's three events hold positions 0, 1 and 2 of
	// one commit.
	var first []string
	for _, rec := range c.recs {
		switch header(rec, "id") {
		case row.ID, fn.ID, emitted.ID:
			first = append(first, header(rec, "position"))
		}
	}
	if len(first) != 3 || first[0][:16] != first[2][:16] || first[0][16:] != "00000000" || first[1][16:] != "00000001" || first[2][16:] != "00000002" {
		t.Errorf("positions of the row, the outbox_emit call and the Emit of one transaction = %q, want one commit LSN and indexes 0, 1, 2", first)
	}

	p.mu.Lock()
	addr := p.metrics
	p.mu.Unlock()
	mfs := scrape(t, addr)
	for _, reason := range []string{"non_transactional", "prefix"} {
		if n := value(mfs, "outbox_relay_messages_ignored_total", map[string]string{"reason": reason}); n != 1 {
			t.Errorf("outbox_relay_messages_ignored_total{reason=%q} = %v, want 1", reason, n)
		}
	}
	logWarnings(t, p)
	if code := p.term(40 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
}

// TestMessagesMalformedDeadLettered emits, between good events of one
// transaction, messages of the outbox prefix whose content is no outbox
// event: they go to the dead-letter topic with reason content, in their
// place in the transaction's positions, and the good events arrive.
func TestMessagesMalformedDeadLettered(t *testing.T) {
	e := newEnv(t)
	p := e.start()
	p.waitStreaming(time.Minute)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	good := []schema.Message{
		{ID: uuid.NewString(), AggregateType: "order", AggregateID: "o-1", EventType: "first", Payload: []byte(`{"n":1}`)},
		{ID: uuid.NewString(), AggregateType: "order", AggregateID: "o-1", EventType: "last", Payload: []byte(`{"n":5}`)},
	}
	bad := []string{
		`{"id": "` + uuid.NewString(),                                                                       // not JSON
		`{"id": "` + uuid.NewString() + `", "aggregate_id": "o-1"}`,                                         // fields missing
		`{"id": "o-1", "aggregate_type": "order", "aggregate_id": "o-1", "event_type": "e", "payload": {}}`, // no UUID
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := schema.Emit(ctx, tx, good[0]); err != nil {
			return err
		}
		for _, b := range bad {
			if _, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, 'outbox', $1::text)`, b); err != nil {
				return err
			}
		}
		return schema.Insert(ctx, tx, good[1])
	})
	if err != nil {
		t.Fatal(err)
	}

	c := newCollector(e.consumer())
	for deadline := time.Now().Add(30 * time.Second); len(c.recs) < len(good) && time.Now().Before(deadline); {
		recs, err := c.c.poll(ctx, time.Second)
		if err != nil {
			t.Logf("consume: %v", err)
		}
		c.add(recs)
	}
	if len(c.recs) != len(good) {
		t.Fatalf("%d records in the outbox topics, want the %d good events", len(c.recs), len(good))
	}
	for i, rec := range c.recs {
		if header(rec, "id") != good[i].ID || !strings.HasSuffix(header(rec, "position"), []string{"00000000", "00000004"}[i]) {
			t.Errorf("record %d: id %s position %s, want %s at index %d", i, header(rec, "id"), header(rec, "position"), good[i].ID, i*4)
		}
	}
	dlq := consumeDLQ(t, e, func(got map[string][]*kgo.Record) bool {
		n := 0
		for _, recs := range got {
			n += len(recs)
		}
		return n >= len(bad)
	})
	var letters []*kgo.Record
	for _, recs := range dlq {
		letters = append(letters, recs...)
	}
	if len(letters) != len(bad) {
		t.Fatalf("%d dead letters, want %d", len(letters), len(bad))
	}
	commit := header(c.recs[0], "position")[:16]
	for _, rec := range letters {
		pos := header(rec, "position")
		i := int(pos[len(pos)-1] - '1') // positions 1 to 3
		if i < 0 || i >= len(bad) || pos[:16] != commit {
			t.Errorf("dead letter at position %s, want one of the transaction committed at %s, indexes 1 to 3", pos, commit)
			continue
		}
		if string(rec.Value) != bad[i] || header(rec, "dlq_reason") != "content" || header(rec, "dlq_message_prefix") != "outbox" {
			t.Errorf("dead letter %d: value %q reason %q prefix %q; want the content %q, reason content, prefix outbox",
				i, rec.Value, header(rec, "dlq_reason"), header(rec, "dlq_message_prefix"), bad[i])
		}
		if !strings.Contains(header(rec, "dlq_error"), "message content is not an outbox event") {
			t.Errorf("dead letter %d: dlq_error %q, want it to say the content is no outbox event", i, header(rec, "dlq_error"))
		}
	}
	if n := p.logged("poison event set aside"); n != len(bad) {
		t.Errorf("relay logged %d poison events, want %d", n, len(bad))
	}
	if code := p.term(40 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
}

// TestFaultKill9Messages SIGKILLs the relay at least four times while
// writers emit most of their events as logical decoding messages, mixed
// with rows: nothing committed is lost, and each aggregate's events arrive
// in commit order.
func TestFaultKill9Messages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := newFaultRun(t, e)
	p := r.streaming(r.relay(), &workload{Rows: 2500, RollbackRatio: 0.1, HeaderRatio: 0.1, MessageRatio: 0.75, Pause: 40 * time.Millisecond})
	r.kill9Repeatedly(p, 4)
}
