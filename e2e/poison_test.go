package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/schema"
)

// poisonMaxBytes is the relay's batch limit in the poison tests: small, so
// that a row can be too large without being huge.
const poisonMaxBytes = 4096

// dlqTopic is the relay's default dead-letter topic.
const dlqTopic = "outbox-relay-dlq"

// Kinds of poison row, named by the dlq_reason the relay gives them.
const (
	poisonTopic       = "topic"        // the aggregate type makes an illegal topic name
	poisonAggregateID = "aggregate_id" // the aggregate ID is empty
	poisonSize        = "size"         // the payload exceeds the batch limit
)

var poisonKinds = []string{poisonTopic, poisonAggregateID, poisonSize}

// poisonRow returns a row of the given kind that Kafka can never accept,
// on the aggregate typ/aggregateID where the kind allows.
func poisonRow(kind, typ, aggregateID string) *schema.Message {
	m := &schema.Message{ID: uuid.NewString(), AggregateType: typ, AggregateID: aggregateID, EventType: "updated",
		Payload: []byte(fmt.Sprintf(`{"poison": %q}`, kind))}
	switch kind {
	case poisonTopic:
		m.AggregateType = "bad type!" // topic "outbox.bad type!"
	case poisonAggregateID:
		m.AggregateID = ""
	case poisonSize:
		m.Payload = []byte(fmt.Sprintf(`{"poison": %q, "pad": %q}`, kind, strings.Repeat("x", poisonMaxBytes+1000)))
	}
	return m
}

// poisonKind returns the kind of a row poisonRow made.
func poisonKind(m schema.Message) string {
	switch {
	case m.AggregateType == "bad type!":
		return poisonTopic
	case m.AggregateID == "":
		return poisonAggregateID
	default:
		return poisonSize
	}
}

// TestFaultPoisonRow writes rows Kafka can never accept (an illegal topic
// name, an empty aggregate ID, a payload over the batch limit) in the
// middle of writers' transactions.
func TestFaultPoisonRow(t *testing.T) {
	t.Parallel()
	t.Run("dlq", testPoisonDLQ)
	t.Run("halt", testPoisonHalt)
}

// testPoisonDLQ: under the default policy every poison row lands in the
// dead-letter topic with headers saying why, everything else is delivered
// in order, and the relay keeps running.
func testPoisonDLQ(t *testing.T) {
	e := newEnv(t)
	r := newFaultRun(t, e)
	began := time.Now()
	p := r.relay("OUTBOX_RELAY_KAFKA_MAX_MESSAGE_BYTES=" + strconv.Itoa(poisonMaxBytes))
	p.waitStreaming(time.Minute)
	var made atomic.Int64
	r.startWriters(&workload{Rows: 3000, RollbackRatio: 0.1, HeaderRatio: 0.1, Pause: 20 * time.Millisecond,
		Poison: func(rng *rand.Rand, typ, aggregateID string, _ bool) *schema.Message {
			if rng.Float64() >= 0.03 {
				return nil
			}
			return poisonRow(poisonKinds[made.Add(1)%int64(len(poisonKinds))], typ, aggregateID)
		}})
	r.check()

	poison := r.l.poisonRows()
	kinds := make(map[string]int)
	for _, row := range poison {
		kinds[poisonKind(row.msg)]++
	}
	t.Logf("%d poison rows committed, by kind %v; %d made in all, rolled back included", len(poison), kinds, made.Load())
	if len(kinds) != len(poisonKinds) {
		t.Fatalf("the writers committed poison rows of kinds %v, want all of %v: run again", kinds, poisonKinds)
	}
	want := make(map[string]*row, len(poison))
	for _, row := range poison {
		want[row.msg.ID] = row
	}
	dlq := consumeDLQ(t, e, func(got map[string][]*kgo.Record) bool {
		for id := range want {
			if len(got[id]) == 0 {
				return false
			}
		}
		return true
	})
	// Where each transaction's delivered rows say it committed.
	commitLSN := make(map[int]pglogrepl.LSN)
	for _, rec := range r.c.recs {
		if row := r.l.rows[header(rec, "id")]; row != nil {
			if pos, err := schema.ParsePosition(header(rec, "position")); err == nil {
				commitLSN[row.txn] = pos.CommitLSN
			}
		}
	}
	checked, dups := 0, 0
	for id, recs := range dlq {
		row := want[id]
		switch {
		case r.l.rolled[id]:
			t.Errorf("dead letter %s is a row of a rolled-back transaction", id)
			continue
		case row == nil:
			t.Errorf("dead letter %s (key %q, reason %q) is no poison row the writers committed", id, recs[0].Key, header(recs[0], "dlq_reason"))
			continue
		}
		dups += len(recs) - 1
		for _, rec := range recs {
			for _, problem := range checkDeadLetter(rec, row, commitLSN[row.txn], began) {
				t.Errorf("dead letter of poison row %s (%s) at %s/%d@%d: %s", id, poisonKind(row.msg), rec.Topic, rec.Partition, rec.Offset, problem)
			}
		}
		checked++
	}
	for id, row := range want {
		if len(dlq[id]) == 0 {
			t.Errorf("poison row %s (%s) is not in the dead-letter topic %s", id, poisonKind(row.msg), dlqTopic)
		}
	}
	t.Logf("dead-letter topic: %d of %d poison rows with the expected headers; %d duplicates", checked, len(want), dups)
	if n := p.logged("poison event set aside"); n < len(want) {
		t.Errorf("relay logged %d poison events set aside, want at least %d", n, len(want))
	}
	if !t.Failed() {
		r.stop(p)
	}
}

