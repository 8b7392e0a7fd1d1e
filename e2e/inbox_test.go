package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kfake"
	"golang.org/x/sync/errgroup"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

// The inbox tests run the whole pipeline an application team builds: a
// writer service commits a business row and its outbox row in one
// transaction; the relay binary publishes the outbox rows; the sample
// consumer service, inbox/example/balance, built by the test, applies each
// event's effect (a balance change and a row in its effects log) in the
// transaction that records the event in its inbox table. Both services
// have databases of their own. Faults hit the relay and the consumer while
// the writers run; at the end the consumer's database must hold every
// committed event's effect exactly once, nothing of a rolled-back
// transaction, and each account's effects in the order they were committed.

// inboxTopic is the topic of the writer's account events: the relay's
// default template, outbox.{aggregate_type}.
const inboxTopic = "outbox.account"

// inboxRun is one inbox test's world.
type inboxRun struct {
	t      *testing.T
	e      *env   // the writer's database, the broker, the relay
	svcDSN string // the consumer service's database
	bin    string // the consumer service binary
	l      transferLedger

	relays    []*proc
	consumers []*proc
	scraped   map[*proc]inboxCounts // last metrics read from each consumer
	mu        sync.Mutex
}

// inboxCounts are the counters a consumer process exports.
type inboxCounts struct {
	processed, duplicates float64
}

// newInboxRun sets up the writer's database (outbox and business table),
// the consumer's database, a broker whose groups accept short session
// timeouts, and builds the consumer service.
func newInboxRun(t *testing.T) *inboxRun {
	t.Helper()
	e := newEnvOn(t, pgtest.NewDatabase(t),
		kfake.GroupMinSessionTimeout(500*time.Millisecond),
		kfake.SeedTopics(partitions, inboxTopic))
	r := &inboxRun{t: t, e: e, svcDSN: pgtest.NewDatabase(t), bin: buildBalance(t), scraped: map[*proc]inboxCounts{}}
	e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `CREATE TABLE transfers (
			id uuid PRIMARY KEY, account text NOT NULL, delta bigint NOT NULL, seq int NOT NULL)`)
		return err
	})
	return r
}

// buildBalance builds inbox/example/balance into a temporary directory,
// with the race detector when the test runs with it.
func buildBalance(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "balance")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	began := time.Now()
	if out, err := exec.Command("go", append(args, "../inbox/example/balance")...).CombinedOutput(); err != nil {
		t.Fatalf("build inbox/example/balance: %v\n%s", err, out)
	}
	t.Logf("built inbox/example/balance in %s", ms(time.Since(began)))
	return bin
}

// relay starts a relay and waits until it streams.
func (r *inboxRun) relay() *proc {
	r.t.Helper()
	p := r.e.start(faultSettings...)
	r.relays = append(r.relays, p)
	p.waitStreaming(time.Minute)
	return p
}

// consumer starts a process of the consumer service in group "balance",
// with a session timeout short enough that a SIGKILLed member's partitions
// move on within seconds, and scrapes its metrics until it exits.
func (r *inboxRun) consumer() *proc {
	r.t.Helper()
	cmd := exec.Command(r.bin)
	cmd.Env = append(cmd.Environ(),
		"BALANCE_PG_DSN="+r.svcDSN,
		"BALANCE_KAFKA_BROKERS="+r.e.brokers,
		"BALANCE_GROUP=balance",
		"BALANCE_TOPIC="+inboxTopic,
		"BALANCE_METRICS_ADDR=127.0.0.1:0",
		"BALANCE_KAFKA_SESSION_TIMEOUT=2s",
		"BALANCE_KAFKA_REBALANCE_TIMEOUT=5s",
	)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	p := &proc{t: r.t, cmd: cmd, done: make(chan struct{}), ready: make(chan struct{}), started: time.Now()}
	go p.read(stderr)
	r.t.Cleanup(func() { p.kill() })
	r.consumers = append(r.consumers, p)
	go r.scrapeUntilExit(p)
	return p
}

// Metric names of package inbox the tests read.
const (
	inboxProcessedMetric  = "outbox_inbox_processed_total"
	inboxDuplicatesMetric = "outbox_inbox_duplicates_total"
)

