package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/outbox-relay/outbox-relay/schema"
)

// workload writes outbox rows from concurrent writers whose per-aggregate
// commit order is known client-side: aggregate a belongs to writer
// a%Writers only, each writer commits its transactions one after another,
// and every row's payload carries its aggregate's sequence number, which
// advances only when the row's transaction commits.
//
// A test that injects faults runs it as TestSurvivesKill9 does: start a
// relay and a collector, w.start(ctx, dsn, &l), do harm while the writers
// run, wait for them, then l.drain(t, c, timeout, settle).assert(t,
// allowDuplicates). The drain reads every record from the start of the
// topics, so the collector may be created at any time before it.
type workload struct {
	// Writers is the number of goroutines, each with its own connection.
	// Zero means 8.
	Writers int
	// Aggregates is the number of aggregates, shared out among the
	// writers. Zero means 500.
	Aggregates int
	// Types are the aggregate types; aggregate a has Types[a%len(Types)].
	// Nil means order, customer and invoice.
	Types []string
	// Rows is how many rows the small transactions commit, at least,
	// spread over the writers.
	Rows int
	// Until, when not nil, keeps the writers at work past Rows until it is
	// closed, so that faults meant to hit running writers do, however
	// slowly a loaded machine lets the test reach them.
	Until <-chan struct{}
	// MaxTxnRows bounds the rows of a small transaction (1 to MaxTxnRows,
	// uniformly). Zero means 5.
	MaxTxnRows int
	// RollbackRatio is the share of small transactions rolled back after
	// their rows are inserted. Zero means none.
	RollbackRatio float64
	// HeaderRatio is the share of rows written with user headers.
	HeaderRatio float64
	// MessageRatio is the share of events written as transactional logical
	// decoding messages (schema.Emit) instead of rows, in their place
	// among the transaction's rows. Zero means none; one means only
	// messages.
	MessageRatio float64
	// BigTxnRows is the size of one big transaction writer 0 commits when
	// it is half done, on its own aggregates, while the others write.
	// Zero means none.
	BigTxnRows int
	// Pause is how long each writer sleeps between transactions, to make
	// the workload last. Zero means no pause.
	Pause time.Duration
	// Seed makes the workload reproducible; zero picks one at random.
	Seed uint64
	// Reconnect makes a writer whose transaction fails reconnect and go
	// on, as an application rides out a database restart, instead of
	// ending the workload. A transaction that failed before its commit
	// counts as rolled back; one whose Commit returned an error counts as
	// in doubt: it need not arrive, and may. A writer gives up when it
	// cannot commit for a minute.
	Reconnect bool
	// Poison, if set, is asked once per small transaction for a row Kafka
	// can never accept, given one of the transaction's aggregates and
	// whether the transaction will be rolled back; a non-nil row is
	// inserted at a random place among the transaction's rows, by plain
	// SQL so that schema.Insert's checks do not refuse it. The ledger keeps
	// poison rows apart: they must not reach the outbox topics, and they
	// hold their place in their transaction's positions.
	Poison func(rng *rand.Rand, typ, aggregateID string, rollback bool) *schema.Message
}

func (w *workload) defaults() {
	if w.Writers == 0 {
		w.Writers = 8
	}
	if w.Aggregates == 0 {
		w.Aggregates = 500
	}
	if w.Types == nil {
		w.Types = []string{"order", "customer", "invoice"}
	}
	if w.MaxTxnRows == 0 {
		w.MaxTxnRows = 5
	}
	if w.Seed == 0 {
		w.Seed = rand.Uint64()
	}
}

// going reports whether Until keeps the writers at work.
func (w *workload) going() bool {
	if w.Until == nil {
		return false
	}
	select {
	case <-w.Until:
		return false
	default:
		return true
	}
}

// aggregateID names aggregate a.
func (w *workload) aggregateID(a int) (typ, id string) {
	typ = w.Types[a%len(w.Types)]
	return typ, fmt.Sprintf("%s-%04d", typ, a)
}

