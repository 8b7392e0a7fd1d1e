package state_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/internal/state"
	"github.com/outbox-relay/outbox-relay/schema"
)

// insertRow writes one outbox row with the given aggregate ID through db.
func insertRow(t *testing.T, db schema.Execer, id string) {
	t.Helper()
	msg := schema.Message{AggregateType: "order", AggregateID: id, EventType: "created", Payload: []byte(`{}`)}
	if err := schema.Insert(t.Context(), db, msg); err != nil {
		t.Fatalf("insert %s: %v", id, err)
	}
}

// covered returns the aggregate IDs of the rows CommittedIn selects for
// snapshot, in order.
func covered(t *testing.T, conn *pgx.Conn, snapshot string) []string {
	t.Helper()
	tbl := schema.DefaultTable
	rows, err := conn.Query(t.Context(),
		"SELECT aggregate_id FROM "+tbl.Quoted()+" WHERE "+state.CommittedIn(tbl, "$1")+" ORDER BY aggregate_id", snapshot)
	if err != nil {
		t.Fatalf("select rows committed in %s: %v", snapshot, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("select rows committed in %s: %v", snapshot, err)
	}
	return ids
}

// begin opens a transaction on a connection of its own that already has a
// transaction ID, so that snapshots list it as running.
func begin(t *testing.T, dsn string) pgx.Tx {
	t.Helper()
	tx, err := connect(t, dsn).Begin(t.Context())
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if _, err := tx.Exec(t.Context(), "SELECT pg_current_xact_id()"); err != nil {
		t.Fatalf("assign a transaction ID: %v", err)
	}
	return tx
}

func commit(t *testing.T, tx pgx.Tx) {
	t.Helper()
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// TestCommittedIn checks which rows a horizon covers: only those whose
// transaction finished before the snapshot and before every transaction
// running at it began, whatever commits afterwards.
func TestCommittedIn(t *testing.T) {
	dsn, conn := newOutbox(t)
	ctx := t.Context()

	insertRow(t, conn, "a-before")

	// Running when S is taken, then committed: not covered.
	open := begin(t, dsn)
	insertRow(t, open, "b-open-at-s")

	// A subtransaction of a transaction running at S: its xmin is the
	// subtransaction's ID, which S does not list. Not covered either.
	sub := begin(t, dsn)
	if _, err := sub.Exec(ctx, "SAVEPOINT sp"); err != nil {
		t.Fatal(err)
	}
	insertRow(t, sub, "c-subxact-open-at-s")
	if _, err := sub.Exec(ctx, "RELEASE SAVEPOINT sp"); err != nil {
		t.Fatal(err)
	}

	// Begun after the oldest running one, committed before S: it is
	// confirmed once the horizon is, but CommittedIn leaves it to the next
	// horizon (S cannot tell it from a subtransaction).
	insertRow(t, conn, "d-after-open-committed-before-s")

	rolledBack := begin(t, dsn)
	insertRow(t, rolledBack, "e-rolled-back")

	h, err := state.TakeHorizon(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	commit(t, open)
	commit(t, sub)
	if err := rolledBack.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	insertRow(t, conn, "f-after-s")

	if diff := cmp.Diff([]string{"a-before"}, covered(t, conn, h.Snapshot)); diff != "" {
		t.Errorf("rows committed in %s mismatch (-want +got):\n%s", h.Snapshot, diff)
	}

	// The reason for the narrower rule: pg_visible_in_snapshot takes the
	// subtransaction's row for finished.
	var visible bool
	if err := conn.QueryRow(ctx, `
		SELECT pg_visible_in_snapshot(x.xmin::text::xid8, $1::pg_snapshot)
		FROM (SELECT xmin FROM outbox WHERE aggregate_id = 'c-subxact-open-at-s') x`, h.Snapshot).Scan(&visible); err != nil {
		t.Fatal(err)
	}
	if !visible {
		t.Logf("pg_visible_in_snapshot no longer counts the subtransaction's row as finished in %s", h.Snapshot)
	}

	// A later horizon, with nothing running, covers every committed row.
	later, err := state.TakeHorizon(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a-before", "b-open-at-s", "c-subxact-open-at-s", "d-after-open-committed-before-s", "f-after-s"}
	if diff := cmp.Diff(want, covered(t, conn, later.Snapshot)); diff != "" {
		t.Errorf("rows committed in %s mismatch (-want +got):\n%s", later.Snapshot, diff)
	}

	// Freezing keeps the raw xmin: frozen rows are still judged by it.
	if _, err := conn.Exec(ctx, "VACUUM (FREEZE) outbox"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a-before"}, covered(t, conn, h.Snapshot)); diff != "" {
		t.Errorf("after VACUUM FREEZE, rows committed in %s mismatch (-want +got):\n%s", h.Snapshot, diff)
	}
	if diff := cmp.Diff(want, covered(t, conn, later.Snapshot)); diff != "" {
		t.Errorf("after VACUUM FREEZE, rows committed in %s mismatch (-want +got):\n%s", later.Snapshot, diff)
	}
}

// TestCommittedInEpochs checks the 32-to-64-bit conversion of xmin against
// synthetic snapshots in other epochs and at the limits of the signed
// distance.
func TestCommittedInEpochs(t *testing.T) {
	_, conn := newOutbox(t)
	insertRow(t, conn, "row")
	var x int64
	if err := conn.QueryRow(t.Context(), "SELECT xmin::text::bigint FROM outbox").Scan(&x); err != nil {
		t.Fatal(err)
	}
	const epoch = int64(1) << 32
	tests := []struct {
		name    string
		xmin    int64 // the snapshot's, and its xmax
		covered bool
	}{
		{"just after, epoch 0", x + 1, true},
		{"equal, epoch 0", x, false},
		{"just before, epoch 0", x - 1, false},
		{"just after, epoch 1", epoch + x + 1, true},
		{"just before, epoch 1", epoch + x - 1, false},
		{"just after, epoch 5", 5*epoch + x + 1, true},
		{"2^31 - 1 after, epoch 3", 3*epoch + x + 1<<31 - 1, true},
		// Further than 2^31 the row reads as a future one: never covered
		// (PostgreSQL freezes long before a live row gets that old).
		{"2^31 + 1 after, epoch 3", 3*epoch + x + 1<<31 + 1, false},
		{"2^31 - 1 before, epoch 3", 3*epoch + x - (1<<31 - 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := fmt.Sprintf("%d:%d:", tt.xmin, tt.xmin)
			got := len(covered(t, conn, snap)) == 1
			if got != tt.covered {
				t.Errorf("row of xmin %d committed in %s = %t, want %t", x, snap, got, tt.covered)
			}
		})
	}
}

func TestHorizonSaveLoad(t *testing.T) {
	_, conn := newOutbox(t)
	ctx := t.Context()
	tbl := schema.DefaultTable
	const slot = "outbox_relay"

	if _, ok, err := state.LoadHorizon(ctx, conn, tbl, slot); err != nil || ok {
		t.Fatalf("LoadHorizon before any save = %t, %v; want false, nil", ok, err)
	}

	h, err := state.TakeHorizon(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	var cur pglogrepl.LSN
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()").Scan(&cur); err != nil {
		t.Fatal(err)
	}
	if h.LSN == 0 || h.LSN > cur || h.Snapshot == "" || time.Since(h.Time) > time.Minute || time.Until(h.Time) > time.Second {
		t.Fatalf("TakeHorizon = %+v; want a snapshot, an LSN at most %s and the time now", h, cur)
	}
	h.ConfirmedLSN = h.LSN + 8
	if err := state.SaveHorizon(ctx, conn, tbl, slot, h); err != nil {
		t.Fatal(err)
	}
	got, ok, err := state.LoadHorizon(ctx, conn, tbl, slot)
	if err != nil || !ok {
		t.Fatalf("LoadHorizon = %t, %v", ok, err)
	}
	if diff := cmp.Diff(h, got, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("LoadHorizon mismatch (-saved +loaded):\n%s", diff)
	}

	// An older horizon (a second relay's) changes nothing; a newer one wins.
	older := h
	older.LSN, older.Snapshot = h.LSN-1, "1:1:"
	if err := state.SaveHorizon(ctx, conn, tbl, slot, older); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := state.LoadHorizon(ctx, conn, tbl, slot); got.LSN != h.LSN {
		t.Errorf("after saving an older horizon, LoadHorizon.LSN = %s, want %s", got.LSN, h.LSN)
	}
	newer, err := state.TakeHorizon(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	newer.ConfirmedLSN = newer.LSN
	if err := state.SaveHorizon(ctx, conn, tbl, slot, newer); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := state.LoadHorizon(ctx, conn, tbl, slot); got.Snapshot != newer.Snapshot || got.LSN != newer.LSN {
		t.Errorf("after saving a newer horizon, LoadHorizon = %+v, want %+v", got, newer)
	}
	// Slots do not share a row.
	if _, ok, _ := state.LoadHorizon(ctx, conn, tbl, "other"); ok {
		t.Errorf("LoadHorizon of another slot found one")
	}
}

func TestHorizonWithoutStateTable(t *testing.T) {
	_, conn := newOutbox(t)
	ctx := t.Context()
	if _, err := conn.Exec(ctx, "DROP TABLE "+schema.DefaultTable.StateTable().Quoted()); err != nil {
		t.Fatal(err)
	}
	h, err := state.TakeHorizon(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	var pgErr *pgconn.PgError
	err = state.SaveHorizon(ctx, conn, schema.DefaultTable, "outbox_relay", h)
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Errorf("SaveHorizon without the state table = %v, want undefined_table (42P01)", err)
	}
	_, _, err = state.LoadHorizon(ctx, conn, schema.DefaultTable, "outbox_relay")
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Errorf("LoadHorizon without the state table = %v, want undefined_table (42P01)", err)
	}
}