// scrapeUntilExit reads p's counters every 100ms while it runs. A process
// killed by SIGKILL loses what it counted in its last 100ms, so the sums
// are lower bounds.
func (r *inboxRun) scrapeUntilExit(p *proc) {
	for {
		select {
		case <-p.done:
			return
		case <-time.After(100 * time.Millisecond):
		}
		p.mu.Lock()
		addr := p.metrics
		p.mu.Unlock()
		if addr == "" {
			continue
		}
		mfs, err := scrapeQuiet(addr)
		if err != nil {
			continue
		}
		r.mu.Lock()
		r.scraped[p] = inboxCounts{processed: value(mfs, inboxProcessedMetric, nil), duplicates: value(mfs, inboxDuplicatesMetric, nil)}
		r.mu.Unlock()
	}
}

// counts returns what p counted when last scraped.
func (r *inboxRun) counts(p *proc) inboxCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.scraped[p]
}

// totals sums the last scrape of every consumer process.
func (r *inboxRun) totals() inboxCounts {
	r.mu.Lock()
	defer r.mu.Unlock()
	var sum inboxCounts
	for _, c := range r.scraped {
		sum.processed += max(c.processed, 0)
		sum.duplicates += max(c.duplicates, 0)
	}
	return sum
}

// waitApplying waits until the consumer process p has applied an event,
// failing the test after 20s.
func (r *inboxRun) waitApplying(p *proc) {
	r.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); r.counts(p).processed < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) || !p.running() {
			r.tails()
			r.t.Fatalf("consumer (pid %d) applied no event within 20s of its start: %v", p.cmd.Process.Pid, p.err)
		}
	}
}

// stop SIGTERMs p, which must still run, and expects exit code 0.
func (r *inboxRun) stop(p *proc, what string) {
	r.t.Helper()
	if !p.running() {
		r.t.Errorf("%s (pid %d) is no longer running: %v\n%s", what, p.cmd.Process.Pid, p.err, p.logText())
		return
	}
	if code := p.term(40 * time.Second); code != 0 {
		r.t.Errorf("%s: exit code after SIGTERM = %d, want 0\n%s", what, code, p.logText())
	}
}

// tails logs the end of every process's log.
func (r *inboxRun) tails() {
	r.t.Helper()
	for i, p := range r.consumers {
		lines := strings.Split(p.logText(), "\n")
		if len(lines) > 30 {
			lines = lines[len(lines)-30:]
		}
		r.t.Logf("consumer #%d, last lines:\n%s", i+1, strings.Join(lines, "\n"))
	}
	logTails(r.t, r.relays)
}

// transfers is the writer service's workload: Writers goroutines, each the
// only writer of its accounts (account a belongs to writer a%Writers), so
// that each account's commit order is known client-side. A transaction
// inserts 1 to 3 transfers, each a business row in transfers and an
// outbox row of aggregate type "account", keyed by the account, with the
// payload {"delta": n}; RollbackRatio of them are rolled back.
type transfers struct {
	Writers, Accounts int
	// Txns is how many transactions each writer commits or rolls back;
	// zero means until Stop.
	Txns int
	// Stop, once closed, ends each writer after its current transaction.
	Stop          <-chan struct{}
	RollbackRatio float64
	Pause         time.Duration
}

// transferLedger is what the writers did. Safe for concurrent use.
type transferLedger struct {
	mu        sync.Mutex
	committed map[string]transfer   // by event ID
	rolled    map[string]bool       // event IDs of rolled-back transfers
	accounts  map[string][]transfer // committed, per account in commit order
	txns      int
}

// transfer is one committed transfer.
type transfer struct {
	id, account string
	delta       int64
	seq         int // index in its account's commit order
}

func (w *transfers) run(ctx context.Context, dsn string, l *transferLedger) error {
	l.mu.Lock()
	l.committed, l.rolled, l.accounts = map[string]transfer{}, map[string]bool{}, map[string][]transfer{}
	l.mu.Unlock()
	g, ctx := errgroup.WithContext(ctx)
	for i := range w.Writers {
		g.Go(func() error { return w.writer(ctx, dsn, i, l) })
	}
	return g.Wait()
}

func (w *transfers) start(ctx context.Context, dsn string, l *transferLedger) <-chan error {
	done := make(chan error, 1)
	go func() { done <- w.run(ctx, dsn, l) }()
	return done
}