// payload is the body of every row the workload writes.
type payload struct {
	Seq  int      `json:"seq"`
	W    int      `json:"w"`
	Agg  string   `json:"agg"`
	Txn  int      `json:"txn"`
	Note string   `json:"note"`
	Tags []string `json:"tags,omitempty"`
}

// run writes the workload into the database at dsn, recording every row
// in l, and returns when every writer is done or one failed. A commit
// that fails is an error: the workload does not guess its outcome.
func (w *workload) run(ctx context.Context, dsn string, l *ledger) error {
	w.defaults()
	l.init(w)
	g, ctx := errgroup.WithContext(ctx)
	for i := range w.Writers {
		g.Go(func() error { return w.writer(ctx, dsn, i, l) })
	}
	return g.Wait()
}

// start runs the workload in the background; the channel receives its
// result.
func (w *workload) start(ctx context.Context, dsn string, l *ledger) <-chan error {
	done := make(chan error, 1)
	go func() { done <- w.run(ctx, dsn, l) }()
	return done
}

func (w *workload) writer(ctx context.Context, dsn string, i int, l *ledger) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("writer %d: connect: %w", i, err)
	}
	defer func() { conn.Close(context.WithoutCancel(ctx)) }()
	lastCommit := time.Now()

	rng := rand.New(rand.NewPCG(w.Seed, uint64(i)))
	var aggs []int
	for a := i; a < w.Aggregates; a += w.Writers {
		aggs = append(aggs, a)
	}
	if len(aggs) == 0 {
		return nil
	}
	next := make(map[int]int) // committed rows per aggregate: the next seq
	quota := (w.Rows + w.Writers - 1) / w.Writers
	bigPending := i == 0 && w.BigTxnRows > 0
	written, txnNo := 0, 0
	for written < quota || bigPending || w.going() {
		n := 1 + rng.IntN(w.MaxTxnRows)
		rollback := rng.Float64() < w.RollbackRatio
		big := bigPending && written >= quota/2
		if big {
			n, rollback, bigPending = w.BigTxnRows, false, false
		}
		txnNo++
		pending := make(map[int]int)
		msgs := make([]schema.Message, n)
		aggOf := make([]int, n)
		for j := range msgs {
			a := aggs[rng.IntN(len(aggs))]
			seq := next[a] + pending[a]
			pending[a]++
			typ, id := w.aggregateID(a)
			p := payload{Seq: seq, W: i, Agg: id, Txn: txnNo, Note: "row " + fmt.Sprint(j)}
			if rng.IntN(4) == 0 {
				p.Note = "naïve café ✓"
				p.Tags = []string{"a", "b b", `quote"d`}
			}
			body, err := json.Marshal(p)
			if err != nil {
				return err
			}
			ev := "updated"
			if seq == 0 {
				ev = "created"
			}
			msgs[j] = schema.Message{ID: uuid.NewString(), AggregateType: typ, AggregateID: id, EventType: ev, Payload: body}
			if rng.Float64() < w.HeaderRatio {
				msgs[j].Headers = map[string]string{
					"trace_id": msgs[j].ID[:8],
					"writer":   fmt.Sprintf("w%d", i),
					"lang":     "grüße",
				}
			}
			aggOf[j] = a
		}
		var emitted []bool // set for the events written as messages
		if w.MessageRatio > 0 {
			emitted = make([]bool, n)
			for j := range emitted {
				emitted[j] = rng.Float64() < w.MessageRatio
			}
		}
		var poison []bool
		if w.Poison != nil && !big {
			typ, id := w.aggregateID(aggOf[rng.IntN(n)])
			if pm := w.Poison(rng, typ, id, rollback); pm != nil {
				k := rng.IntN(n + 1)
				msgs = slices.Insert(msgs, k, *pm)
				poison = make([]bool, len(msgs))
				poison[k] = true
				if emitted != nil {
					emitted = slices.Insert(emitted, k, false)
				}
			}
		}
		if err := w.transact(ctx, conn, msgs, poison, emitted, rollback); err != nil {
			var ce *commitError
			switch {
			case !w.Reconnect || ctx.Err() != nil:
				return fmt.Errorf("writer %d, transaction %d of %d rows: %w", i, txnNo, n, err)
			case time.Since(lastCommit) > time.Minute:
				return fmt.Errorf("writer %d: no commit for %s; last error, transaction %d: %w", i, time.Since(lastCommit).Round(time.Second), txnNo, err)
			case errors.As(err, &ce):
				l.inDoubt(msgs)
			default:
				l.rolledBack(msgs)
			}
			if conn, err = w.reconnect(ctx, dsn, conn); err != nil {
				return fmt.Errorf("writer %d: %w", i, err)
			}
			l.reconnected()
			continue
		}
		if rollback {
			l.rolledBack(msgs)
		} else {
			for a, k := range pending {
				next[a] += k
			}
			l.commit(i, msgs, poison)
			lastCommit = time.Now()
			if !big {
				written += n
			}
		}
		if w.Pause > 0 {
			select {
			case <-time.After(w.Pause):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// commitError reports a transaction whose Commit failed: the writer cannot
// tell whether it committed.
type commitError struct{ err error }

func (e *commitError) Error() string { return "commit: " + e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

// transact writes msgs in one transaction; the rows poison marks go in by
// plain SQL, and the events emitted marks as logical decoding messages.
func (w *workload) transact(ctx context.Context, conn *pgx.Conn, msgs []schema.Message, poison, emitted []bool, rollback bool) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	marked := func(m []bool, i int) bool { return m != nil && m[i] }
	for len(msgs) > 0 {
		// A run of events written the same way.
		n := 1
		for n < len(msgs) && !marked(poison, 0) && !marked(poison, n) && marked(emitted, n) == marked(emitted, 0) {
			n++
		}
		switch {
		case marked(poison, 0):
			err = insertRaw(ctx, tx, msgs[0])
		case marked(emitted, 0):
			err = schema.Emit(ctx, tx, msgs[:n]...)
		default:
			err = schema.Insert(ctx, tx, msgs[:n]...)
		}
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return err
		}
		msgs = msgs[n:]
		if poison != nil {
			poison = poison[n:]
		}
		if emitted != nil {
			emitted = emitted[n:]
		}
	}
	if rollback {
		return tx.Rollback(ctx)
	}
	if err := tx.Commit(ctx); err != nil {
		return &commitError{err}
	}
	return nil
}

// insertRaw inserts m into the default outbox table as it is: no ID is
// generated and nothing is checked.
func insertRaw(ctx context.Context, db schema.Execer, m schema.Message) error {
	var headers any
	if m.Headers != nil {
		b, err := json.Marshal(m.Headers)
		if err != nil {
			return err
		}
		headers = string(b)
	}
	_, err := db.Exec(ctx, `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, headers)
		VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)`,
		m.ID, m.AggregateType, m.AggregateID, m.EventType, string(m.Payload), headers)
	if err != nil {
		return fmt.Errorf("insert row %s by plain SQL: %w", m.ID, err)
	}
	return nil
}

// reconnect closes conn and connects again, retrying until ctx ends or a
// minute passes.
func (w *workload) reconnect(ctx context.Context, dsn string, conn *pgx.Conn) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	conn.Close(cctx)
	cancel()
	deadline := time.Now().Add(time.Minute)
	wait := 50 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := pgx.Connect(cctx, dsn)
		cancel()
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("reconnect: %w", err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
		wait = min(2*wait, time.Second)
	}
}

// ledger records what the workload wrote: every committed row, the rows of
// rolled-back transactions, and the commit order per aggregate and per
// writer. It is safe for concurrent use.
type ledger struct {
	mu         sync.Mutex
	rows       map[string]*row   // committed rows by ID
	rolled     map[string]bool   // IDs of rolled-back rows
	doubt      map[string]bool   // IDs of rows whose Commit failed
	poison     map[string]*row   // committed poison rows by ID
	aggregates map[string][]*row // committed rows per aggregate ID, in commit order
	txns       [][]*row          // committed transactions, rows in insertion order
	writerTxns [][]int           // per writer, indices into txns in commit order
	reconnects int               // writers' reconnections (Reconnect)
}

// row is one committed outbox row.
type row struct {
	msg   schema.Message
	seq   int // index in its aggregate's commit order
	txn   int // index into ledger.txns
	index int // row index within its transaction
}

func (l *ledger) init(w *workload) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rows != nil {
		return
	}
	l.rows = make(map[string]*row)
	l.rolled = make(map[string]bool)
	l.doubt = make(map[string]bool)
	l.poison = make(map[string]*row)
	l.aggregates = make(map[string][]*row)
	l.writerTxns = make([][]int, w.Writers)
}

