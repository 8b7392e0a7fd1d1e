package cdc_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
)

// recreate replaces the outbox table by a new one of the same shape in one
// transaction, so that no read sees it missing.
const recreate = `ALTER TABLE outbox RENAME TO outbox_old;
	CREATE TABLE outbox (LIKE outbox_old INCLUDING ALL);
	DROP TABLE outbox_old`

// TestMonitorWatchesTable changes the outbox table under a running
// Monitor: dropping it, creating it again (published or not), taking it out
// of the publication or the publication's inserts must stop Run with
// ErrTableChanged and the replay to run, since pgoutput sends nothing of
// such rows; changes that keep the table's inserts published must not.
func TestMonitorWatchesTable(t *testing.T) {
	for _, tt := range []struct {
		name   string
		allPub bool     // the publication is FOR ALL TABLES
		change []string // run in order, each in a transaction of its own
		setup  bool     // run setup again after the change
		stops  bool
		saying string
	}{
		{name: "dropped", change: []string{`DROP TABLE outbox`}, stops: true, saying: "was dropped"},
		{name: "created again", change: []string{recreate}, stops: true, saying: "was dropped and created again"},
		{name: "created again and published", change: []string{recreate}, setup: true, stops: true, saying: "was dropped and created again"},
		{name: "unpublished", change: []string{`ALTER PUBLICATION outbox_relay DROP TABLE outbox`}, stops: true, saying: `is no longer in publication "outbox_relay"`},
		{name: "inserts unpublished", change: []string{`ALTER PUBLICATION outbox_relay SET (publish = 'update, delete')`}, stops: true, saying: "it no longer publishes inserts"},
		{name: "altered", change: []string{`ALTER TABLE outbox ADD COLUMN note text`, `TRUNCATE outbox`, `VACUUM FULL outbox`}},
		{name: "created again under all tables", allPub: true, change: []string{recreate}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "monitor_" + strings.ReplaceAll(tt.name, " ", "_")}
			if tt.allPub {
				cfg.Publication = "all_tables"
				c, err := pgx.Connect(t.Context(), cfg.DSN)
				if err != nil {
					t.Fatal(err)
				}
				exec(t, c, `CREATE PUBLICATION all_tables FOR ALL TABLES`)
				c.Close(t.Context())
			}
			conn := setupDB(t, cfg)
			mo, err := cdc.NewMonitor(cfg, 50*time.Millisecond, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- mo.Run(t.Context()) }()
			deadline := time.Now().Add(10 * time.Second)
			for !mo.Healthy() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !mo.Healthy() {
				t.Fatal("the monitor did not read the slot within 10 s")
			}
			for _, sql := range tt.change {
				exec(t, conn, sql)
			}
			if tt.setup {
				if err := cdc.Setup(t.Context(), conn, cfg, nil); err != nil {
					t.Fatalf("Setup() = %v", err)
				}
			}
			select {
			case err := <-done:
				if !tt.stops {
					t.Fatalf("Run() = %v after a change that keeps the table's inserts published, want it to go on", err)
				}
				if !errors.Is(err, cdc.ErrTableChanged) || !strings.Contains(err.Error(), tt.saying) || !strings.Contains(err.Error(), "outbox-relay replay --since ") {
					t.Errorf("Run() = %v, want ErrTableChanged saying %q and the replay to run", err, tt.saying)
				}
			case <-time.After(2 * time.Second):
				if tt.stops {
					t.Fatal("Run goes on 2 s after the change, want it stopped")
				}
				if !mo.Healthy() {
					t.Error("the monitor stopped reading the slot after the change")
				}
			}
		})
	}
}