func (w *transfers) writer(ctx context.Context, dsn string, i int, l *transferLedger) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("writer %d: connect: %w", i, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
	var accounts []string
	for a := i; a < w.Accounts; a += w.Writers {
		accounts = append(accounts, fmt.Sprintf("acct-%03d", a))
	}
	next := map[string]int{}
	for n := 0; w.Txns == 0 || n < w.Txns; n++ {
		rollback := rng.Float64() < w.RollbackRatio
		pending := map[string]int{}
		var txn []transfer
		for range 1 + rng.IntN(3) {
			acct := accounts[rng.IntN(len(accounts))]
			txn = append(txn, transfer{id: uuid.NewString(), account: acct, delta: rng.Int64N(2001) - 1000, seq: next[acct] + pending[acct]})
			pending[acct]++
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			msgs := make([]schema.Message, len(txn))
			for j, tr := range txn {
				if _, err := tx.Exec(ctx, `INSERT INTO transfers (id, account, delta, seq) VALUES ($1, $2, $3, $4)`,
					tr.id, tr.account, tr.delta, tr.seq); err != nil {
					return err
				}
				msgs[j] = schema.Message{ID: tr.id, AggregateType: "account", AggregateID: tr.account, EventType: "transfer",
					Payload: fmt.Appendf(nil, `{"delta": %d}`, tr.delta)}
			}
			if err := schema.Insert(ctx, tx, msgs...); err != nil {
				return err
			}
			if rollback {
				return errRollback
			}
			return nil
		})
		switch {
		case rollback && errors.Is(err, errRollback):
			l.mu.Lock()
			for _, tr := range txn {
				l.rolled[tr.id] = true
			}
			l.mu.Unlock()
		case err != nil:
			return fmt.Errorf("writer %d: %w", i, err)
		default:
			for a, k := range pending {
				next[a] += k
			}
			l.mu.Lock()
			l.txns++
			for _, tr := range txn {
				l.committed[tr.id] = tr
				l.accounts[tr.account] = append(l.accounts[tr.account], tr)
			}
			l.mu.Unlock()
		}
		select {
		case <-time.After(w.Pause):
		case <-w.Stop:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// errRollback makes pgx.BeginFunc roll back.
var errRollback = errors.New("roll back on purpose")

// counts returns the committed and rolled-back transfers so far.
func (l *transferLedger) counts() (committed, rolled int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.committed), len(l.rolled)
}

// effect is one row of the consumer's effects log.
type effect struct {
	seq              int64
	account, eventID string
	position         string
}

// effects reads the consumer's effects log in the order applied.
func (r *inboxRun) effects() []effect {
	r.t.Helper()
	var out []effect
	queryOn(r.t, r.svcDSN, func(ctx context.Context, conn *pgx.Conn) error {
		out = out[:0]
		rows, err := conn.Query(ctx, `SELECT seq, account, event_id::text, position FROM effects ORDER BY seq`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e effect
			if err := rows.Scan(&e.seq, &e.account, &e.eventID, &e.position); err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	return out
}

// balances reads the consumer's balances.
func (r *inboxRun) balances() map[string]int64 {
	r.t.Helper()
	out := map[string]int64{}
	queryOn(r.t, r.svcDSN, func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT account, amount FROM balances`)
		if err != nil {
			return err
		}
		var acct string
		var amount int64
		_, err = pgx.ForEachRow(rows, []any{&acct, &amount}, func() error { out[acct] = amount; return nil })
		return err
	})
	return out
}

// queryOn runs fn on a new connection to the database at dsn.
func queryOn(t *testing.T, dsn string, fn func(ctx context.Context, conn *pgx.Conn) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", dsn, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := fn(ctx, conn); err != nil {
		t.Fatalf("query %s: %v", dsn, err)
	}
}

// waitApplied waits until the effects log holds as many rows as there are
// committed transfers, then a second more for late extras, and returns it.
func (r *inboxRun) waitApplied(timeout time.Duration) []effect {
	r.t.Helper()
	committed, _ := r.l.counts()
	began := time.Now()
	var effs []effect
	for deadline := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		effs = r.effects()
		if len(effs) >= committed {
			break
		}
		if time.Now().After(deadline) {
			r.t.Errorf("%d effects applied %s after the writers finished, want %d", len(effs), ms(timeout), committed)
			return effs
		}
	}
	r.t.Logf("all %d effects applied %s after the writers finished", committed, ms(time.Since(began)))
	time.Sleep(time.Second)
	return r.effects()
}

// check compares the consumer's database with the ledger: every committed
// transfer's effect exactly once, none of a rolled-back one, each account's
// effects in commit order and in position order, and every balance the sum
// of its account's committed deltas. It also compares the writer's own
// transfers table with the ledger.
func (r *inboxRun) check(effs []effect) {
	t := r.t
	t.Helper()
	l := &r.l
	l.mu.Lock()
	defer l.mu.Unlock()
	var problems []string
	report := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	seen := map[string]int{}
	perAccount := map[string][]effect{}
	dups, rolled, unknown := 0, 0, 0
	for _, e := range effs {
		seen[e.eventID]++
		switch {
		case seen[e.eventID] > 1:
			dups++
			report("event %s applied %d times (effect #%d)", e.eventID, seen[e.eventID], e.seq)
		case l.rolled[e.eventID]:
			rolled++
			report("event %s of a rolled-back transaction applied (effect #%d)", e.eventID, e.seq)
		case l.committed[e.eventID].id == "":
			unknown++
			report("event %s applied, never written (effect #%d)", e.eventID, e.seq)
		}
		perAccount[e.account] = append(perAccount[e.account], e)
	}
	missing := 0
	for id := range l.committed {
		if seen[id] == 0 {
			if missing++; missing <= 5 {
				report("committed event %s never applied", id)
			}
		}
	}
	disorder := 0
	for acct, want := range l.accounts {
		got := perAccount[acct]
		for i, e := range got {
			if i < len(want) && e.eventID != want[i].id {
				if disorder++; disorder <= 5 {
					report("account %s: effect %d is event %s, want %s (commit order)", acct, i, e.eventID, want[i].id)
				}
				break
			}
			if i > 0 && e.position <= got[i-1].position {
				if disorder++; disorder <= 5 {
					report("account %s: effect %d has position %s, not after %s", acct, i, e.position, got[i-1].position)
				}
				break
			}
		}
	}
	balances := r.balances()
	wrong := 0
	for acct, trs := range l.accounts {
		var sum int64
		for _, tr := range trs {
			sum += tr.delta
		}
		if balances[acct] != sum {
			if wrong++; wrong <= 5 {
				report("account %s: balance %d, want %d, the sum of its %d committed deltas", acct, balances[acct], sum, len(trs))
			}
		}
	}
	var written int
	r.e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT count(*) FROM transfers`).Scan(&written)
	})
	if written != len(l.committed) {
		report("the writer's transfers table holds %d rows, the ledger %d committed transfers", written, len(l.committed))
	}
	t.Logf("effects: %d applied for %d committed transfers in %d transactions (%d rolled back): %d duplicates, %d missing, %d of rolled-back transactions, %d unknown, %d accounts out of order, %d wrong balances",
		len(effs), len(l.committed), l.txns, len(l.rolled), dups, missing, rolled, unknown, disorder, wrong)
	if len(problems) > 0 {
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("... and %d more", len(problems)-20))
		}
		t.Errorf("the consumer's effects disagree with what was committed:\n%s", strings.Join(problems, "\n"))
	}
}