func (l *ledger) committed(writer int, msgs []schema.Message) {
	l.commit(writer, msgs, nil)
}

// commit records a committed transaction; the rows poison marks are
// poison rows, which hold their index but are not expected to arrive.
func (l *ledger) commit(writer int, msgs []schema.Message, poison []bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := len(l.txns)
	rs := make([]*row, len(msgs))
	for j, m := range msgs {
		r := &row{msg: m, seq: -1, txn: t, index: j}
		if poison != nil && poison[j] {
			l.poison[m.ID] = r
		} else {
			r.seq = len(l.aggregates[m.AggregateID])
			l.rows[m.ID] = r
			l.aggregates[m.AggregateID] = append(l.aggregates[m.AggregateID], r)
		}
		rs[j] = r
	}
	l.txns = append(l.txns, rs)
	l.writerTxns[writer] = append(l.writerTxns[writer], t)
}

// inDoubt records the rows of a transaction whose Commit failed.
func (l *ledger) inDoubt(msgs []schema.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range msgs {
		l.doubt[m.ID] = true
	}
}

func (l *ledger) reconnected() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reconnects++
}

// faults returns the numbers of rows in doubt and of writer reconnections.
func (l *ledger) faults() (inDoubt, reconnects int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.doubt), l.reconnects
}