// checkDeadLetter returns what is wrong with rec, the dead letter of the
// poison row row, whose transaction committed at commitLSN (zero if no
// row of it arrived).
func checkDeadLetter(rec *kgo.Record, row *row, commitLSN pglogrepl.LSN, since time.Time) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	m, kind := row.msg, poisonKind(row.msg)
	if got := header(rec, "dlq_reason"); got != kind {
		bad("dlq_reason %q, want %q", got, kind)
	}
	if got := header(rec, "dlq_error"); !strings.Contains(got, m.ID) {
		bad("dlq_error %q does not name the event", got)
	}
	if n, err := strconv.Atoi(header(rec, "dlq_attempts")); err != nil || n < 1 {
		bad("dlq_attempts %q, want a count of at least 1", header(rec, "dlq_attempts"))
	}
	lsn, err := pglogrepl.ParseLSN(header(rec, "dlq_source_lsn"))
	switch {
	case err != nil:
		bad("dlq_source_lsn %q: %v", header(rec, "dlq_source_lsn"), err)
	case commitLSN != 0 && lsn != commitLSN:
		bad("dlq_source_lsn %s, but the other rows of its transaction carry commit LSN %s", lsn, commitLSN)
	}
	if pos, err := schema.ParsePosition(header(rec, "position")); err != nil {
		bad("position header: %v", err)
	} else if pos.CommitLSN != lsn || int(pos.Index) != row.index {
		bad("position %s, want %s/%d (its commit LSN and its index in the transaction)", pos, lsn, row.index)
	}
	if at, err := time.Parse(time.RFC3339Nano, header(rec, "dlq_time")); err != nil {
		bad("dlq_time %q: %v", header(rec, "dlq_time"), err)
	} else if at.Before(since.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
		bad("dlq_time %s is outside the test's run (since %s)", at, since.UTC().Format(time.RFC3339Nano))
	}
	if got := header(rec, "dlq_table"); !strings.Contains(got, "outbox") {
		bad("dlq_table %q, want the outbox table", got)
	}
	if got := header(rec, "event_type"); got != m.EventType {
		bad("event_type header %q, want %q", got, m.EventType)
	}
	if got := header(rec, "aggregate_type"); got != m.AggregateType {
		bad("aggregate_type header %q, want %q", got, m.AggregateType)
	}
	if string(rec.Key) != m.AggregateID {
		bad("key %q, want %q", rec.Key, m.AggregateID)
	}
	if kind == poisonSize {
		if len(rec.Value) != 0 || header(rec, "dlq_payload_omitted") != "true" {
			bad("value of %d bytes and dlq_payload_omitted %q, want no value and true", len(rec.Value), header(rec, "dlq_payload_omitted"))
		}
	} else if !sameJSON(rec.Value, m.Payload) {
		bad("value %s, want the payload %s", rec.Value, m.Payload)
	}
	return problems
}

