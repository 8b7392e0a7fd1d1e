package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/internal/state"
	"github.com/outbox-relay/outbox-relay/schema"
)

// TestSlotInvalidatedRecover lets the server invalidate the slot (a small
// max_slot_wal_keep_size, WAL written and checkpointed while the relay is
// stopped and rows wait in it), then: under --on-slot-lost=fail the relay
// exits non-zero with one line saying what was lost and the fix; under
// recover it republishes every committed row, while a writer goes on
// inserting, and streams on: every row arrives, duplicates are counted, and
// each aggregate's republished rows come before its streamed ones. With a
// confirmed horizon recorded, the rows it covers are not republished.
// "killed" kills the first recovering relay (kill -9) while it republishes
// (the broker refusing writes): no relay streams the slot it left behind,
// and the next one under recover drops it and recovers again, losing
// nothing.
func TestSlotInvalidatedRecover(t *testing.T) {
	t.Parallel()
	t.Run("no horizon", func(t *testing.T) { testSlotInvalidatedRecover(t, false, false) })
	t.Run("horizon", func(t *testing.T) { testSlotInvalidatedRecover(t, true, false) })
	t.Run("killed", func(t *testing.T) { testSlotInvalidatedRecover(t, false, true) })
}

func testSlotInvalidatedRecover(t *testing.T, horizon, killed bool) {
	cluster, err := pgtest.Start(t.Context(), pgtest.Options{Logf: t.Logf, Settings: map[string]string{"max_slot_wal_keep_size": "16MB"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cluster.Stop(); err != nil {
			t.Error(err)
		}
	})
	e := newEnvOn(t, cluster.NewDatabase(t))
	insert := func(ctx context.Context, conn *pgx.Conn, batch string, txns, perTxn int) ([]string, error) {
		var ids []string
		for i := range txns {
			msgs := make([]schema.Message, perTxn)
			for j := range msgs {
				id := fmt.Sprintf("%s-%d-%d", batch, i, j)
				msgs[j] = schema.Message{ID: uuidFor(id), AggregateType: "order", AggregateID: fmt.Sprintf("o%d", (i+j)%5), EventType: batch, Payload: []byte(`{}`)}
				ids = append(ids, msgs[j].ID)
			}
			if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return schema.Insert(ctx, tx, msgs...) }); err != nil {
				return ids, err
			}
		}
		return ids, nil
	}
	var want []string
	batch := func(name string, txns, perTxn int) {
		e.query(t, time.Minute, func(ctx context.Context, conn *pgx.Conn) error {
			ids, err := insert(ctx, conn, name, txns, perTxn)
			want = append(want, ids...)
			return err
		})
	}

	// Delivered and confirmed, then stopped.
	p := e.start()
	p.waitStreaming(30 * time.Second)
	batch("confirmed", 10, 5)
	e.catchUp(t, time.Now(), 30*time.Second)
	if horizon {
		var h state.Horizon
		e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
			var err error
			h, err = state.TakeHorizon(ctx, conn)
			return err
		})
		e.catchUp(t, time.Now(), 30*time.Second)
		h.ConfirmedLSN = e.slotState(t).confirmed
		if h.ConfirmedLSN < h.LSN {
			t.Fatalf("slot confirmed %s, short of the horizon's %s", h.ConfirmedLSN, h.LSN)
		}
		e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
			return state.SaveHorizon(ctx, conn, schema.DefaultTable, e.slot, h)
		})
	}
	if code := p.term(30 * time.Second); code != 0 {
		t.Fatalf("relay exit code %d after SIGTERM\n%s", code, p.logText())
	}
	if !horizon {
		// The running relay records horizons of its own.
		e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "DELETE FROM "+schema.DefaultTable.StateTable().Quoted())
			return err
		})
	}

	// Rows the slot holds unconfirmed, then WAL until the server gives up
	// the slot.
	batch("unconfirmed", 10, 5)
	lost := false
	e.query(t, 2*time.Minute, func(ctx context.Context, conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS filler (x text)"); err != nil {
			return err
		}
		for !lost {
			if _, err := conn.Exec(ctx, "INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 4000)"); err != nil {
				return err
			}
			if _, err := conn.Exec(ctx, "SELECT pg_switch_wal()"); err != nil {
				return err
			}
			if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
				return err
			}
			var status string
			if err := conn.QueryRow(ctx, "SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1", e.slot).Scan(&status); err != nil {
				return err
			}
			lost = status == "lost"
		}
		return nil
	})

	// fail: a non-zero exit, one line with what was lost and the fix.
	p = e.start()
	if code := p.waitExit(t, 30*time.Second, "start on an invalidated slot"); code == 0 {
		t.Errorf("exit code 0 on an invalidated slot, want non-zero\n%s", p.logText())
	}
	logs := strings.Split(strings.TrimSpace(p.logText()), "\n")
	last := logs[len(logs)-1]
	for _, w := range []string{`slot "` + e.slot + `" was invalidated`, "events committed after its last confirmed position", "fix: restart once with --on-slot-lost=recover"} {
		if !strings.Contains(last, w) {
			t.Errorf("last line of stderr lacks %q:\n%s", w, last)
		}
	}

	t.Logf("under fail: %s", last)

	if killed {
		var refuse atomic.Bool
		refuse.Store(true)
		e.refuseProduce(&refuse)
		p = e.startRun(nil, "OUTBOX_RELAY_ON_SLOT_LOST=recover")
		eventually(t, time.Minute, "the recovering relay created the new slot", func() (bool, string) {
			return strings.Contains(p.logText(), "slot created with an exported snapshot"), p.logText()
		})
		// A recovery held up keeps the process alive for a liveness
		// probe, not ready, saying why, and its metrics served.
		addr := p.metricsAddr(t)
		if code, body := get(addr, "/healthz"); code != http.StatusOK || !strings.Contains(body, "recovering") {
			t.Errorf("/healthz during the recovery = %d %q, want 200 saying it recovers", code, body)
		}
		if code, body := get(addr, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "recovering") {
			t.Errorf("/readyz during the recovery = %d %q, want 503 saying it recovers", code, body)
		}
		mfs := scrape(t, addr)
		if v := value(mfs, "outbox_relay_build_info", nil); v != 1 {
			t.Errorf("outbox_relay_build_info during the recovery = %v, want 1", v)
		}
		// What the alert on no instance streaming reads.
		if _, ok := mfs["outbox_relay_streaming"]; !ok || value(mfs, "outbox_relay_streaming", nil) != 0 {
			t.Errorf("outbox_relay_streaming during the recovery: present %v, value %v; want 0", ok, value(mfs, "outbox_relay_streaming", nil))
		}
		p.kill()
		var began, slotLeft bool
		e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
			_, found, err := state.RecoveryStarted(ctx, conn, schema.DefaultTable, e.slot)
			began = found
			if err != nil {
				return err
			}
			return conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", e.slot).Scan(&slotLeft)
		})
		if !began || !slotLeft {
			t.Fatalf("after the recovering relay was killed: recovery recorded as begun %v, new slot left behind %v; want both\n%s", began, slotLeft, p.logText())
		}
		// The slot left behind must not be streamed.
		p = e.start()
		code := p.waitExit(t, 30*time.Second, "start under fail on the slot of an interrupted recovery")
		logs := strings.Split(strings.TrimSpace(p.logText()), "\n")
		if code == 0 || !strings.Contains(logs[len(logs)-1], "a recovery began at") {
			t.Fatalf("relay under fail on the slot of an interrupted recovery: exit code %d, last line %q; want non-zero, saying a recovery began", code, logs[len(logs)-1])
		}
		t.Logf("under fail, after the killed recovery: %s", logs[len(logs)-1])
		refuse.Store(false)
	}

	// recover, with a writer inserting throughout.
	wctx, stopWriter := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var written []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := pgx.Connect(wctx, e.dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		for i := 0; wctx.Err() == nil; i++ {
			ids, err := insert(wctx, conn, fmt.Sprintf("during%d", i), 1, 2)
			if err != nil {
				if wctx.Err() == nil {
					t.Error(err)
				}
				return
			}
			written = append(written, ids...)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	p = e.startRun(nil, "OUTBOX_RELAY_ON_SLOT_LOST=recover")
	p.waitStreaming(time.Minute)
	time.Sleep(500 * time.Millisecond)
	stopWriter()
	wg.Wait()
	batch("after", 5, 4)
	want = append(want, written...)

	c := e.consumer()
	seen := map[string]int{}
	replayedAfterStreamed := map[string]bool{}
	streamedSeen := map[string]bool{}
	deadline := time.Now().Add(time.Minute)
	missing := func() int {
		n := 0
		for _, id := range want {
			if seen[id] == 0 {
				n++
			}
		}
		return n
	}
	for missing() > 0 && time.Now().Before(deadline) {
		recs, err := c.poll(t.Context(), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			h := headerMap(r)
			seen[h["id"]]++
			key := string(r.Key)
			if h["replayed"] == "true" {
				if streamedSeen[key] && h["event_type"] != "confirmed" {
					replayedAfterStreamed[key] = true
				}
			} else if h["event_type"] != "confirmed" {
				streamedSeen[key] = true
			}
		}
	}
	if n := missing(); n > 0 {
		t.Fatalf("%d of %d committed rows never arrived after recovery\n%s", n, len(want), p.logText())
	}
	dups := 0
	for _, n := range seen {
		dups += n - 1
	}
	for key := range replayedAfterStreamed {
		t.Errorf("aggregate %s: a republished row arrived after a row streamed from the new slot", key)
	}
	republished := metricLines(t, p, "outbox_relay_slot_recovery_republished_events_total", "outbox_relay_slot_recoveries_total")
	if !strings.Contains(republished, "outbox_relay_slot_recoveries_total=1") || strings.Contains(republished, "republished_events_total=0") {
		t.Errorf("recovery metrics: %s, want one recovery and some republished rows", republished)
	}
	logText := p.logText()
	wantLogs := []string{"dropped the invalidated slot", "slot created with an exported snapshot", "no confirmed horizon is recorded", "republished the unconfirmed rows"}
	if killed {
		wantLogs[0] = "an earlier recovery of the slot began and did not end"
	}
	if horizon {
		wantLogs[2] = "republishing the rows the confirmed horizon does not cover"
		// The 50 rows the horizon covers are not sent again.
		for id, n := range seen {
			if n > 1 && slices.Contains(want[:50], id) {
				t.Errorf("row %s, covered by the confirmed horizon, arrived %d times", id, n)
			}
		}
	}
	for _, w := range wantLogs {
		if !strings.Contains(logText, w) {
			t.Errorf("relay log lacks %q\n%s", w, logText)
		}
	}
	for _, l := range strings.Split(logText, "\n") {
		if strings.Contains(l, `"component":"recovery"`) {
			t.Logf("recovery: %s", l)
		}
	}
	t.Logf("every one of %d committed rows arrived (%d written during recovery); %d duplicates; %s", len(want), len(written), dups, republished)
	if code := p.term(30 * time.Second); code != 0 {
		t.Errorf("relay exit code %d after SIGTERM\n%s", code, p.logText())
	}
}

// uuidFor returns a UUID derived from name, so that a test knows its rows'
// IDs before writing them.
func uuidFor(name string) string { return uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)).String() }