// poisonRows returns the committed poison rows.
func (l *ledger) poisonRows() []*row {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Collect(maps.Values(l.poison))
}

func (l *ledger) rolledBack(msgs []schema.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range msgs {
		l.rolled[m.ID] = true
	}
}

// counts returns the numbers of committed and rolled-back rows and of
// committed transactions.
func (l *ledger) counts() (committed, rolledBack, txns int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.rows), len(l.rolled), len(l.txns)
}

// fetcher returns the records that arrived since its last call, waiting up
// to d for some: a Kafka consumer, or a reader of another broker
// (sinks_test.go).
type fetcher interface {
	poll(ctx context.Context, d time.Duration) ([]*kgo.Record, error)
}

// collector keeps every record a fetcher fetched, in consumption order.
type collector struct {
	c    fetcher
	recs []*kgo.Record
	ids  map[string]int // records per id header
}

func newCollector(c fetcher) *collector {
	return &collector{c: c, ids: make(map[string]int)}
}

func (c *collector) add(recs []*kgo.Record) {
	for _, r := range recs {
		c.recs = append(c.recs, r)
		c.ids[header(r, "id")]++
	}
}

// deliveries returns how many ids arrived once, twice, and so on.
func (c *collector) deliveries() map[int]int {
	h := make(map[int]int)
	for _, n := range c.ids {
		h[n]++
	}
	return h
}

