package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/internal/state"
	"github.com/outbox-relay/outbox-relay/schema"
)

// pruneMsg is one outbox row of the prune tests, identified by its
// aggregate ID.
func pruneMsg(typ, id string) schema.Message {
	return schema.Message{AggregateType: typ, AggregateID: id, EventType: "e", Payload: []byte(`{}`)}
}

// tableIDs returns the aggregate IDs in the outbox table.
func tableIDs(t *testing.T, conn *pgx.Conn) map[string]bool {
	t.Helper()
	rows, err := conn.Query(t.Context(), "SELECT aggregate_id FROM outbox")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out
}

func slotConfirmed(t *testing.T, conn *pgx.Conn, slot string) (pglogrepl.LSN, bool) {
	t.Helper()
	var lsn pglogrepl.LSN
	var active bool
	if err := conn.QueryRow(t.Context(), `SELECT confirmed_flush_lsn, active FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&lsn, &active); err != nil {
		t.Fatal(err)
	}
	return lsn, active
}

func TestPruneRefusesWithoutHorizon(t *testing.T) {
	e := newEnv(t)
	r := runCmd(t, e.command(t.Context(), "prune", "--older-than", "0s"), 30*time.Second)
	if r.code == 0 || !strings.Contains(r.stderr, "no confirmed horizon is recorded yet") || !strings.Contains(r.stderr, "outbox-relay run") {
		t.Errorf("prune before any horizon: exit %d, stderr %q; want non-zero, saying no horizon is recorded and to run the relay", r.code, r.stderr)
	}
	for _, args := range [][]string{{"prune"}, {"prune", "--older-than", "7x"}, {"prune", "--older-than", "1d", "--batch", "0"}} {
		if r := runCmd(t, e.command(t.Context(), args...), 30*time.Second); r.code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)\n%s", args, r.code, r.stderr)
		}
	}
}

// TestPruneNeverDeletesUnconfirmed runs random writers (committing,
// rolling back, holding transactions open, writing in subtransactions)
// while the relay runs, kills the relay mid-stream, and prunes with
// --older-than 0s. Every row prune deleted must belong to a transaction the
// slot had confirmed: its commit LSN, read from the record's position header
// once a restarted relay has delivered everything, lies below the slot's
// confirmed position at the kill. Rounds repeat on one table.
func TestPruneNeverDeletesUnconfirmed(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("OUTBOX_RELAY_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (OUTBOX_RELAY_TEST_SEED=%d repeats this run)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	e := newEnv(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	var mu sync.Mutex
	committed := map[string]bool{} // aggregate IDs of committed rows
	var seq atomic.Int64
	next := func(w int) string { return fmt.Sprintf("w%d-%d", w, seq.Add(1)) }

	// writer runs random transactions until stop closes; open transactions
	// it leaves are returned, still open, for the caller to commit later.
	writer := func(w int, r *rand.Rand, stop <-chan struct{}) ([]pgx.Tx, error) {
		c, err := pgx.Connect(ctx, e.dsn)
		if err != nil {
			return nil, err
		}
		var open []pgx.Tx
		for {
			select {
			case <-stop:
				if c != nil {
					c.Close(context.Background())
				}
				return open, nil
			default:
			}
			if c == nil {
				// The last connection holds an open transaction: use a new one.
				if c, err = pgx.Connect(ctx, e.dsn); err != nil {
					return open, err
				}
			}
			tx, err := c.Begin(ctx)
			if err != nil {
				return open, err
			}
			var ids []string
			for range 1 + r.IntN(3) {
				id := next(w)
				if r.IntN(4) == 0 { // in a subtransaction
					if _, err := tx.Exec(ctx, "SAVEPOINT s"); err != nil {
						return open, err
					}
					if err := schema.Insert(ctx, tx, pruneMsg("prune", id)); err != nil {
						return open, err
					}
					if _, err := tx.Exec(ctx, "RELEASE SAVEPOINT s"); err != nil {
						return open, err
					}
				} else if err := schema.Insert(ctx, tx, pruneMsg("prune", id)); err != nil {
					return open, err
				}
				ids = append(ids, id)
			}
			switch k := r.IntN(20); {
			case k == 0 && len(open) < 2: // held open across the kill and the prune
				open = append(open, tx)
				c = nil // busy until the caller commits tx
				mu.Lock()
				for _, id := range ids {
					committed[id] = true // committed later, before the check
				}
				mu.Unlock()
				continue
			case k < 4:
				if err := tx.Rollback(ctx); err != nil {
					return open, err
				}
			default:
				if err := tx.Commit(ctx); err != nil {
					return open, err
				}
				mu.Lock()
				for _, id := range ids {
					committed[id] = true
				}
				mu.Unlock()
			}
			if r.IntN(3) == 0 {
				time.Sleep(time.Duration(r.IntN(5)) * time.Millisecond)
			}
		}
	}

	var deletions []deletion
	const rounds, writers = 3, 3
	for round := range rounds {
		prev, hadPrev, err := state.LoadHorizon(ctx, conn, schema.DefaultTable, e.slot)
		if err != nil {
			t.Fatalf("round %d: load the last round's horizon: %v", round, err)
		}
		p := e.start("OUTBOX_RELAY_STATUS_INTERVAL=200ms")
		p.waitStreaming(time.Minute)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		opens := make([][]pgx.Tx, writers)
		errs := make([]error, writers)
		for w := range writers {
			wr := rand.New(rand.NewPCG(rng.Uint64(), uint64(w)))
			wg.Go(func() { opens[w], errs[w] = writer(w, wr, stop) })
		}
		// Kill the relay mid-stream, writers still going, once it has
		// recorded a confirmed horizon of its own (seconds after it first
		// confirms; longer on a loaded machine): before that, prune rightly
		// refuses to judge any row, or judges by the last round's horizon,
		// which a transaction held open then may have pinned before every
		// row, so that a round deletes nothing.
		eventually(t, time.Minute, "a confirmed horizon recorded in this round", func() (bool, string) {
			h, found, err := state.LoadHorizon(ctx, conn, schema.DefaultTable, e.slot)
			return err == nil && found && (!hadPrev || h.LSN > prev.LSN), fmt.Sprintf("found %t at %s (last round's at %s), err %v", found, h.LSN, prev.LSN, err)
		})
		time.Sleep(time.Duration(rng.IntN(2500)) * time.Millisecond)
		p.kill()
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		close(stop)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d: writers: %v", round, err)
		}
		// The slot cannot move while no relay streams from it.
		var confirmed pglogrepl.LSN
		eventually(t, 30*time.Second, "slot inactive after the kill", func() (bool, string) {
			lsn, active := slotConfirmed(t, conn, e.slot)
			confirmed = lsn
			return !active, fmt.Sprintf("active %t", active)
		})

		before := tableIDs(t, conn) // open transactions' rows are not visible
		r := runCmd(t, e.command(ctx, "prune", "--older-than", "0s", "--batch", strconv.Itoa(1+rng.IntN(500))), time.Minute)
		if r.code != 0 {
			t.Fatalf("round %d: prune: exit %d\n%s%s", round, r.code, r.stdout, r.stderr)
		}
		after := tableIDs(t, conn)
		var gone []string
		for id := range before {
			if !after[id] {
				gone = append(gone, id)
			}
		}
		t.Logf("round %d: slot confirmed %s at the kill; prune: %s; %d rows deleted, %d left", round, confirmed,
			strings.TrimSpace(r.stdout[strings.LastIndex(strings.TrimSpace(r.stdout), "\n")+1:]), len(gone), len(after))
		deletions = append(deletions, deletion{ids: gone, confirmed: confirmed})
		for _, ws := range opens {
			for _, tx := range ws {
				if err := tx.Commit(ctx); err != nil {
					t.Fatalf("commit a held transaction: %v", err)
				}
				tx.Conn().Close(context.Background())
			}
		}
	}

	// Deliver everything, then judge every deleted row by its commit LSN.
	p := e.start()
	p.waitStreaming(time.Minute)
	c := e.consumer()
	commitLSN := map[string]pglogrepl.LSN{}
	mu.Lock()
	want := len(committed)
	mu.Unlock()
	deadline := time.Now().Add(time.Minute)
	for len(commitLSN) < want && time.Now().Before(deadline) {
		recs, _ := c.poll(ctx, 2*time.Second)
		for _, rec := range recs {
			pos := header(rec, "position")
			v, err := strconv.ParseUint(pos[:16], 16, 64)
			if err != nil {
				t.Fatalf("record %s: position %q: %v", rec.Key, pos, err)
			}
			commitLSN[string(rec.Key)] = pglogrepl.LSN(v)
		}
	}
	if len(commitLSN) < want {
		t.Fatalf("%d of %d committed rows delivered after the last restart", len(commitLSN), want)
	}
	total := 0
	for round, d := range deletions {
		total += len(d.ids)
		for _, id := range d.ids {
			lsn, ok := commitLSN[id]
			if !ok {
				t.Errorf("round %d: prune deleted %s, which was never delivered", round, id)
			} else if lsn >= d.confirmed {
				t.Errorf("round %d: prune deleted %s, committed at %s, at or past the slot's confirmed %s", round, id, lsn, d.confirmed)
			}
		}
	}
	if total == 0 {
		t.Errorf("prune deleted nothing in %d rounds; the test proves nothing", rounds)
	}
	t.Logf("%d committed rows, %d deleted by prune, none unconfirmed", want, total)
}

// deletion is what one round's prune deleted, and the slot's confirmed
// position then.
type deletion struct {
	ids       []string
	confirmed pglogrepl.LSN
}

// TestPruneJanitor runs the relay with --prune-older-than: confirmed old
// rows disappear and are counted, while rows the relay cannot confirm (the
// broker refuses them) stay, until the broker takes them.
func TestPruneJanitor(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	var refuse atomic.Bool
	e.refuseProduce(&refuse)

	p := e.startRun([]string{"--prune-older-than", "2s", "--prune-interval", "500ms"}, "OUTBOX_RELAY_STATUS_INTERVAL=200ms")
	p.waitStreaming(time.Minute)
	addr := p.metricsAddr(t)
	if v := value(scrape(t, addr), "outbox_relay_pruned_rows_total", nil); v != 0 {
		t.Fatalf("outbox_relay_pruned_rows_total at start = %v, want 0", v)
	}

	const old = 20
	for i := range old {
		if err := schema.Insert(ctx, conn, pruneMsg("janitor", fmt.Sprintf("old-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Delivered and confirmed, then older than 2 s: pruned.
	eventually(t, 30*time.Second, "confirmed old rows pruned", func() (bool, string) {
		n := len(tableIDs(t, conn))
		return n == 0, fmt.Sprintf("%d rows left", n)
	})
	if v := value(scrape(t, addr), "outbox_relay_pruned_rows_total", nil); v != old {
		t.Errorf("outbox_relay_pruned_rows_total = %v, want %d", v, old)
	}
	if v := value(scrape(t, addr), "outbox_relay_outbox_table_bytes", nil); v <= 0 {
		t.Errorf("outbox_relay_outbox_table_bytes = %v, want the table's size", v)
	}

	// The broker refuses: these rows grow old unconfirmed and must stay.
	refuse.Store(true)
	const held = 5
	for i := range held {
		if err := schema.Insert(ctx, conn, pruneMsg("janitor", fmt.Sprintf("held-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Second) // past the retention, ten janitor passes
	if n := len(tableIDs(t, conn)); n != held {
		t.Fatalf("with the broker refusing, %d rows left, want the %d unconfirmed ones\n%s", n, held, p.logText())
	}
	refuse.Store(false)
	eventually(t, 30*time.Second, "rows pruned once confirmed", func() (bool, string) {
		n := len(tableIDs(t, conn))
		return n == 0, fmt.Sprintf("%d rows left", n)
	})
	if v := value(scrape(t, addr), "outbox_relay_pruned_rows_total", nil); v != old+held {
		t.Errorf("outbox_relay_pruned_rows_total = %v, want %d", v, old+held)
	}
	if code := p.term(40 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
}

// TestPruneBesideWriters runs `outbox-relay prune` on a 1,000,000-row
// confirmed backlog while four writers insert single-row transactions: the
// prune and every insert succeed, the whole backlog and nothing else is
// deleted, and prune reports the rows it deleted. The writers' latency
// quantiles, alone and during the prune, are logged for the reader, never
// asserted: the benchmark is where timings are judged.
//
// It runs alone, not in parallel, so that the logged latencies are the
// prune's alone.
func TestPruneBesideWriters(t *testing.T) {
	if testing.Short() {
		t.Skip("measures against PostgreSQL; skipped by -short")
	}
	e := newEnv(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	const backlog = 1_000_000
	if _, err := conn.Exec(ctx, `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload, created_at)
		SELECT gen_random_uuid(), 'bench', 'a-' || i, 'e', '{"n": 1}', now() - interval '1 day' FROM generate_series(1, $1) i`, backlog); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE outbox"); err != nil {
		t.Fatal(err)
	}
	// No relay runs here: record a horizon as if the slot had confirmed it.
	h, err := state.TakeHorizon(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	h.ConfirmedLSN = h.LSN
	if err := state.SaveHorizon(ctx, conn, schema.DefaultTable, e.slot, h); err != nil {
		t.Fatal(err)
	}

	measure := func(d time.Duration, during func()) []time.Duration {
		stop := make(chan struct{})
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				c, err := pgx.Connect(ctx, e.dsn)
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close(context.Background())
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					start := time.Now()
					if err := schema.Insert(ctx, c, pruneMsg("bench", fmt.Sprintf("w%d-%d", w, i))); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					lat = append(lat, time.Since(start))
					mu.Unlock()
				}
			})
		}
		if during != nil {
			during()
		} else {
			time.Sleep(d)
		}
		close(stop)
		wg.Wait()
		return lat
	}
	quantiles := func(lat []time.Duration) string {
		if len(lat) == 0 {
			return "no inserts"
		}
		slices.Sort(lat)
		q := func(f float64) time.Duration { return lat[min(len(lat)-1, int(f*float64(len(lat))))] }
		return fmt.Sprintf("%d inserts, p50 %s, p99 %s, max %s", len(lat), q(0.50), q(0.99), lat[len(lat)-1])
	}

	alone := measure(5*time.Second, nil)
	var pruneOut string
	var pruneTook time.Duration
	with := measure(0, func() {
		start := time.Now()
		r := runCmd(t, e.command(ctx, "prune", "--older-than", "1h"), 2*time.Minute)
		pruneTook = time.Since(start)
		if r.code != 0 {
			t.Errorf("prune: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		pruneOut = strings.TrimSpace(r.stdout[strings.LastIndex(strings.TrimSpace(r.stdout), "\n")+1:])
	})
	t.Logf("writers alone (5 s):          %s", quantiles(alone))
	t.Logf("writers during prune (%s): %s", pruneTook.Round(time.Millisecond), quantiles(with))
	t.Logf("prune: %s", pruneOut)
	if len(with) == 0 {
		t.Error("no insert committed while prune ran")
	}
	if want := fmt.Sprintf("deleted %d rows", backlog); !strings.Contains(pruneOut, want) {
		t.Errorf("prune's last line %q does not say %q", pruneOut, want)
	}
	// The writers' rows are newer than --older-than: every one is left.
	var old, left int
	if err := conn.QueryRow(ctx, "SELECT count(*) FILTER (WHERE aggregate_type = 'bench' AND aggregate_id LIKE 'a-%'), count(*) FROM outbox").Scan(&old, &left); err != nil {
		t.Fatal(err)
	}
	if old != 0 {
		t.Errorf("%d rows of the backlog left after prune, want 0", old)
	}
	if want := len(alone) + len(with); left != want {
		t.Errorf("%d rows left after prune, want the %d the writers inserted", left, want)
	}
}

// TestHorizonLeastRole runs the relay as the least-privilege role without
// the state table's grant: it relays, warns once with the GRANT to run, and
// records horizons as soon as the grant is given.
func TestHorizonLeastRole(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	role := fmt.Sprintf("outbox_relay_h%d", rand.Uint32())
	ident := pgx.Identifier{role}.Sanitize()
	db := sqlOn(t, e.dsn, "SELECT current_database()")
	sqlOn(t, e.dsn, "CREATE ROLE "+ident+" LOGIN REPLICATION", "GRANT CONNECT ON DATABASE "+pgx.Identifier{db}.Sanitize()+" TO "+ident)
	t.Cleanup(func() { sqlOn(t, e.dsn, "DROP OWNED BY "+ident, "DROP ROLE "+ident) })
	u, err := url.Parse(e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)

	p := e.start("OUTBOX_RELAY_PG_DSN="+u.String(), "OUTBOX_RELAY_STATUS_INTERVAL=200ms")
	p.waitStreaming(30 * time.Second)
	insertEvents(t, e.dsn, "order", 1, 5)
	expectEvents(t, e.consumer(), p, 5)
	const warning = "cannot record the confirmed horizon"
	if !p.waitLogged(warning, 1, 30*time.Second) {
		t.Fatalf("no warning %q\n%s", warning, p.logText())
	}
	if text := p.logText(); !strings.Contains(text, "GRANT SELECT, INSERT, UPDATE ON "+`\"public\".\"outbox_relay_state\" TO `+`\"`+role+`\"`) {
		t.Errorf("the warning does not name the GRANT to run\n%s", text)
	}
	time.Sleep(3 * time.Second) // several more failed saves
	if n := p.logged(warning); n != 1 {
		t.Errorf("warned %d times, want once", n)
	}

	sqlOn(t, e.dsn, "GRANT SELECT, INSERT, UPDATE ON public.outbox_relay_state TO "+ident)
	if !p.waitLogged("recording the confirmed horizon again", 1, 30*time.Second) {
		t.Fatalf("no horizon recorded after the grant\n%s", p.logText())
	}
	if n := sqlOn(t, e.dsn, "SELECT count(*) FROM outbox_relay_state WHERE slot_name = '"+e.slot+"'"); n != "1" {
		t.Errorf("state rows of slot %s = %s, want 1", e.slot, n)
	}
	if code := p.term(30 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
}
