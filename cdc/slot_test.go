package cdc_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
)

// TestRunReportsInvalidatedSlot lets a slot fall further behind than
// max_slot_wal_keep_size allows, so that PostgreSQL invalidates it; the
// stream must refuse it with the recovery in its message.
func TestRunReportsInvalidatedSlot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped by -short")
	}
	pg, err := pgtest.Start(t.Context(), pgtest.Options{Settings: map[string]string{
		"max_slot_wal_keep_size": "16MB",
		"max_wal_size":           "32MB",
		"min_wal_size":           "32MB",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	cfg := cdc.Config{DSN: pg.DSN(""), Slot: "lost_test"}
	conn := setupDB(t, cfg)
	exec(t, conn, `CREATE TABLE filler (v text)`)
	var s cdc.Slot
	for i := 0; i < 20; i++ {
		exec(t, conn, `INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000)`)
		exec(t, conn, `SELECT pg_switch_wal()`)
		exec(t, conn, `CHECKPOINT`)
		if s, err = cdc.ReadSlot(t.Context(), conn, cfg.Slot); err != nil {
			t.Fatal(err)
		}
		if s.WALStatus == "lost" {
			break
		}
	}
	if s.WALStatus != "lost" {
		t.Fatalf("slot wal_status = %q after writing, want lost", s.WALStatus)
	}
	st, err := cdc.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	err = st.Run(ctx, nil)
	if !errors.Is(err, cdc.ErrSlotInvalidated) || !strings.Contains(err.Error(), "cannot be relayed") {
		t.Errorf("Run() = %v, want ErrSlotInvalidated saying what cannot be relayed", err)
	}
}

// TestRunNeedsReplicationPrivilege runs the stream as a role without
// REPLICATION.
func TestRunNeedsReplicationPrivilege(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "norep_test"}
	conn := setupDB(t, cfg)
	exec(t, conn, `DO $$ BEGIN CREATE ROLE norep LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`)
	exec(t, conn, `GRANT SELECT ON outbox TO norep`)
	pcfg, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DSN = strings.Replace(cfg.DSN, "postgres://postgres@", "postgres://norep@", 1)
	if !strings.Contains(cfg.DSN, "norep@") {
		t.Fatalf("cannot derive a DSN for role norep from %s (user %s)", cfg.DSN, pcfg.User)
	}
	st, err := cdc.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	err = st.Run(ctx, nil)
	if err == nil || !strings.Contains(err.Error(), "REPLICATION") {
		t.Errorf("Run() = %v, want an error naming the REPLICATION attribute", err)
	}
}