// header returns the value of r's first header named key, or "".
func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// drain consumes until every row committed in l has arrived or timeout
// passes, then for settle more (to catch late duplicates), and checks
// what arrived. The writers must be done.
func (l *ledger) drain(t *testing.T, c *collector, timeout, settle time.Duration) *report {
	t.Helper()
	l.mu.Lock()
	want := len(l.rows)
	l.mu.Unlock()
	seen := func() int {
		l.mu.Lock()
		defer l.mu.Unlock()
		n := 0
		for id := range c.ids {
			if l.rows[id] != nil {
				n++
			}
		}
		return n
	}
	start := time.Now()
	deadline := start.Add(timeout)
	nextLog := start.Add(15 * time.Second)
	got := seen()
	for got < want && time.Now().Before(deadline) {
		recs, err := c.c.poll(t.Context(), time.Second)
		if err != nil {
			t.Logf("consume: %v", err)
		}
		c.add(recs)
		got = seen()
		if time.Now().After(nextLog) {
			t.Logf("drain: %d of %d committed rows after %s (%d records)", got, want, time.Since(start).Round(time.Second), len(c.recs))
			nextLog = time.Now().Add(15 * time.Second)
		}
	}
	if got == want {
		t.Logf("drain: all %d committed rows arrived %s after the writers finished", want, time.Since(start).Round(100*time.Millisecond))
	}
	for end := time.Now().Add(settle); time.Now().Before(end); {
		recs, err := c.c.poll(t.Context(), time.Until(end))
		if err != nil {
			t.Logf("consume: %v", err)
		}
		c.add(recs)
	}
	r := l.check(c.recs)
	if r.Missing > 0 {
		r.Problems = append([]string{fmt.Sprintf("gave up after %s with %d of %d committed rows (%d records)", timeout, got, want, len(c.recs))}, r.Problems...)
	}
	return r
}

// report is what check found in the consumed records.
type report struct {
	Records        int // records consumed
	Rows           int // distinct committed rows among them
	Duplicates     int // records beyond the first of each row
	Missing        int // committed rows that never arrived
	OutOfOrder     int // first deliveries of an aggregate behind one committed later
	RolledBackSeen int // records of rolled-back rows
	Unknown        int // records with a missing or unknown id header
	// InDoubt counts records of rows whose Commit failed (see
	// workload.Reconnect): they may arrive or not, and are not checked.
	InDoubt int
	// PositionDisorder counts first deliveries whose position header is not
	// greater than the previous first delivery's on the same partition,
	// and rows whose positions contradict the commit order the writers saw.
	PositionDisorder int
	// Mismatches counts records whose key, value, topic, partition or
	// headers differ from the row, or whose replay changed its position.
	Mismatches int
	// Problems describes the first few findings of each kind.
	Problems []string
}

func (r *report) String() string {
	return fmt.Sprintf("records=%d rows=%d duplicates=%d missing=%d out_of_order=%d rolled_back_seen=%d unknown=%d in_doubt=%d position_disorder=%d mismatches=%d",
		r.Records, r.Rows, r.Duplicates, r.Missing, r.OutOfOrder, r.RolledBackSeen, r.Unknown, r.InDoubt, r.PositionDisorder, r.Mismatches)
}

// ok reports whether nothing is wrong; duplicates are wrong only when
// allowDuplicates is false.
func (r *report) ok(allowDuplicates bool) bool {
	return r.Missing == 0 && r.OutOfOrder == 0 && r.RolledBackSeen == 0 && r.Unknown == 0 &&
		r.PositionDisorder == 0 && r.Mismatches == 0 && (allowDuplicates || r.Duplicates == 0)
}

// assert fails t unless r is ok.
func (r *report) assert(t *testing.T, allowDuplicates bool) {
	t.Helper()
	if !r.ok(allowDuplicates) {
		t.Errorf("delivery check failed: %s\n%s", r, strings.Join(r.Problems, "\n"))
	}
}

// problemsPerKind caps the descriptions kept of each kind of finding.
const problemsPerKind = 5

type problems struct {
	perKind map[string]int
	list    []string
}