// consumeDLQ reads e's dead-letter topic from the start until enough
// returns true or 30 seconds pass, and returns its records by id header.
func consumeDLQ(t *testing.T, e *env, enough func(map[string][]*kgo.Record) bool) map[string][]*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.broker.ListenAddrs()...),
		kgo.ConsumeTopics(dlqTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.MetadataMinAge(100*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := make(map[string][]*kgo.Record)
	for deadline := time.Now().Add(30 * time.Second); !enough(got) && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		for _, rec := range fs.Records() {
			id := header(rec, "id")
			got[id] = append(got[id], rec)
		}
	}
	return got
}

// testPoisonHalt: under the halt policy the relay exits non-zero at the
// poison row, saying which policy stopped it and what to do; the rows
// before it are delivered and nothing after it is confirmed. The relay
// halts again at every start with that policy. Restarted once with the
// dlq policy, as its message says, it sets the row aside and delivers
// every later row.
func testPoisonHalt(t *testing.T) {
	e := newEnv(t)
	r := newFaultRun(t, e)
	maxBytes := "OUTBOX_RELAY_KAFKA_MAX_MESSAGE_BYTES=" + strconv.Itoa(poisonMaxBytes)
	p := r.relay(maxBytes, "OUTBOX_RELAY_POISON_POLICY=halt")
	p.waitStreaming(time.Minute)
	var armed, fired atomic.Bool
	var poisonAt atomic.Int64 // when the poison row was made, Unix nanoseconds
	r.startWriters(&workload{Rows: 3000, RollbackRatio: 0.1, HeaderRatio: 0.1, Pause: 40 * time.Millisecond,
		Poison: func(_ *rand.Rand, typ, aggregateID string, rollback bool) *schema.Message {
			if rollback || !armed.Load() || !fired.CompareAndSwap(false, true) {
				return nil
			}
			poisonAt.Store(time.Now().UnixNano())
			return poisonRow(poisonSize, typ, aggregateID)
		}})

	time.Sleep(3 * time.Second)
	armed.Store(true)
	halted := haltsAtPoison(t, p, 30*time.Second)
	if len(r.l.poisonRows()) != 1 {
		t.Fatalf("the writers committed %d poison rows, want 1", len(r.l.poisonRows()))
	}
	poison := r.l.poisonRows()[0]
	t.Logf("relay halted %s after the poison row %s was written", ms(halted.Sub(time.Unix(0, poisonAt.Load()))), poison.msg.ID)
	confirmed := e.slotState(t).confirmed

	// What the halted relay delivered: read until nothing more comes.
	for quiet := 0; quiet < 2; {
		recs, err := r.c.c.poll(t.Context(), time.Second)
		if err != nil {
			t.Logf("consume: %v", err)
		}
		if len(recs) == 0 {
			quiet++
		}
		r.c.add(recs)
	}
	before := make(map[string]bool, len(r.c.ids))
	for id := range r.c.ids {
		before[id] = true
	}

	// PostgreSQL sends the poison row again at every start: the relay
	// halts again.
	p2 := r.relay(maxBytes, "OUTBOX_RELAY_POISON_POLICY=halt")
	haltsAtPoison(t, p2, 30*time.Second)
	if again := e.slotState(t).confirmed; again != confirmed {
		t.Errorf("the slot's confirmed position moved from %s to %s while a relay halted at the poison row again", confirmed, again)
	}

	r.waitWriters()
	p3 := r.relay(maxBytes) // the default policy, dlq
	p3.waitStreaming(time.Minute)
	rep := r.check()
	if rep.Missing > 0 {
		return
	}

	dlq := consumeDLQ(t, e, func(got map[string][]*kgo.Record) bool { return len(got[poison.msg.ID]) > 0 })
	recs := dlq[poison.msg.ID]
	if len(recs) == 0 {
		t.Fatalf("poison row %s is not in the dead-letter topic after a restart with the dlq policy; it holds %d records", poison.msg.ID, len(dlq))
	}
	commit, err := pglogrepl.ParseLSN(header(recs[0], "dlq_source_lsn"))
	if err != nil {
		t.Fatalf("dead letter's dlq_source_lsn: %v", err)
	}
	for _, problem := range checkDeadLetter(recs[0], poison, 0, r.began) {
		t.Errorf("dead letter of poison row %s: %s", poison.msg.ID, problem)
	}
	// The relay confirms the end of the last transaction it finished. With
	// concurrent writers that end can be exactly where the poison row's
	// commit record starts (the commit LSN), and PostgreSQL still decodes a
	// transaction whose commit record starts at the confirmed position: only
	// a confirmation past the commit LSN skips the poison row's transaction.
	if confirmed > commit {
		t.Errorf("after the halt the slot confirmed %s, past the poison row's commit %s: rows after it were confirmed", confirmed, commit)
	}
	t.Logf("after the halt the slot confirmed %s; the poison row's transaction commits at %s", confirmed, commit)

	// Rows before the poison row must have arrived before the restart.
	poisonPos := schema.Position{CommitLSN: commit, Index: uint32(poison.index)}
	var earlier, sameTxn, after int
	var late []string
	seen := make(map[string]bool)
	for _, rec := range r.c.recs {
		id := header(rec, "id")
		pos, err := schema.ParsePosition(header(rec, "position"))
		if err != nil || seen[id] || r.l.rows[id] == nil {
			continue
		}
		seen[id] = true
		switch {
		case pos.CommitLSN < poisonPos.CommitLSN || (pos.CommitLSN == poisonPos.CommitLSN && pos.Index < poisonPos.Index):
			earlier++
			if !before[id] {
				where := "an earlier transaction"
				if pos.CommitLSN == commit {
					where = "the poison row's transaction"
					sameTxn++
				}
				late = append(late, fmt.Sprintf("%s at %s (%s)", id, pos, where))
			}
		case before[id]:
			after++
		}
	}
	if len(late) > 0 {
		t.Errorf("%d of %d rows before the poison row (%d of them in its transaction) arrived only after the restart, e.g. %s",
			len(late), earlier, sameTxn, strings.Join(late[:min(5, len(late))], ", "))
	}
	t.Logf("before the restart: %d rows before the poison row delivered, %d rows after it delivered (unconfirmed)", earlier-len(late), after)
	if !t.Failed() {
		r.stop(p3)
	}
}

// haltsAtPoison waits for p to exit and checks that it failed, naming the
// halt policy and the way on; it returns when p exited.
func haltsAtPoison(t *testing.T, p *proc, timeout time.Duration) time.Time {
	t.Helper()
	code := p.waitExit(t, timeout, "a poison row was written under the halt policy")
	exited := time.Now()
	msg := lastLine(p.logText())
	t.Logf("relay with the halt policy exited %d: %s", code, msg)
	if code == 0 {
		t.Errorf("exit code 0 after halting at a poison row, want non-zero")
	}
	for _, want := range []string{"policy halt", "--poison-policy=dlq"} {
		if !strings.Contains(msg, want) {
			t.Errorf("last line of stderr lacks %q", want)
		}
	}
	return exited
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