// logCounts logs what the consumer processes counted.
func (r *inboxRun) logCounts() {
	r.t.Helper()
	var per []string
	for i, p := range r.consumers {
		c := r.counts(p)
		per = append(per, fmt.Sprintf("#%d %.0f/%.0f", i+1, c.processed, c.duplicates))
	}
	sum := r.totals()
	warnings := 0
	for _, p := range r.consumers {
		for line := range strings.SplitSeq(p.logText(), "\n") {
			if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
				if warnings++; warnings <= 10 {
					r.t.Logf("consumer: %s", line)
				}
			}
		}
	}
	r.t.Logf("the consumers logged %d warnings and errors", warnings)
	r.t.Logf("the inbox skipped at least %.0f duplicates and applied at least %.0f events (per process, applied/skipped, as last scraped: %s)",
		sum.duplicates, sum.processed, strings.Join(per, ", "))
}

// TestInboxExactlyOnceThroughKills SIGKILLs the relay and the consumer
// service in turn, four times each, at random moments while writers run,
// restarting each at once. The relay delivers again what it had not
// confirmed, and the consumer receives again what it had applied but not
// committed the offset of; the inbox must skip all of it.
func TestInboxExactlyOnceThroughKills(t *testing.T) {
	t.Parallel()
	r := newInboxRun(t)
	rel := r.relay()
	con := r.consumer()
	stop := make(chan struct{})
	w := &transfers{Writers: 4, Accounts: 40, Stop: stop, RollbackRatio: 0.15, Pause: 25 * time.Millisecond}
	began := time.Now()
	done := w.start(t.Context(), r.e.dsn, &r.l)

	const kills = 4
	for i := 1; i <= kills; i++ {
		time.Sleep(500*time.Millisecond + rand.N(1500*time.Millisecond))
		rel.kill()
		committed, _ := r.l.counts()
		t.Logf("kill -9 relay #%d at %s, %d transfers committed", i, ms(time.Since(began)), committed)
		rel = r.relay()

		// Kill #3 comes at any moment, most likely while the process
		// joins the group; the others once it applies events.
		if i != 3 {
			r.waitApplying(con)
		}
		time.Sleep(300*time.Millisecond + rand.N(1500*time.Millisecond))
		applied := r.counts(con).processed
		con.kill()
		committed, _ = r.l.counts()
		t.Logf("kill -9 consumer #%d at %s, %d transfers committed, the process had applied at least %.0f", i, ms(time.Since(began)), committed, applied)
		con = r.consumer()
	}
	// The writers go on through every kill, and stop a moment after the
	// last.
	r.finish(stop, done, began, con, rel)
}