func (p *problems) add(kind, format string, args ...any) {
	if p.perKind == nil {
		p.perKind = make(map[string]int)
	}
	p.perKind[kind]++
	if p.perKind[kind] <= problemsPerKind {
		p.list = append(p.list, kind+": "+fmt.Sprintf(format, args...))
	}
}

// check compares recs, in consumption order, with the ledger.
func (l *ledger) check(recs []*kgo.Record) *report {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := &report{Records: len(recs)}
	var p problems

	type placement struct {
		topic     string
		partition int32
	}
	first := make(map[string]*kgo.Record, len(l.rows))
	positions := make(map[string]schema.Position, len(l.rows))
	lastSeq := make(map[string]int)       // per aggregate, the greatest seq first-delivered
	lastPos := make(map[placement]string) // per partition, the last first-delivered position
	home := make(map[string]placement)    // per aggregate, where its records went
	for _, rec := range recs {
		id := header(rec, "id")
		if l.rolled[id] {
			r.RolledBackSeen++
			p.add("rolled back", "row %s of a rolled-back transaction arrived at %s/%d@%d", id, rec.Topic, rec.Partition, rec.Offset)
			continue
		}
		if l.doubt[id] {
			r.InDoubt++
			continue
		}
		if pr := l.poison[id]; pr != nil {
			r.Mismatches++
			p.add("poison", "poison row %s (aggregate type %q, aggregate id %q, %d payload bytes) arrived at %s/%d@%d",
				id, pr.msg.AggregateType, pr.msg.AggregateID, len(pr.msg.Payload), rec.Topic, rec.Partition, rec.Offset)
			continue
		}
		row := l.rows[id]
		if row == nil {
			r.Unknown++
			p.add("unknown", "record %s/%d@%d key %q has id header %q, which no writer committed", rec.Topic, rec.Partition, rec.Offset, rec.Key, id)
			continue
		}
		pos, err := schema.ParsePosition(header(rec, "position"))
		if err != nil {
			r.Mismatches++
			p.add("position header", "row %s: %v", id, err)
		} else if text := header(rec, "position"); text != pos.String() {
			r.Mismatches++
			p.add("position header", "row %s: position %q is not in canonical form %q", id, text, pos.String())
		}
		if msg := compare(rec, row.msg); msg != "" {
			r.Mismatches++
			p.add("content", "row %s at %s/%d@%d: %s", id, rec.Topic, rec.Partition, rec.Offset, msg)
		}
		agg := row.msg.AggregateID
		pl := placement{rec.Topic, rec.Partition}
		if h, ok := home[agg]; !ok {
			home[agg] = pl
		} else if h != pl {
			r.Mismatches++
			p.add("partition", "aggregate %s: row %s (seq %d) went to %s/%d, earlier rows to %s/%d", agg, id, row.seq, pl.topic, pl.partition, h.topic, h.partition)
		}
		if f := first[id]; f != nil {
			r.Duplicates++
			if prev := positions[id]; err == nil && prev != pos {
				r.Mismatches++
				p.add("replay position", "row %s arrived again with position %s, first with %s", id, pos, prev)
			}
			continue
		}
		first[id] = rec
		positions[id] = pos
		r.Rows++
		if last, ok := lastSeq[agg]; ok && row.seq < last {
			r.OutOfOrder++
			p.add("order", "aggregate %s: seq %d (row %s) arrived after seq %d for the first time", agg, row.seq, id, last)
		} else {
			lastSeq[agg] = row.seq
		}
		if err == nil {
			text := pos.String()
			if last, ok := lastPos[pl]; ok && text <= last {
				r.PositionDisorder++
				p.add("partition order", "%s/%d@%d: row %s has position %s, not after the previous first delivery's %s", pl.topic, pl.partition, rec.Offset, id, text, last)
			}
			lastPos[pl] = text
		}
	}
	var missing []string
	for id := range l.rows {
		if first[id] == nil {
			missing = append(missing, id)
		}
	}
	r.Missing = len(missing)
	sort.Strings(missing)
	for _, id := range missing {
		row := l.rows[id]
		p.add("missing", "row %s (aggregate %s seq %d, transaction of %d rows, row %d)", id, row.msg.AggregateID, row.seq, len(l.txns[row.txn]), row.index)
	}

	// Positions against the commit order the writers saw: the rows of a
	// transaction share its commit LSN and are numbered in insertion order,
	// and a writer's transactions commit one after another.
	for w, txns := range l.writerTxns {
		var prev schema.Position
		for _, t := range txns {
			var lsn schema.Position
			for j, row := range l.txns[t] {
				pos, ok := positions[row.msg.ID]
				if !ok {
					continue
				}
				if int(pos.Index) != j {
					r.PositionDisorder++
					p.add("transaction", "row %s is row %d of its transaction, position %s says %d", row.msg.ID, j, pos, pos.Index)
				}
				if lsn.CommitLSN == 0 {
					lsn = pos
				} else if pos.CommitLSN != lsn.CommitLSN {
					r.PositionDisorder++
					p.add("transaction", "rows %s and %s of one transaction have commit LSNs %s and %s", l.txns[t][0].msg.ID, row.msg.ID, lsn.CommitLSN, pos.CommitLSN)
				}
			}
			if lsn.CommitLSN == 0 {
				continue
			}
			if prev.CommitLSN != 0 && lsn.CommitLSN <= prev.CommitLSN {
				r.PositionDisorder++
				p.add("commit order", "writer %d: transaction committed after one at %s has commit LSN %s", w, prev.CommitLSN, lsn.CommitLSN)
			}
			prev = lsn
		}
	}
	r.Problems = p.list
	return r
}

// compare returns what differs between rec and the row m, or "".
func compare(rec *kgo.Record, m schema.Message) string {
	var diffs []string
	if want := "outbox." + m.AggregateType; rec.Topic != want {
		diffs = append(diffs, fmt.Sprintf("topic %q, want %q", rec.Topic, want))
	}
	if string(rec.Key) != m.AggregateID {
		diffs = append(diffs, fmt.Sprintf("key %q, want %q", rec.Key, m.AggregateID))
	}
	if !sameJSON(rec.Value, m.Payload) {
		diffs = append(diffs, fmt.Sprintf("value %s, want %s", rec.Value, m.Payload))
	}
	want := []kgo.RecordHeader{
		{Key: "id", Value: []byte(m.ID)},
		{Key: "event_type", Value: []byte(m.EventType)},
		{Key: "aggregate_type", Value: []byte(m.AggregateType)},
	}
	if len(rec.Headers) < 4 {
		return strings.Join(append(diffs, fmt.Sprintf("%d headers, want at least 4", len(rec.Headers))), "; ")
	}
	for i, h := range want {
		if got := rec.Headers[i]; got.Key != h.Key || !bytes.Equal(got.Value, h.Value) {
			diffs = append(diffs, fmt.Sprintf("header %d is %s=%q, want %s=%q", i, got.Key, got.Value, h.Key, h.Value))
		}
	}
	if rec.Headers[3].Key != "position" {
		diffs = append(diffs, fmt.Sprintf("header 3 is %q, want position", rec.Headers[3].Key))
	}
	user := make(map[string]string)
	for _, h := range rec.Headers[4:] {
		user[h.Key] = string(h.Value)
	}
	if len(m.Headers) != len(user) || (len(user) > 0 && !reflect.DeepEqual(user, m.Headers)) {
		diffs = append(diffs, fmt.Sprintf("user headers %v (keys %v), want %v", user, slices.Sorted(maps.Keys(user)), m.Headers))
	}
	return strings.Join(diffs, "; ")
}

// sameJSON reports whether a and b hold equal JSON values: PostgreSQL's
// jsonb reorders keys and respaces.
func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