// TestInboxRebalance has a second consumer process join the group while
// writers run and leave it: once by SIGTERM (it leaves the group, and its
// partitions move back at once) and once by SIGKILL (its partitions move
// back when its session times out). Records a leaving member had applied
// but not committed are received again by the member that takes over; the
// inbox must skip them, and no account's effects may reorder while two
// members share the partitions.
func TestInboxRebalance(t *testing.T) {
	t.Parallel()
	r := newInboxRun(t)
	rel := r.relay()
	a := r.consumer()
	stop := make(chan struct{})
	w := &transfers{Writers: 4, Accounts: 40, Stop: stop, RollbackRatio: 0.15, Pause: 25 * time.Millisecond}
	began := time.Now()
	done := w.start(t.Context(), r.e.dsn, &r.l)

	join := func(i int) *proc {
		time.Sleep(1500 * time.Millisecond)
		b := r.consumer()
		t.Logf("consumer #%d joins at %s", i, ms(time.Since(began)))
		r.waitApplying(b)
		time.Sleep(2 * time.Second)
		return b
	}
	b := join(2)
	r.stop(b, "consumer #2")
	t.Logf("consumer #2 left by SIGTERM at %s, having applied %.0f events", ms(time.Since(began)), r.counts(b).processed)
	c := join(3)
	applied := r.counts(c).processed
	c.kill()
	t.Logf("consumer #3 killed at %s, having applied at least %.0f events", ms(time.Since(began)), applied)

	// The writers go on through both rebalances, and stop a moment after
	// consumer #3 is gone.
	r.finish(stop, done, began, a, rel)
}

// finish stops the writers half a second from now and waits for them,
// checks what the consumers applied against what the writers committed,
// and stops the last consumer and the relay.
func (r *inboxRun) finish(stop chan struct{}, done <-chan error, began time.Time, consumer, relay *proc) {
	t := r.t
	t.Helper()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("writers: %v", err)
	}
	committed, rolled := r.l.counts()
	t.Logf("writers: %d committed transfers, %d rolled back, in %s", committed, rolled, ms(time.Since(began)))

	r.check(r.waitApplied(time.Minute))
	r.logCounts()
	r.stop(consumer, "consumer")
	r.stop(relay, "relay")
	if t.Failed() {
		r.tails()
	}
}

// scrapeQuiet is scrape without a test: an error instead of a failure.
func scrapeQuiet(addr string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(resp.Body)
}
